"""The event log: every write the service accepts, durable before it answers, and read by the pipeline.

One SQL table: SQLite `events.db` in the data directory by default (WAL, a full fsync per commit), or
PostgreSQL by URL (the compose stack: the registry's database). A row per accepted write:

    seq        the log's order (the pipeline and the version switch read "everything after seq")
    key        the client's Idempotency-Key: unique, so a retried write is logged once
    kind       interaction | stock | item
    body       the write (JSON)
    logged_at  when it was logged (UTC): stock and item changes take effect then
    dataset    the fingerprint of the dataset it was written against (the live model's, or the
               pipeline's for its inbox): after a home changes dataset (`--replace`), each
               dataset's runs replay only its own writes and untagged ones, and keep the others
    answer     the response once applied: a retry with the same key gets it back (stored off the
               request path, in batches: a retry that finds none applies its write again, which
               changes nothing twice)

`with_events` turns the log into rows of the data contract and adds them to a dataset: the
interactions to train on, the items upserted (last upsert wins), the stock changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from feature_repo.datasets import Dataset
from feature_repo.datasets.contract import TIMESTAMP
from index.catalogue import latest_stock
from index.migrations import add_column

log = logging.getLogger(__name__)

KINDS = ("interaction", "stock", "item")
LOG_FILE = "events.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SEQ = "log_seq"  # column of the dataset rows that came from the log
LOG_POSITION = "event_log_position"  # an index version's metric: the last seq its build read
LOG_GAPS = "event_log_gaps"  # an index version's metric: seqs below its position its build lacked
# On PostgreSQL a lower seq can commit after a higher one: the seqs this far below a position
# that a reader had not seen may still land (the pipeline re-reads them, the service waits).
LATE_COMMITS = 10_000
SEQS_PER_QUERY = 10_000  # seqs bound in one `IN` list: below SQLite's and PostgreSQL's limits
WRITE_LOCK = 0x7477_6C6F67  # PostgreSQL advisory lock key of the log's writers ("twlog")

_metadata = MetaData()
events = Table(
    "events", _metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("body", JSON, nullable=False),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Column("answer", JSON),
    Column("dataset", String(16)),
)


class KeyReused(ValueError):
    """An idempotency key already logged with a different write."""


@dataclass(frozen=True)
class Event:
    seq: int
    key: str
    kind: str
    body: dict[str, Any]
    logged_at: datetime
    answer: dict[str, Any] | None = None
    dataset: str | None = None  # fingerprint of the dataset written against (None: any)
    new: bool = True  # False: the key was logged before (a retry)


class EventLog:
    """The log in SQL; every method is one transaction, safe across threads and processes."""

    def __init__(self, url: str | None = None, *, data_dir: Path | str = ".twotower") -> None:
        if url is None:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(data_dir).resolve() / LOG_FILE}"
        self.url = url
        self.engine = create_engine(url)
        # Answers are only what a retry gets back: written by a background thread in batches,
        # without waiting for the disk (WAL: safe from a process crash, not from a power loss),
        # so a write costs one transaction and one fsync on the request path.
        self._answers = create_engine(url)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_durable)
            event.listen(self._answers, "connect", _sqlite_lazy)
        _metadata.create_all(self.engine)
        add_column(self.engine, "events", "dataset", "VARCHAR(16)")
        self._pending: dict[int, dict[str, Any]] = {}  # answers not stored yet, by seq
        self._wake = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._store_answers, name="event-log-answers",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def beside(cls, registry_url: str) -> EventLog:
        """The log next to a registry: its folder's `events.db` for SQLite, else its database."""
        if registry_url.startswith("sqlite:///"):
            return cls(data_dir=Path(registry_url.removeprefix("sqlite:///")).parent)
        return cls(registry_url)

    def close(self) -> None:
        """Store the pending answers, then close the connections."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        self.engine.dispose()
        self._answers.dispose()

    def record(self, key: str, kind: str, body: dict[str, Any], *, dataset: str | None = None) -> Event:
        """Log a write under `key`, durably, written against `dataset` (a fingerprint; None: any);
        a key seen before returns its first event (`new=False`).

        Raises KeyReused when the key was logged with another kind or body.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: one of {KINDS}")
        body = json.loads(json.dumps(body, default=str))  # as it will read back
        try:
            with self.engine.begin() as db:
                # One writer at a time (SQLite: its write lock, taken by the insert; PostgreSQL: a
                # transaction lock), stamped by the database's clock holding it: seq, time and
                # commit order agree, so the last change of an item by seq (the index) is also the
                # newest (the online store), whichever host wrote it.
                if db.dialect.name == "postgresql":
                    db.execute(select(func.pg_advisory_xact_lock(WRITE_LOCK)))
                seq, at = db.execute(insert(events).values(
                    key=key, kind=kind, body=body, logged_at=_now(db.dialect.name), dataset=dataset
                ).returning(events.c.seq, events.c.logged_at)).one()
            return Event(int(seq), key, kind, body, _utc(at), dataset=dataset)
        except IntegrityError:
            first = self.get(key)
            if first is None:  # not the key's constraint that failed
                raise
            if first.kind != kind or first.body != body:
                raise KeyReused(f"Idempotency-Key {key!r}: already used for another {first.kind} "
                                "write; send a new key for a new write") from None
            return dataclasses.replace(first, new=False)

    def answer(self, seq: int, answer: dict[str, Any]) -> None:
        """Keep the response of an applied write (what a retry of its key gets back); stored soon
        after, with the other answers given meanwhile."""
        with self._wake:
            self._pending[seq] = answer
            self._wake.notify()

    def _store_answers(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                batch = dict(self._pending)
            try:
                with self._answers.begin() as db:
                    db.execute(update(events).where(events.c.seq == bindparam("at_seq"))
                               .values(answer=bindparam("the_answer")),
                               [{"at_seq": seq, "the_answer": a} for seq, a in batch.items()])
            except Exception as exc:  # the writes stand; a retry without an answer applies again
                log.warning("could not store the answers of %d logged writes: %s", len(batch), exc)
            with self._wake:
                for seq in batch:
                    del self._pending[seq]

    def get(self, key: str) -> Event | None:
        # The pending answers are taken before the row is read: an answer leaves them only once
        # stored, so it is in one or the other.
        with self._wake:
            pending = dict(self._pending)
        with self.engine.connect() as db:
            row = db.execute(select(events).where(events.c.key == key)).first()
        if row is None:
            return None
        found = _event(row)
        answer = pending.get(found.seq)
        return found if answer is None else dataclasses.replace(found, answer=answer)

    def position(self) -> int:
        """The last seq logged (0: none)."""
        with self.engine.connect() as db:
            return int(db.execute(select(func.max(events.c.seq))).scalar() or 0)

    def key_at(self, seq: int) -> str | None:
        """The key of the write logged at `seq` (None: none there)."""
        found = self.read(after=seq - 1, upto=seq)
        return found[0].key if found else None

    def seqs(self, *, after: int) -> list[int]:
        """The seqs logged after `after`, of every kind, in order: a read without the bodies."""
        with self.engine.connect() as db:
            return list(db.execute(select(events.c.seq).where(events.c.seq > after)
                                   .order_by(events.c.seq)).scalars())

    def at(self, seqs: Iterable[int]) -> list[Event]:
        """The events logged at `seqs` (those that exist), in log order."""
        wanted, found = sorted(set(seqs)), []
        with self.engine.connect() as db:
            for start in range(0, len(wanted), SEQS_PER_QUERY):
                chunk = wanted[start:start + SEQS_PER_QUERY]
                found += [_event(row) for row in db.execute(select(events).where(events.c.seq.in_(chunk)))]
        return sorted(found, key=lambda e: e.seq)

    def read(self, *, after: int = 0, upto: int | None = None, kinds: Iterable[str] = KINDS,
             item_id: int | None = None) -> list[Event]:
        """Events with after < seq <= upto (of one item if `item_id` is given), in log order."""
        query = select(events).where(events.c.seq > after, events.c.kind.in_(list(kinds)))
        if upto is not None:
            query = query.where(events.c.seq <= upto)
        if item_id is not None:
            query = query.where(cast(events.c.body["item_id"].as_string(), BigInteger) == item_id)
        with self.engine.connect() as db:
            return [_event(row) for row in db.execute(query.order_by(events.c.seq))]


def _now(dialect: str):
    """The database's clock as a SQL expression (SQLite's to the millisecond, in UTC)."""
    if dialect == "postgresql":
        return func.clock_timestamp()
    return func.strftime("%Y-%m-%d %H:%M:%f000", "now")


def _utc(at: datetime) -> datetime:
    """A stamp read back: SQLite's are naive UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _sqlite_durable(connection, _record) -> None:
    """WAL with a full fsync per commit: a logged event survives a crash or power loss."""
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_lazy(connection, _record) -> None:
    """WAL without an fsync per commit (the WAL is synced at checkpoints)."""
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _event(row) -> Event:
    return Event(int(row.seq), row.key, row.kind, row.body, _utc(row.logged_at), row.answer,
                 row.dataset, new=False)


# -- the log as rows of the data contract ---------------------------------------------------------

def effective(event: Event, field: str) -> str:
    """A time the client may leave out (an interaction's `ts`, an item's `created_at`): sent, or the
    log time (so a retry without it is the same write)."""
    return event.body.get(field) or event.logged_at.isoformat()


def created_at(upserts: Iterable[Event], before: str | None) -> str:
    """An item's creation time after `upserts` (in log order): the `created_at` one sent, else the
    time the item had (`before`), else (a new item) the first upsert's log time."""
    for upsert in upserts:
        before = upsert.body.get("created_at") or before or upsert.logged_at.isoformat()
    assert before is not None, "no upserts and no creation time"
    return before


def sets_stock(event: Event | None) -> bool:
    """Whether a logged stock or item event sets the item's quantity (an upsert may leave it out)."""
    return event is not None and (event.kind == "stock" or event.body.get("stock") is not None)


def _timestamps(values: list) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601")).astype(TIMESTAMP)


def of_dataset(logged: list[Event], fingerprint: str | None) -> list[Event]:
    """The events written against the dataset `fingerprint` names, or against none in particular
    (None: every event)."""
    if fingerprint is None:
        return logged
    return [e for e in logged if e.dataset is None or e.dataset == fingerprint]


def with_events(dataset: Dataset, logged: list[Event]) -> Dataset:
    """The dataset plus the logged writes of it (`of_dataset`): interactions appended, items
    upserted (the last upsert of an id wins), stock changes appended at their log time, unknown
    users added without attributes (in order of their first event).

    Rows from the log carry their `log_seq`; `log_position` reads the newest back.
    """
    ours = of_dataset(logged, dataset.fingerprint)
    if len(ours) < len(logged):
        others = sorted({e.dataset for e in logged} - {None, dataset.fingerprint})
        log.warning("event log: %d writes to another dataset (%s) left out of %s; they stay in the "
                    "log", len(logged) - len(ours), ", ".join(others), dataset.name)
    logged = ours
    if not logged:
        return dataset
    by_kind = {kind: [e for e in logged if e.kind == kind] for kind in KINDS}
    interactions = pd.DataFrame({
        "user_id": pd.Series([e.body["user_id"] for e in by_kind["interaction"]], dtype="int64"),
        "item_id": pd.Series([e.body["item_id"] for e in by_kind["interaction"]], dtype="int64"),
        "event_timestamp": _timestamps([effective(e, "ts") for e in by_kind["interaction"]]),
        SEQ: pd.Series([e.seq for e in by_kind["interaction"]], dtype="int64")})
    # Rows in log order, whatever part of the log a run reads: extending the last run's tables
    # with the next events gives the same tables as reading the whole log at once.
    upserts = {e.body["item_id"]: e for e in by_kind["item"]}  # last upsert of an id wins
    upserts = dict(sorted(upserts.items(), key=lambda pair: pair[1].seq))
    # Only the upserted items' own times and quantities are read: the catalogue and the stock log
    # may hold millions of rows
    had = dataset.items[dataset.items["item_id"].isin(list(upserts))]
    created = dict(zip(had["item_id"].tolist(),
                       (None if pd.isna(t) else t.isoformat() for t in had["created_at"]), strict=True))
    for e in by_kind["item"]:
        created[e.body["item_id"]] = created_at([e], created.get(e.body["item_id"]))
    items = pd.DataFrame({
        "item_id": pd.Series(list(upserts), dtype="int64"),
        "title": pd.Series([e.body["title"] for e in upserts.values()], dtype="string"),
        "categories": pd.Series([list(e.body["categories"]) for e in upserts.values()], dtype=object),
        "price": pd.Series([e.body.get("price") for e in upserts.values()], dtype="float64"),
        "created_at": _timestamps([created[item_id] for item_id in upserts]),
        SEQ: pd.Series([e.seq for e in upserts.values()], dtype="int64")})
    # Every stock and item write leaves a stock row (`log_seqs` counts it held); an upsert that
    # leaves the stock out states the quantity the item had
    changes = [e for e in logged if e.kind in ("stock", "item")]
    kept = [e.body["item_id"] for e in by_kind["item"] if not sets_stock(e)]
    current, quantities = latest_stock(dataset.stock[dataset.stock["item_id"].isin(kept)]), []
    for e in changes:
        item_id = e.body["item_id"]
        current[item_id] = (e.body["quantity"] if e.kind == "stock" else e.body["stock"]
                            if sets_stock(e) else current.get(item_id, 0))
        quantities.append(current[item_id])
    stock = pd.DataFrame({
        "item_id": pd.Series([e.body["item_id"] for e in changes], dtype="int64"),
        "event_timestamp": _timestamps([e.logged_at.isoformat() for e in changes]),
        "quantity": pd.Series(quantities, dtype="int64"),
        SEQ: pd.Series([e.seq for e in changes], dtype="int64")})
    known_users = set(dataset.users["user_id"].tolist())
    new_users = [u for u in dict.fromkeys(interactions["user_id"].tolist()) if u not in known_users]
    kept_items = dataset.items[~dataset.items["item_id"].isin(list(upserts))]
    # Stock of an item not in the catalogue (a feed ahead of it) changes nothing the catalogue
    # serves: its rows stay in the log, out of the tables, and the item's upsert brings its stock.
    unknown = ~stock["item_id"].isin(kept_items["item_id"]) & ~stock["item_id"].isin(list(upserts))
    if unknown.any():
        log.warning("event log: %d stock changes of items not in the catalogue left out (item_id "
                    "%s, ...)", int(unknown.sum()), int(stock.loc[unknown, "item_id"].iloc[0]))
        stock = stock[~unknown]
    return dataclasses.replace(
        dataset,
        interactions=_concat(dataset.interactions, interactions),
        items=_concat(kept_items, items),
        users=_concat(dataset.users, pd.DataFrame({"user_id": pd.Series(new_users, dtype="int64")})),
        stock=_concat(dataset.stock, stock))


def _concat(base: pd.DataFrame, more: pd.DataFrame) -> pd.DataFrame:
    if more.empty:
        return base
    frame = pd.concat([base, more], ignore_index=True)
    frame.attrs = base.attrs
    return frame


def unplaced(dataset: Dataset, logged: list[Event]) -> list[int]:
    """The seqs of the logged stock writes of `dataset` its tables left out: their item is not in
    the catalogue yet (`with_events`). A later read needs them again when the item arrives."""
    read = [e.seq for e in of_dataset(logged, dataset.fingerprint) if e.kind == "stock"]
    if not read or SEQ not in dataset.stock:
        return read
    seqs = dataset.stock[SEQ]
    placed = set(seqs[seqs >= min(read)].astype("int64").tolist())  # not every stock row ever logged
    return [seq for seq in read if seq not in placed]


def log_position(dataset: Dataset) -> int:
    """The newest log seq a dataset holds (0: none of its rows came from the log)."""
    seqs = [frame[SEQ].max() for frame in (dataset.interactions, dataset.items, dataset.stock)
            if SEQ in frame and frame[SEQ].notna().any()]
    return int(max(seqs)) if seqs else 0


def log_seqs(dataset: Dataset, *, since: int) -> set[int]:
    """The log seqs from `since` on that a dataset holds (every logged write leaves an interaction
    or a stock row)."""
    return {int(seq) for frame in (dataset.interactions, dataset.stock) if SEQ in frame
            for seq in frame[SEQ][frame[SEQ] >= since].tolist()}


def log_gaps(dataset: Dataset) -> list[int]:
    """The seqs within `LATE_COMMITS` below a dataset's position that it lacks: writes not yet
    committed when it read the log, which may still land, or seqs a failed insert spent."""
    position = log_position(dataset)
    since = max(position - LATE_COMMITS, 0) + 1
    return sorted(set(range(since, position + 1)) - log_seqs(dataset, since=since))
