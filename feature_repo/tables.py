"""Feature tables: the contract's tables turned into the Feast sources, point-in-time correct.

Feast's as-of join matches a row stamped at or before the lookup time t. A feature built from events
must therefore be stamped *after* every event it contains: histories and stock changes are stamped
one microsecond after their instant (so a lookup at t sees exactly what happened strictly before t,
same-second events included), and popularity is counted over whole days before a midnight stamp.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from feature_repo.datasets import Dataset
from feature_repo.files import atomic_write

log = logging.getLogger(__name__)

HISTORY_LENGTH = 50  # items per history snapshot: enough for sequence encoders, bounded in size
WINDOWS_DAYS = (1, 7, 30)  # popularity windows
STATIC_STAMP = datetime(1970, 1, 1, tzinfo=UTC)  # stamp of attributes that have no history
EPOCH = f"TIMESTAMPTZ '{STATIC_STAMP.isoformat()}'"
AFTER = timedelta(microseconds=1)  # event features are stamped this long after their event
_AFTER_SQL = f"INTERVAL {AFTER // timedelta(microseconds=1)} MICROSECOND"
DATASET_FILE = "dataset.json"  # beside the tables: the name and fingerprint of their dataset
TABLES = ("user_profile", "user_history", "item_content", "item_stock", "item_popularity")

# Columns are cast to the views' types: an all-empty or all-null column has none to infer.
_QUERIES = {
    "user_profile": f"""
        SELECT user_id, age::BIGINT AS age, profile_tokens::VARCHAR[] AS profile_tokens,
               {EPOCH} AS event_timestamp FROM users""",
    "user_history": f"""
        WITH ranked AS (
            SELECT user_id, event_timestamp,
                   list(item_id) OVER recent AS recent_item_ids,
                   list(epoch(event_timestamp)::BIGINT) OVER recent AS recent_timestamps,
                   count(*) OVER (PARTITION BY user_id ORDER BY event_timestamp, seq)
                       AS event_count,
                   row_number() OVER (PARTITION BY user_id, event_timestamp ORDER BY seq DESC)
                       AS from_last
            FROM interactions
            WINDOW recent AS (PARTITION BY user_id ORDER BY event_timestamp, seq
                              ROWS BETWEEN {{before}} PRECEDING AND CURRENT ROW))
        SELECT user_id, recent_item_ids, recent_timestamps, event_count,
               event_timestamp + {_AFTER_SQL} AS event_timestamp
        FROM ranked WHERE from_last = 1""",
    "item_content": f"""
        SELECT item_id, title::VARCHAR AS title, categories::VARCHAR[] AS categories,
               price::DOUBLE AS price, epoch(created_at)::BIGINT AS created_at_s,
               {EPOCH} AS event_timestamp FROM items""",
    "item_stock": f"""
        SELECT item_id, quantity, event_timestamp + {_AFTER_SQL} AS event_timestamp
        FROM (SELECT *, row_number() OVER (PARTITION BY item_id, event_timestamp ORDER BY seq DESC)
                        AS from_last FROM stock)
        WHERE from_last = 1""",
    # Each day's count enters every window at the next midnight and leaves it w days later;
    # running sums of those steps give the counts at every midnight where one changes.
    "item_popularity": """
        WITH daily AS (
            SELECT item_id, date_trunc('day', event_timestamp) AS day, count(*) AS n
            FROM interactions GROUP BY ALL),
        steps AS (
            SELECT item_id, day + INTERVAL 1 DAY AS starts, n AS d1, n AS d7, n AS d30 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 2 DAY, -n, 0, 0 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 8 DAY, 0, -n, 0 FROM daily
            UNION ALL SELECT item_id, day + INTERVAL 31 DAY, 0, 0, -n FROM daily),
        merged AS (SELECT item_id, starts, sum(d1) AS d1, sum(d7) AS d7, sum(d30) AS d30
                   FROM steps GROUP BY ALL)
        SELECT item_id,
               sum(d1) OVER running::BIGINT AS count_1d,
               sum(d7) OVER running::BIGINT AS count_7d,
               sum(d30) OVER running::BIGINT AS count_30d,
               starts AS event_timestamp
        FROM merged WINDOW running AS (PARTITION BY item_id ORDER BY starts)""",
}


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


def write_feature_tables(dataset: Dataset, out_dir: str | Path, *,
                         history_length: int = HISTORY_LENGTH) -> dict[str, Path]:
    """Write the five Feast source tables as parquet under out_dir, and its `dataset.json`.

    The dataset is validated first and every table is written to a scratch folder before any file in
    out_dir is replaced, so a failure leaves the previous tables as they were.
    """
    dataset.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tables-", dir=out_dir))
    try:
        written = _write_all(dataset, scratch, history_length)
        paths = {}
        for table, path in written.items():
            paths[table] = out_dir / path.name
            os.replace(path, paths[table])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    atomic_write(out_dir / DATASET_FILE, json.dumps(
        {"name": dataset.name, "fingerprint": dataset.fingerprint}) + "\n")
    return paths


def dataset_record(data_dir: str | Path) -> dict | None:
    """The `name` and `fingerprint` of the dataset whose tables `data_dir` holds (None: none)."""
    path = Path(data_dir) / DATASET_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _write_all(dataset: Dataset, out_dir: Path, history_length: int) -> dict[str, Path]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    interactions = dataset.interactions[["user_id", "item_id", "event_timestamp"]].assign(
        seq=range(len(dataset.interactions)))
    stock = dataset.stock[["item_id", "event_timestamp", "quantity"]].assign(
        seq=range(len(dataset.stock)))
    items = dataset.items[["item_id", "title", "categories", "price", "created_at"]]
    users = _profile(dataset.users)
    for name, frame in (("interactions", interactions), ("stock", stock), ("items", items),
                        ("users", users)):
        con.register(name, frame)
    paths = {}
    for table in TABLES:
        started = time.perf_counter()
        query = _QUERIES[table].replace("{before}", str(history_length - 1))
        # Sorted by entity, so a join on a range of ids reads only the row groups it needs.
        query = f"SELECT * FROM ({query}) ORDER BY {table.split('_')[0]}_id, event_timestamp"
        path = out_dir / f"{table}.parquet"
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")
        rows = con.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]
        log.info("%s: %d rows in %.1fs", table, rows, time.perf_counter() - started)
        paths[table] = path
    con.close()
    return paths


if __name__ == "__main__":  # python -m feature_repo.tables [SPEC]: this folder's own data/
    import sys

    from feature_repo.datasets import load

    spec = sys.argv[1] if len(sys.argv) > 1 else "synthetic:items=200,users=100,events=3000,seed=0"
    out = Path(__file__).resolve().parent / "data"
    written = write_feature_tables(load(spec), out)
    print(f"{spec}: {', '.join(written)} written to {out}")  # noqa: T201 (command line)
