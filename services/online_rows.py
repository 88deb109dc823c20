"""Atomic read-modify-writes of one online row, across threads and processes, never going backwards.

SQLite (in WAL mode): a connection per thread; each write is one `BEGIN IMMEDIATE` transaction (the
database's write lock orders writers of every process) through Feast's own SQLite read and write. Redis: one
WATCH/MULTI/EXEC transaction on the entity's hash (Feast's key and field hashing), retried when
another writer changed the hash first. Either way a value stamped older than the stored one is
refused, as Feast's materialization refuses it (Redis natively; SQLite by the trigger
`feature_repo.store.monotonic_online_store` installs). A write may carry its id (the event log's
seq): the row then remembers the last `APPLIED_KEPT` ids applied to it, in the same transaction
(SQLite: the table `APPLIED_TABLE`; Redis: a field of the entity's hash), and the same id is never
applied twice, even when a retry races the first attempt. Depends on `feast==0.67.0` internals,
like `services.feast_provider`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from feast import FeatureView
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry

from services.feast_provider import Row, _key, _value

SQLITE_BUSY_TIMEOUT_MS = 30_000
APPLIED_TABLE = "twotower_applied_writes"  # (view, entity key, write id) of the writes applied
APPLIED_KEPT = 256  # write ids remembered per row: a retry comes long before 256 newer writes

# (current row or None, its timestamp or None) -> (new values, their timestamp), or None: no write
Change = Callable[[Row | None, datetime | None], tuple[dict[str, ValueProto], datetime] | None]


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class OnlineRows:
    """`update(view, join_key, id, change)`: one atomic, monotonic write of a row."""

    def __init__(self, store, views: Mapping[str, FeatureView]) -> None:  # store: feast.FeatureStore
        """`views` by name, resolved once: a registry read per write could miss a view while a
        materialization in the same process rewrites the registry's cached copy."""
        self._config = store.config
        self._views = dict(views)
        self._store = store
        kind = store.config.online_store.type
        self._update = self._sqlite if kind == "sqlite" else self._redis
        self._local = threading.local()
        self._retry_set = None  # the Redis client whose retries this bounded
        if kind == "sqlite":
            # WAL (kept by the file): readers never wait on a writer, and a commit appends to the
            # WAL instead of rewriting a rollback journal.
            conn = SqliteOnlineStore()._get_conn(self._config)
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.close()

    def update(self, view: str, join_key: str, entity_id: int, change: Change, *,
               write_id: int | None = None) -> bool:
        """Apply `change` to the current row atomically; False when nothing was written (the
        change declined, its timestamp is older than the stored row's, or `write_id` was applied
        to the row already)."""
        return self._update(self._views[view], _key(join_key, entity_id), change, write_id)

    @staticmethod
    def _decide(change: Change, row: Row | None, ts: datetime | None
                ) -> tuple[dict[str, ValueProto], datetime] | None:
        out = change(row, ts)
        if out is None or (ts is not None and _aware(out[1]) < ts):  # type: ignore[operator]
            return None
        return out

    def _sqlite(self, fv, key, change: Change, write_id: int | None) -> bool:
        online = getattr(self._local, "sqlite", None)
        if online is None:  # one connection per thread: Feast's shared one is not thread-safe
            online = self._local.sqlite = SqliteOnlineStore()
            conn = online._get_conn(self._config)
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # Every write is durable in the event log first (and the tables it feeds rebuild the
            # online store): the online store's commits need not wait for the disk too.
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (view TEXT, entity_key BLOB, "
                         "write_id INTEGER, PRIMARY KEY (view, entity_key, write_id))")
        conn = online._get_conn(self._config)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if write_id is not None and not _sqlite_first(conn, fv.name, key, write_id):
                conn.rollback()
                return False
            ((ts, values),) = online.online_read(self._config, fv, [key])
            row = None if values is None else {n: _value(v) for n, v in values.items()}
            out = self._decide(change, row, _aware(ts))
            if out is None:
                conn.rollback()
                return False
            online.online_write_batch(self._config, fv, [(key, out[0], out[1], out[1])], None)
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return True  # online_write_batch committed, the write's id with it

    def _redis(self, fv, key, change: Change, write_id: int | None) -> bool:
        client = self._store._get_provider().online_store._get_client(self._config.online_store)
        if client is not self._retry_set:
            # A write holds the service's write lock: an unreachable server fails it within two
            # socket timeouts (redis-py's default backs off through three retries, seconds more).
            client.set_retry(Retry(NoBackoff(), 1))
            self._retry_set = client
        name = _versioned_fv_name(fv, self._config)
        redis_key = _redis_key(self._config.project, key,
                               entity_key_serialization_version=self._config.entity_key_serialization_version)
        names = [f.name for f in fv.features]
        fields = [_mmh3(f"{name}:{n}") for n in names]
        ts_field, applied_field = f"_ts:{name}", f"_applied:{name}"
        with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(redis_key)
                    *raw, raw_ts, raw_applied = pipe.hmget(redis_key, [*fields, ts_field, applied_field])
                    applied = json.loads(raw_applied) if raw_applied else []
                    if write_id is not None and write_id in applied:
                        pipe.unwatch()
                        return False
                    row = None if all(v is None for v in raw) else {
                        n: None if v is None else _value(ValueProto.FromString(v))
                        for n, v in zip(names, raw, strict=True)}
                    ts = None
                    if raw_ts:
                        stamp = Timestamp()
                        stamp.ParseFromString(raw_ts)
                        ts = stamp.ToDatetime(tzinfo=UTC)
                    out = self._decide(change, row, ts)
                    if out is None:
                        pipe.unwatch()
                        return False
                    stamp = Timestamp()
                    stamp.FromDatetime(_aware(out[1]))  # type: ignore[arg-type]
                    mapping = {_mmh3(f"{name}:{n}"): v.SerializeToString() for n, v in out[0].items()}
                    if write_id is not None:
                        mapping[applied_field] = json.dumps([*applied, write_id][-APPLIED_KEPT:])
                    pipe.multi()
                    pipe.hset(redis_key, mapping={**mapping, ts_field: stamp.SerializeToString()})
                    pipe.execute()
                    return True
                except WatchError as exc:
                    if isinstance(exc.__context__, RedisError):  # the connection failed, not the row
                        raise exc.__context__ from None
                    continue  # another writer changed the row between our read and write: again


def _sqlite_first(conn, view: str, key, write_id: int) -> bool:
    """Mark `write_id` applied to the row (in the caller's transaction); False if it was already.
    Only the row's last APPLIED_KEPT ids are kept."""
    entity = key.SerializeToString()
    if conn.execute(f"INSERT OR IGNORE INTO {APPLIED_TABLE} VALUES (?, ?, ?)",
                    (view, entity, write_id)).rowcount == 0:
        return False
    conn.execute(f"DELETE FROM {APPLIED_TABLE} WHERE view = ? AND entity_key = ? AND write_id NOT IN "
                 f"(SELECT write_id FROM {APPLIED_TABLE} WHERE view = ? AND entity_key = ? "
                 "ORDER BY write_id DESC LIMIT ?)", (view, entity, view, entity, APPLIED_KEPT))
    return True
