"""Feast's Redis online writes, monotonic per entity in one atomic step.

Feast 0.67's `RedisOnlineStore.online_write_batch` reads every entity's timestamp, then writes the
rows that are newer: a writer landing between the two (the service appending to a user's history)
has its newer value replaced by an older one. `guard` gives a store's Redis online store a write
that compares and sets each row in one Lua script instead (Redis runs a script atomically): a row
older than the stored one is skipped. One stamped the same replaces it, as in the SQLite store: a
static row (stamped 1970) then takes what a rebuild of its table wrote. The service's own writes
(`services.online_rows`) watch the same hash, so either order of the two keeps the newer value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import MethodType
from typing import Any

from feast import utils
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from google.protobuf.timestamp_pb2 import Timestamp
from redis.cluster import RedisCluster

# KEYS[1]: the entity's hash. ARGV[1]: the view's timestamp field; ARGV[2], ARGV[3]: the row's
# seconds and nanos; ARGV[4...]: field, value pairs to set (the timestamp field among them).
# The stored timestamp is a serialized google.protobuf.Timestamp (seconds: tag 8, nanos: tag 16).
NEWER_ONLY = """
local function varint(s, i)
  local value, scale = 0, 1
  while true do
    local byte = string.byte(s, i)
    i = i + 1
    value = value + (byte % 128) * scale
    if byte < 128 then return value, i end
    scale = scale * 128
  end
end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local seconds, nanos, i = 0, 0, 1
  while i <= #stored do
    local tag, value
    tag, i = varint(stored, i)
    value, i = varint(stored, i)
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  local new_seconds, new_nanos = tonumber(ARGV[2]), tonumber(ARGV[3])
  if new_seconds < seconds or (new_seconds == seconds and new_nanos < nanos) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
return 1
"""


def guard(store) -> None:  # store: feast.FeatureStore
    """Make the store's Redis online writes (materialization among them) monotonic and atomic."""
    online_store = store._get_provider().online_store
    online_store.online_write_batch = MethodType(_newer_only_write_batch, online_store)


def _newer_only_write_batch(self, config, table, data: list[tuple[Any, dict, datetime, Any]],
                            progress: Callable[[int], Any] | None) -> None:
    client = self._get_client(config.online_store)
    script = client.register_script(NEWER_ONLY)
    view = _versioned_fv_name(table, config)
    ts_field = f"_ts:{view}"
    ttl = config.online_store.key_ttl_seconds
    # A cluster pipeline refuses scripts: there, one call per row.
    sink = client if isinstance(client, RedisCluster) else client.pipeline(transaction=False)
    for entity_key, values, timestamp, _ in data:
        key = _redis_key(config.project, entity_key,
                         entity_key_serialization_version=config.entity_key_serialization_version)
        stamp = Timestamp()
        stamp.FromDatetime(utils.make_tzaware(timestamp))
        fields = [ts_field, stamp.SerializeToString()]
        for name, value in values.items():
            fields += [_mmh3(f"{view}:{name}"), value.SerializeToString()]
        script(keys=[key], args=[ts_field, stamp.seconds, stamp.nanos, *fields], client=sink)
        if ttl:
            sink.expire(name=key, time=ttl)
    if sink is not client:
        with sink:
            sink.execute()
    if progress:
        progress(len(data))
