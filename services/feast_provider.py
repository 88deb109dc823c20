"""Reads of a Feast online store through its provider, bypassing `get_online_features`.

Depends on `feast==0.67.0`: `FeatureStore._get_provider()` is private, and the provider's
`online_read` takes and returns Feast's value protos. `get_online_features` spends
milliseconds of Python per call (registry lookups, response assembly); a request reads two or
three views of one user, so the service resolves its views once and converts protos itself.
`tests/services/test_online.py` keeps these reads equal to `get_online_features`: rerun it on any
Feast upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis.backoff import NoBackoff
from redis.retry import Retry

READ_CHUNK = 10_000  # keys per read: below SQLite's bound on query parameters

Row = dict[str, object]


def _value(proto: ValueProto) -> object:
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(proto, kind)
    return tuple(value.val) if kind.endswith("_list_val") else value


def _key(join_key: str, entity_id: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=int(entity_id))])


class ProviderAccess:
    """The online rows of a fixed set of feature views, keyed by one int64 join key each."""

    def __init__(self, store, views: Iterable[str]) -> None:  # store: feast.FeatureStore
        self._provider = store._get_provider()
        self._config = store.config
        self.views = {name: store.get_feature_view(name) for name in views}

    def read(self, view: str, join_key: str, ids: list[int]) -> list[Row | None]:
        """One row per id, in order (None: the store holds no row for it)."""
        rows: list[Row | None] = []
        for start in range(0, len(ids), READ_CHUNK):
            keys = [_key(join_key, i) for i in ids[start:start + READ_CHUNK]]
            for _, values in self._provider.online_read(self._config, self.views[view], keys):
                rows.append(None if values is None else {n: _value(v) for n, v in values.items()})
        return rows


def limit_waits(store, timeout_s: float) -> None:  # store: feast.FeatureStore
    """Bound every wait on the store's online store: SQLite's wait for a lock, Redis's connect and
    socket reads; past it the call fails (a 503 naming the online store), it does not hang."""
    config = store.config.online_store
    if config.type == "sqlite":
        connection = store._get_provider().online_store._get_conn(store.config)
        connection.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    elif config.type == "redis":
        if "socket_timeout=" not in config.connection_string:
            config.connection_string += (f",socket_timeout={timeout_s:g}"
                                         f",socket_connect_timeout={timeout_s:g}")
        # redis-py retries a timed-out command 3 times with backoffs of up to 10 s, so a Redis that
        # stopped answering held a read far past the timeout: one immediate retry, on a dropped
        # connection only (a pooled connection Redis closed meanwhile).
        client = store._get_provider().online_store._get_client(config)
        client.set_retry(Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
