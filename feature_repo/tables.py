"""Feature tables: the contract's tables turned into the Feast sources, point-in-time correct.

Feast's as-of join matches a row stamped at or before the lookup time t. A feature built from events
must therefore be stamped *after* every event it contains: histories and stock changes are stamped
one microsecond after their instant (so a lookup at t sees exactly what happened strictly before t,
same-second events included), and popularity is counted over whole days before a midnight stamp.

The three event-derived tables are partitioned by day: `<table>.parquet/<YYYY-MM-DD>.parquet` holds
the rows computed up to the end of that day (history and stock rows of the day's instants, the
popularity row stamped at the next midnight). `partitions.json` records a fingerprint of each day's
events; a new write recomputes only the days from the first whose events changed (a new day, or a
late event) to the last, and keeps the others' files as they are. The result is the same as a full
rebuild: each recomputed row is derived from the same events by the same query.

`user_seen` (every item each user has seen, for the service to leave out) is one file of each
user's latest row, stamped just after their last event: rewritten whole by every write whose events
changed, its rows new to the online store being those of the users with events since the first
recomputed day.

`online.json` marks, per table, the rows written since the online store last loaded them
(`unloaded`): an incremental load starts at the watermark Feast keeps, which a load that ran before
the write (the hourly one at midnight) has already moved past the day's stamps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.datasets import Dataset
from feature_repo.files import atomic_write, locked

log = logging.getLogger(__name__)

HISTORY_LENGTH = 50  # items per history snapshot: enough for sequence encoders, bounded in size
WINDOWS_DAYS = (1, 7, 30)  # popularity windows
STATIC_STAMP = datetime(1970, 1, 1, tzinfo=UTC)  # stamp of attributes that have no history
EPOCH = f"TIMESTAMPTZ '{STATIC_STAMP.isoformat()}'"
AFTER = timedelta(microseconds=1)  # event features are stamped this long after their event
_AFTER_SQL = f"INTERVAL {AFTER // timedelta(microseconds=1)} MICROSECOND"
DATASET_FILE = "dataset.json"  # beside the tables: the name and fingerprint of their dataset
PARTITIONS_FILE = "partitions.json"  # beside the tables: each day's event fingerprint
ONLINE_FILE = "online.json"  # beside the tables: per table, the stamps written but not loaded online
ONLINE_LOCK = ".online.lock"  # held while the marks in ONLINE_FILE change
STATIC_TABLES = ("user_profile", "item_content")  # one file each, rewritten when its input changed
DAILY_TABLES = ("user_history", "item_stock", "item_popularity")  # one file per day
# One file of each entity's latest row, rewritten whenever events changed; its new rows are those
# stamped from the first day recomputed, as the daily tables' are.
LATEST_TABLES = ("user_seen",)
TABLES = (*STATIC_TABLES, *DAILY_TABLES, *LATEST_TABLES)
SCHEMA_FILE = "schema.parquet"  # a day table's empty file: its folder is never empty


def _seconds(column: str) -> str:
    """SQL: the timestamp as whole Unix seconds, floored as the towers and the index floor it."""
    return f"fdiv(epoch_us({column}), 1000000)::BIGINT"


# Columns are cast to the views' types: an all-empty or all-null column has none to infer.
# Daily tables add a `day` column (the partition); `{since}` is the first day recomputed:
# `interactions` holds every event of the users active since then, `recent` the events from 30
# days before it, `stock` the stock rows since then.
_QUERIES = {
    "user_profile": f"""
        SELECT user_id, age::BIGINT AS age, profile_tokens::VARCHAR[] AS profile_tokens,
               {EPOCH} AS event_timestamp FROM users""",
    "item_content": f"""
        SELECT item_id, title::VARCHAR AS title, categories::VARCHAR[] AS categories,
               price::DOUBLE AS price, {_seconds('created_at')} AS created_at_s,
               {EPOCH} AS event_timestamp FROM items""",
    "user_history": f"""
        WITH ranked AS (
            SELECT user_id, event_timestamp,
                   list(item_id) OVER recent AS recent_item_ids,
                   list({_seconds('event_timestamp')}) OVER recent AS recent_timestamps,
                   count(*) OVER (PARTITION BY user_id ORDER BY event_timestamp, seq)
                       AS event_count,
                   row_number() OVER (PARTITION BY user_id, event_timestamp ORDER BY seq DESC)
                       AS from_last
            FROM interactions
            WINDOW recent AS (PARTITION BY user_id ORDER BY event_timestamp, seq
                              ROWS BETWEEN {{before}} PRECEDING AND CURRENT ROW))
        SELECT user_id, recent_item_ids, recent_timestamps, event_count,
               event_timestamp + {_AFTER_SQL} AS event_timestamp, event_timestamp::DATE AS day
        FROM ranked WHERE from_last = 1 AND event_timestamp >= {{since}}""",
    "user_seen": f"""
        SELECT user_id, list_sort(list_distinct(list(item_id))) AS seen_item_ids,
               max(event_timestamp) + {_AFTER_SQL} AS event_timestamp
        FROM events GROUP BY user_id""",
    "item_stock": f"""
        SELECT item_id, quantity, event_timestamp + {_AFTER_SQL} AS event_timestamp,
               event_timestamp::DATE AS day
        FROM (SELECT *, row_number() OVER (PARTITION BY item_id, event_timestamp ORDER BY seq DESC)
                        AS from_last FROM stock)
        WHERE from_last = 1""",
    # Each day's count enters every window at the next midnight and leaves it w days later;
    # running sums of those steps give the counts at every midnight where one changes. A row
    # stamped at midnight belongs to the day before it; none is written past the last day.
    "item_popularity": """
        WITH daily AS (
            SELECT item_id, date_trunc('day', event_timestamp) AS day, count(*) AS n
            FROM recent GROUP BY ALL),
        steps AS (
            SELECT item_id, day + INTERVAL 1 DAY AS starts, n AS d1, n AS d7, n AS d30 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 2 DAY, -n, 0, 0 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 8 DAY, 0, -n, 0 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 31 DAY, 0, 0, -n FROM daily),
        merged AS (SELECT item_id, starts, sum(d1) AS d1, sum(d7) AS d7, sum(d30) AS d30
                   FROM steps GROUP BY ALL),
        counted AS (
            SELECT item_id,
                   sum(d1) OVER running::BIGINT AS count_1d,
                   sum(d7) OVER running::BIGINT AS count_7d,
                   sum(d30) OVER running::BIGINT AS count_30d,
                   starts AS event_timestamp, (starts - INTERVAL 1 DAY)::DATE AS day
            FROM merged WINDOW running AS (PARTITION BY item_id ORDER BY starts))
        SELECT * FROM counted WHERE day BETWEEN {since} AND {last}""",
}
# Recorded with each write: tables written by other queries (an older version) are rebuilt.
_QUERIES_FINGERPRINT = hashlib.sha256(json.dumps(_QUERIES, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TablesUpdate:
    """What a write did: every table's path (a file, or a folder of day files), the days it
    recomputed, how many days it kept as they were, and the rows it wrote per table."""

    paths: dict[str, Path]
    days: list[date]
    kept_days: int
    rows: dict[str, int]

    @property
    def since(self) -> date | None:
        """The first day recomputed (None: no event changed)."""
        return self.days[0] if self.days else None


def _profile(users: pd.DataFrame) -> pd.DataFrame:
    """Age plus every other attribute as a 'name=value' token."""
    attributes = [c for c in users.columns if c not in ("user_id", "age")]
    tokens = users[attributes].astype("string").fillna("")
    return pd.DataFrame({
        "user_id": users["user_id"],
        "age": pd.to_numeric(users["age"], errors="coerce").astype("Int64")
        if "age" in users else pd.array([None] * len(users), dtype="Int64"),
        "profile_tokens": [[f"{name}={value}" for name, value in zip(attributes, row, strict=True)
                            if value] for row in tokens.to_numpy()],
    })


def table_path(out_dir: str | Path, table: str) -> Path:
    """A table's file, or for a daily table the folder of its day files."""
    return Path(out_dir) / f"{table}.parquet"


def write_feature_tables(dataset: Dataset, out_dir: str | Path, *,
                         history_length: int = HISTORY_LENGTH, rebuild: bool = False) -> TablesUpdate:
    """Write the Feast source tables under out_dir, and its `dataset.json`.

    The static tables are rewritten (when their input changed) and `user_seen` (when events did);
    of the daily tables only the days from the first whose events changed since the last write
    are (every day when `rebuild`, or when the last write was of another dataset, history length
    or version of the queries). Tables are written to a scratch
    folder first, so a failure leaves the previous files as they were; `partitions.json` is
    written last (and its days emptied before a full rewrite moves its files in), so days a failed
    write left half replaced are recomputed by the next.
    """
    dataset.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = _connect(dataset)
    previous = _read_partitions(out_dir)
    same_build = (previous.get("dataset") == dataset.fingerprint
                  and previous.get("history_length") == history_length and not rebuild
                  and previous.get("queries") == _QUERIES_FINGERPRINT
                  and all(table_path(out_dir, t).is_dir() for t in DAILY_TABLES)
                  and all(table_path(out_dir, t).is_file() for t in LATEST_TABLES))
    known = previous.get("days", {}) if same_build else {}
    rows, appended = _appended_rows(con, previous.get("rows", {}) if same_build else {})
    fingerprints = _day_fingerprints(con) if appended is None else {
        **known, **_day_fingerprints(con, appended)}
    statics = _static_fingerprints(con)
    changed = sorted(day for day in {*fingerprints, *known} if fingerprints.get(day) != known.get(day))
    since = date.fromisoformat(changed[0]) if changed else None
    if since is not None and known:  # days without events after the last write have rows too
        since = min(since, date.fromisoformat(max(known)) + timedelta(days=1))
    last = date.fromisoformat(max(fingerprints)) if fingerprints else None
    # Training examples joined the profiles of the users with events so far: when one of those
    # changes, every example file is stale (`profiles_changed`); a user added with new events is not.
    through = last.isoformat() if last else None
    profiles = {"through": through, "hash": _profiles_fingerprint(con, through)}
    joined = previous.get("profiles") if same_build else None  # what the last write hashed
    unchanged = bool(joined) and joined["hash"] == (
        profiles["hash"] if joined["through"] == through
        else _profiles_fingerprint(con, joined["through"]))
    changed_at = previous["profiles_changed"] if unchanged else time.time_ns()
    days = [] if since is None or last is None else [
        since + timedelta(days=n) for n in range((last - since).days + 1)]
    scratch = Path(tempfile.mkdtemp(prefix=".tables-", dir=out_dir))
    try:
        changed_static = [t for t in STATIC_TABLES if not same_build or not table_path(out_dir, t).is_file()
                          or previous.get("static", {}).get(t) != statics[t]]
        whole = [*changed_static, *(LATEST_TABLES if since is not None else ())]
        written = _write_whole(con, scratch, whole, dataset.users)
        if since is not None:
            written |= _write_days(con, scratch, since, last or since, history_length)
        _mark_unloaded(out_dir, changed_static, since, last)  # first: a crash after the move keeps it
        if not known and previous:  # a full move deletes every day first: until it is done, no
            # day is known (the rest, e.g. the history length the service reads, stays)
            atomic_write(out_dir / PARTITIONS_FILE, json.dumps({**previous, "days": {}, "rows": {}}) + "\n")
        _move_into_place(scratch, out_dir, whole, since, full=not known)
        _mark_unloaded(out_dir, changed_static, since, last)  # renewed: a load that read it before keeps it
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        con.close()
    atomic_write(out_dir / DATASET_FILE, json.dumps(
        {"name": dataset.name, "fingerprint": dataset.fingerprint}) + "\n")
    atomic_write(out_dir / PARTITIONS_FILE, json.dumps(
        {"dataset": dataset.fingerprint, "history_length": history_length,
         "queries": _QUERIES_FINGERPRINT, "static": statics, "profiles_changed": changed_at,
         "profiles": profiles,
         "days": fingerprints, "rows": rows}, indent=0) + "\n")
    kept = len([d for d in fingerprints if since is None or d < since.isoformat()])
    log.info("feature tables: %d days recomputed from %s, %d kept", len(days), since, kept)
    return TablesUpdate(paths={t: table_path(out_dir, t) for t in TABLES}, days=days,
                        kept_days=kept, rows=written)


def dataset_record(data_dir: str | Path) -> dict | None:
    """The `name` and `fingerprint` of the dataset whose tables `data_dir` holds (None: none)."""
    path = Path(data_dir) / DATASET_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def history_length(data_dir: str | Path) -> int:
    """The history length the tables under `data_dir` were written with (the default if none)."""
    return int(_read_partitions(Path(data_dir)).get("history_length", HISTORY_LENGTH))


def profiles_changed(data_dir: str | Path) -> int:
    """When (Unix ns) the profile of a user with events last changed in the tables under
    `data_dir` (0: never written)."""
    return int(_read_partitions(Path(data_dir)).get("profiles_changed", 0))


def _profiles_fingerprint(con: duckdb.DuckDBPyConnection, through: str | None) -> str | None:
    """A hash of the profiles of the users with events up to day `through` (ISO), in any order."""
    if through is None:
        return None
    return con.execute("""
        SELECT sum(hash(u))::VARCHAR FROM user_attributes u
        WHERE user_id IN (SELECT user_id FROM events WHERE event_timestamp::DATE <= $through::DATE)
        """, {"through": through}).fetchall()[0][0]


@dataclass(frozen=True)
class Unloaded:
    """A table's rows that no online load has read: stamped from `since` to `through`, marked by
    the write at `written` (ns)."""

    since: datetime
    through: datetime
    written: int


def unloaded(out_dir: str | Path) -> dict[str, Unloaded]:
    """Per table under `out_dir`, the rows written since an online load passed their stamps."""
    try:
        marks = json.loads((Path(out_dir) / ONLINE_FILE).read_text())
        return {table: Unloaded(datetime.fromisoformat(m["since"]), datetime.fromisoformat(m["through"]),
                                int(m["written"])) for table, m in marks.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError):  # unreadable: load every row once
        return {table: Unloaded(STATIC_STAMP, STATIC_STAMP, 0) for table in TABLES}


def mark_loaded(out_dir: str | Path, read: dict[str, Unloaded], tables: list[str], start: datetime,
                end: datetime) -> None:
    """A load of `tables` from `start` to `end`, which read the marks `read` before it began: each
    mark it covers is cleared, or starts at `end` when it has later stamps; a mark a write renewed
    meanwhile stays."""
    with _marks(out_dir) as current:
        for table, mark in read.items():
            if table in tables and current.get(table) == mark and start <= mark.since:
                if end >= mark.through:
                    del current[table]
                else:
                    current[table] = Unloaded(max(end, mark.since), mark.through, mark.written)


def _mark_unloaded(out_dir: Path, static: list[str], since: date | None, last: date | None) -> None:
    """Add the stamps this write gives to the marks of rows not loaded online: static rows are
    stamped at STATIC_STAMP, a day's (and a latest table's from that day) up to its next midnight."""
    def midnight(day: date) -> datetime:
        return datetime.combine(day, datetime.min.time(), UTC)
    written = {table: (STATIC_STAMP, STATIC_STAMP) for table in static}
    if since is not None:
        written |= {table: (midnight(since), midnight((last or since) + timedelta(days=1)))
                    for table in (*DAILY_TABLES, *LATEST_TABLES)}
    with _marks(out_dir) as current:
        for table, (first, through) in written.items():
            if table in current:
                first, through = min(first, current[table].since), max(through, current[table].through)
            current[table] = Unloaded(first, through, time.time_ns())


@contextlib.contextmanager
def _marks(out_dir: str | Path) -> Iterator[dict[str, Unloaded]]:
    """The marks of unloaded rows, to change in place; written back (atomically) under a lock
    that writers and loads share."""
    out_dir = Path(out_dir)
    with locked(out_dir / ONLINE_LOCK):
        marks = unloaded(out_dir)
        yield marks
        if marks:
            atomic_write(out_dir / ONLINE_FILE, json.dumps({table: {
                "since": m.since.isoformat(), "through": m.through.isoformat(), "written": m.written}
                for table, m in marks.items()}, indent=0) + "\n")
        else:
            (out_dir / ONLINE_FILE).unlink(missing_ok=True)


def _read_partitions(out_dir: Path) -> dict:
    path = out_dir / PARTITIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _connect(dataset: Dataset) -> duckdb.DuckDBPyConnection:
    """DuckDB in UTC with the contract's tables registered (`seq`: each row's position)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", _numbered(dataset.interactions, ["user_id", "item_id", "event_timestamp"]))
    con.register("stock_log", _numbered(dataset.stock, ["item_id", "event_timestamp", "quantity"]))
    con.register("items", dataset.items[["item_id", "title", "categories", "price", "created_at"]])
    con.register("user_attributes", dataset.users)
    return con


def _numbered(frame: pd.DataFrame, columns: list[str]) -> pa.Table:
    """The columns as Arrow (no copy of integer columns, no pandas block consolidation: 10M rows
    in pandas took seconds), times in microseconds (what Feast's DuckDB store reads), and `seq`,
    each row's position."""
    arrays = {c: pa.array(frame[c]) for c in columns}
    arrays = {c: a.cast(pa.timestamp("us", tz="UTC"), safe=False) if pa.types.is_timestamp(a.type) else a
              for c, a in arrays.items()}
    return pa.table({**arrays, "seq": np.arange(len(frame))})


def _static_fingerprints(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """A static table -> a hash of its input rows (in any order)."""
    return {table: str(con.execute(f"SELECT sum(hash(t)) FROM {source} t").fetchall()[0][0])
            for table, source in (("user_profile", "user_attributes"), ("item_content", "items"))}


_ROW_HASH = {"events": "hash(user_id, item_id, event_timestamp, seq)",
             "stock_log": "hash(item_id, event_timestamp, quantity, seq)"}


def _appended_rows(con: duckdb.DuckDBPyConnection, before: dict[str, list]
                   ) -> tuple[dict[str, list], list[str] | None]:
    """Each event table's row count and hash, and the days of the rows appended since `before` (the
    last write's counts and hashes): None when a row before those counts changed (or none known).

    One pass without sorting: a daily run extends the raw tables, so only its new days need their
    fingerprints recomputed.
    """
    rows, days, unchanged = {}, set(), bool(before)
    for table, row_hash in _ROW_HASH.items():
        count, old_hash = before.get(table, [0, None])
        total, prefix, whole = con.execute(
            f"SELECT count(*), sum({row_hash}) FILTER (WHERE seq < {int(count)})::VARCHAR, "
            f"sum({row_hash})::VARCHAR FROM {table}").fetchall()[0]
        rows[table] = [total, whole]
        unchanged = unchanged and total >= count and prefix == old_hash
        days |= {day.isoformat() for (day,) in con.execute(
            f"SELECT DISTINCT event_timestamp::DATE FROM {table} WHERE seq >= {int(count)}").fetchall()}
    return rows, sorted(days) if unchanged else None


def _day_fingerprints(con: duckdb.DuckDBPyConnection, days: list[str] | None = None) -> dict[str, str]:
    """Day (ISO) -> a hash of its interactions and stock rows in their order within the day (the
    order that breaks ties), so rows added or removed on other days leave it as it was. Only
    `days` when given."""
    where = "" if days is None else "WHERE event_timestamp::DATE IN (SELECT unnest($days::DATE[]))"
    rows = con.execute(f"""
        SELECT day, string_agg(part, '/' ORDER BY part) FROM (
            SELECT day, 'i' || sum(hash(user_id, item_id, event_timestamp, rank))::VARCHAR AS part
            FROM (SELECT *, event_timestamp::DATE AS day,
                         row_number() OVER (PARTITION BY event_timestamp::DATE ORDER BY seq) AS rank
                  FROM events {where}) GROUP BY ALL
            UNION ALL
            SELECT day, 's' || sum(hash(item_id, event_timestamp, quantity, rank))::VARCHAR
            FROM (SELECT *, event_timestamp::DATE AS day,
                         row_number() OVER (PARTITION BY event_timestamp::DATE ORDER BY seq) AS rank
                  FROM stock_log {where}) GROUP BY ALL)
        GROUP BY ALL""", {} if days is None else {"days": days}).fetchall()
    return {day.isoformat(): fingerprint for day, fingerprint in rows}


def _write_whole(con: duckdb.DuckDBPyConnection, scratch: Path, tables: list[str],
                 users: pd.DataFrame) -> dict[str, int]:
    """The one-file tables `tables` (static or latest), each sorted by its entity."""
    if "user_profile" in tables:
        con.register("users", _profile(users))
    rows = {}
    for table in tables:
        path = table_path(scratch, table)
        key = f"{table.split('_')[0]}_id"
        con.execute(f"COPY (SELECT * FROM ({_QUERIES[table]}) ORDER BY {key}) TO '{path}' (FORMAT parquet)")
        rows[table] = con.execute(f"SELECT count(*) FROM '{path}'").fetchall()[0][0]
    return rows


def _write_days(con: duckdb.DuckDBPyConnection, scratch: Path, since: date, last: date,
                history_length: int) -> dict[str, int]:
    """The daily tables' rows of the days from `since` to `last`, one folder per day."""
    start = f"TIMESTAMPTZ '{since.isoformat()} 00:00:00+00'"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW interactions AS SELECT * FROM events
                    WHERE user_id IN (SELECT user_id FROM events WHERE event_timestamp >= {start})""")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW recent AS SELECT * FROM events
                    WHERE event_timestamp >= {start} - INTERVAL {max(WINDOWS_DAYS)} DAY""")
    con.execute("CREATE OR REPLACE TEMP VIEW stock AS SELECT * FROM stock_log "
                f"WHERE event_timestamp >= {start}")
    rows = {}
    for table in DAILY_TABLES:
        started = time.perf_counter()
        query = _QUERIES[table].replace("{before}", str(history_length - 1)).replace(
            "{since}", f"DATE '{since}'").replace("{last}", f"DATE '{last}'")
        key = f"{table.split('_')[0]}_id"
        # Sorted by entity, so a join on a range of ids reads only the row groups it needs.
        query = f"SELECT * FROM ({query}) ORDER BY {key}, event_timestamp"
        folder = table_path(scratch, table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE computed AS {query}")
        con.execute(f"COPY computed TO '{folder}' (FORMAT parquet, PARTITION_BY (day))")
        con.execute(f"COPY (SELECT * EXCLUDE (day) FROM computed LIMIT 0) TO '{folder / SCHEMA_FILE}' "
                    "(FORMAT parquet)")
        rows[table] = con.execute("SELECT count(*) FROM computed").fetchall()[0][0]
        con.execute("DROP TABLE computed")
        log.info("%s: %d rows from %s in %.1fs", table, rows[table], since, time.perf_counter() - started)
    return rows


def _move_into_place(scratch: Path, out_dir: Path, whole: list[str], since: date | None, *,
                     full: bool) -> None:
    """Replace the one-file tables `whole` and the day files from `since` on (all of them when
    `full`).

    Each file is replaced atomically; day files of recomputed days that have no rows now are
    removed.
    """
    for table in whole:
        os.replace(table_path(scratch, table), table_path(out_dir, table))
    if since is None:
        return
    for table in DAILY_TABLES:
        source, target = table_path(scratch, table), table_path(out_dir, table)
        if full and target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.mkdir(exist_ok=True)
        written = set()
        for folder in sorted(source.glob("day=*")):
            day = folder.name.removeprefix("day=")
            for n, part in enumerate(sorted(folder.glob("*.parquet"))):
                name = f"{day}.parquet" if n == 0 else f"{day}.{n}.parquet"
                os.replace(part, target / name)
                written.add(name)
        for stale in target.glob("*.parquet"):
            kept = stale.name == SCHEMA_FILE or stale.name in written
            if not kept and stale.name[:10] >= since.isoformat():
                stale.unlink()
        os.replace(source / SCHEMA_FILE, target / SCHEMA_FILE)


if __name__ == "__main__":  # python -m feature_repo.tables [SPEC]: this folder's own data/
    import sys

    from feature_repo.datasets import load

    spec = sys.argv[1] if len(sys.argv) > 1 else "synthetic:items=200,users=100,events=3000,seed=0"
    out = Path(__file__).resolve().parent / "data"
    written = write_feature_tables(load(spec), out)
    print(f"{spec}: {', '.join(written.paths)} written to {out}")  # noqa: T201 (command line)
