"""The Feast store: render a repository, write its tables, apply, materialize, and read features.

`training_frame` is the one path from entity rows to training rows: every feature comes through
`FeatureStore.get_historical_features`, so the towers see exactly what a point-in-time join gives
(by default the ASOF join of `feature_repo.asof_store`; `offline_store="duckdb"` is Feast's own).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from feature_repo.asof_store import STORE_TYPE, SqlRetrievalJob
from feature_repo.datasets import Dataset
from feature_repo.files import atomic_path, atomic_write, locked
from feature_repo.tables import (
    AFTER,
    HISTORY_LENGTH,
    STATIC_STAMP,
    mark_loaded,
    profiles_changed,
    table_path,
    unloaded,
    write_feature_tables,
)

log = logging.getLogger(__name__)

DEFINITIONS = Path(__file__).resolve().parent  # the in-tree Feast repository
APPLY_LOCK = ".apply.lock"  # held in a repository while it is applied
# The services of feature_services.py, named here so that importing this module does not load Feast
# (a test keeps them equal).
TRAINING_SERVICE = "two_tower_v1"
ONLINE_SERVICE = "user_online_v1"
ENTITY_COLUMNS = ["user_id", "item_id", "event_timestamp"]
LABEL_COLUMNS = ["weight"]  # carried from the events into the training examples where present
CHUNK_ROWS = 500_000  # entity rows per as-of join: bounds the memory of one join's result
OFFLINE_STORES = {"asof": STORE_TYPE, "duckdb": "duckdb"}


class FeatureStoreConfig(BaseModel):
    """Where the Feast repository lives and which online store and registry it uses."""

    model_config = ConfigDict(extra="forbid")

    repo_dir: Path = DEFINITIONS  # a copy elsewhere keeps the source tree clean
    online_store: Literal["sqlite", "redis"] = "sqlite"
    offline_store: Literal["asof", "duckdb"] = "asof"  # duckdb: Feast's stock point-in-time join
    redis_url: str = "localhost:6379"  # Feast's connection string: host:port[,password=...]
    redis_type: Literal["redis", "redis_cluster"] = "redis"  # redis_cluster: redis_url lists nodes
    registry_url: str | None = None  # a SQLAlchemy URL selects Feast's SQL registry
    history_length: int = Field(HISTORY_LENGTH, ge=1, le=1000)


def render_repo(config: FeatureStoreConfig) -> Path:
    """Copy the definitions to config.repo_dir (unless it is the source) and write its yaml.

    The definitions are every file `feast apply` imports from the source (all but `.feastignore`).
    """
    repo = config.repo_dir.resolve()
    if repo == DEFINITIONS:
        if config.online_store != "sqlite" or config.registry_url or config.offline_store != "asof":
            raise ValueError("repo_dir: Redis, a SQL registry or another offline store needs a "
                             "rendered copy of the repository, not the source folder itself")
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    for path in [*definition_files(DEFINITIONS), DEFINITIONS / ".feastignore"]:
        target = repo / path.relative_to(DEFINITIONS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    settings = yaml.safe_load((DEFINITIONS / "feature_store.yaml").read_text())
    settings["offline_store"] = {"type": OFFLINE_STORES[config.offline_store]}
    if config.online_store == "redis":
        settings["online_store"] = {"type": "redis", "redis_type": config.redis_type,
                                    "connection_string": config.redis_url}
    if config.registry_url:
        settings["registry"] = {"registry_type": "sql", "path": config.registry_url,
                                "cache_ttl_seconds": 60, "sqlalchemy_config_kwargs":
                                {"pool_pre_ping": True}}
    atomic_write(repo / "feature_store.yaml", yaml.safe_dump(settings, sort_keys=False))
    return repo


def definition_files(repo: Path) -> list[Path]:
    """The Python files `feast apply` imports from a repository folder (absolute paths)."""
    from feast.repo_operations import get_repo_files

    return get_repo_files(repo.resolve())


def definition_modules(repo: Path) -> list[str]:
    """The module names Feast imports those files under (from inside the repository folder)."""
    return [".".join(p.relative_to(repo.resolve()).with_suffix("").parts) for p in definition_files(repo)]


@contextlib.contextmanager
def _applying(repo: Path) -> Iterator[None]:
    """Hold the repository's apply lock: another process applying it waits until this one is done."""
    with locked(repo / APPLY_LOCK):
        yield


@contextlib.contextmanager
def _inside(repo: Path) -> Iterator[None]:
    """Feast imports definitions as top-level modules from the repository's folder: isolate that."""
    cwd, names = os.getcwd(), definition_modules(repo)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
        for name in names:
            sys.modules.pop(name, None)


def apply(repo: Path):  # -> feast.FeatureStore (feast is imported lazily: it takes seconds)
    """Run `feast apply` on the repository, in-process, and return its FeatureStore.

    One process at a time applies a repository (a file lock in it): the service's workers, which
    all apply a moved copy as they start, would otherwise race to replace its registry.
    What `feast apply` prints (each change, with proto dumps) is logged at INFO instead.
    """
    repo = repo.resolve()
    with _applying(repo):
        return _apply(repo)


def _apply(repo: Path):  # -> feast.FeatureStore
    """`apply`, its caller holding the repository's lock."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    # Feast warns that a daily table's path (a glob, which DuckDB reads) is no existing file.
    logging.getLogger("feast.infra.offline_stores.file_source").setLevel(logging.ERROR)
    printed = io.StringIO()
    with _inside(repo), contextlib.redirect_stdout(printed):
        _forget_if_moved(repo)
        apply_total(load_repo_config(repo, repo / "feature_store.yaml"), repo,
                    skip_source_validation=False)
    log.info("feast apply %s:\n%s", repo, printed.getvalue().strip())
    store = FeatureStore(repo_path=str(repo))
    monotonic_online_store(store)
    return store


def monotonic_online_store(store) -> None:
    """Make the online store refuse a value older than the stored one: materializing older feature
    rows never replaces newer ones (a history the service appended to, a quantity it set). Redis:
    each row compared and set in one step (`redis_writes.guard`). SQLite: one trigger per table
    (Feast keeps `event_ts` there in whole seconds)."""
    if store.config.online_store.type == "redis":
        from feature_repo.redis_writes import guard  # loads Feast: only when a store is open

        guard(store)
    if store.config.online_store.type != "sqlite":
        return
    conn = store._get_provider().online_store._get_conn(store.config)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    with conn:
        for table in tables:
            conn.execute(f'CREATE TRIGGER IF NOT EXISTS "{table}_never_older" BEFORE UPDATE ON '
                         f'"{table}" WHEN NEW.event_ts < OLD.event_ts BEGIN SELECT RAISE(IGNORE); END')


def build_store(dataset: Dataset, config: FeatureStoreConfig):  # -> feast.FeatureStore
    """Render the repository, write its feature tables, and apply it."""
    repo = render_repo(config)
    write_feature_tables(dataset, repo / "data", history_length=config.history_length)
    return apply(repo)


def open_store(config: FeatureStoreConfig):  # -> feast.FeatureStore
    """The FeatureStore of a repository that was already built, joining training frames with
    `config.offline_store` (whatever its yaml says); one copied or moved from where it was applied
    is applied again first, so it reads its own tables."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    repo = config.repo_dir.resolve()
    with _applying(repo):  # the registry is read when no other process is replacing it
        store = FeatureStore(repo_path=str(repo))
        if store.config.registry.registry_type == "file" and _moved(store, repo):
            _apply(repo)
    settings = yaml.safe_load((repo / "feature_store.yaml").read_text())
    repo_config = RepoConfig(**{**settings, "offline_store": {"type": OFFLINE_STORES[config.offline_store]}})
    repo_config.repo_path = repo
    return FeatureStore(repo_path=str(repo), config=repo_config)


def _forget_if_moved(repo: Path) -> None:
    """Delete the file registry of a repository copied or moved from where it was applied.

    Its infra names the original's online tables too: applied over it, Feast would drop them
    there. Rebuilt from the definitions alone, it keeps this copy's rows (the tables are created
    if missing) and touches nothing outside the repository.
    """
    from feast import FeatureStore

    settings = yaml.safe_load((repo / "feature_store.yaml").read_text())
    registry = settings.get("registry")
    if not isinstance(registry, str) or not (repo / registry).is_file():
        return  # a SQL registry is shared, not part of the directory; or none yet
    if _moved(FeatureStore(repo_path=str(repo)), repo):
        (repo / registry).unlink()


def _moved(store, repo: Path) -> bool:
    """Whether the Feast registry's file sources lie outside `repo`: it was applied elsewhere.

    Feast's DuckDB offline store reads a file source's path as given (a relative one against the
    working directory), so the registry holds absolute paths; a copied repository's registry
    still names the original's tables until its own definitions (paths from `__file__`) are
    applied. The yaml's paths (online store, registry) are relative, so they move with it.
    """
    paths = [Path(s.path) for s in store.list_data_sources() if getattr(s, "path", None)]
    return any(p.is_absolute() and not p.is_relative_to(repo) for p in paths)


def materialize(store, end: datetime, *, start: datetime = STATIC_STAMP) -> None:
    """Load the features of every event up to and including `end` into the online store.

    Feature rows are stamped just after their event (`tables.AFTER`), so Feast materializes to
    `end + AFTER`: an event at exactly `end` is included. The default start is where static
    attributes (profiles, item content) are stamped. The marks of rows not loaded yet that the
    load covers are cleared (`tables.unloaded`).
    """
    start, end = _aware(start), _aware(end)
    data, views = Path(store.repo_path) / "data", [view.name for view in store.list_feature_views()]
    read = unloaded(data)
    _load(store, "materialize", start_date=start, end_date=end + AFTER)
    mark_loaded(data, read, views, start, end)


def materialize_incremental(store, end: datetime) -> None:
    """Load the rows stamped after the last load up to and including `end`
    (`feast materialize-incremental`). A table with rows written after a load had passed their
    stamps (the hourly load at midnight, before the 01:00 run writes the day) is loaded from the
    older of its mark and its watermark instead."""
    data, end = Path(store.repo_path) / "data", _aware(end)
    read, views = unloaded(data), store.list_feature_views()
    behind = {view.name: min(read[view.name].since, _aware(view.most_recent_end_time or STATIC_STAMP))
              for view in views if view.name in read}
    current = [view.name for view in views if view.name not in behind]
    if current:
        _load(store, "materialize_incremental", end_date=end + AFTER, feature_views=current)
    for start in sorted(set(behind.values())):
        if start > end:  # a load ending before the marked rows (a late retry): they wait
            continue
        views = [name for name, since in behind.items() if since == start]
        log.info("%s: rows written after a load passed them, loading from %s", ", ".join(views), start)
        _load(store, "materialize", start_date=start, end_date=end + AFTER, feature_views=views)
        mark_loaded(data, read, views, start, end)


def _aware(at: datetime) -> datetime:
    """A time without a zone read as UTC (as Feast reads it)."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _load(store, method: str, **dates) -> None:
    """Feast's `method`, the online store made monotonic first; what Feast prints is logged."""
    monotonic_online_store(store)
    printed = io.StringIO()  # Feast prints each view (logged at INFO instead)
    with contextlib.redirect_stdout(printed):
        getattr(store, method)(**dates)
    log.info("feast %s:\n%s", method.replace("_", "-"), printed.getvalue().strip())


def training_frame(store, entities: pd.DataFrame, *, feature_service: str = TRAINING_SERVICE,
                   chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Features for each (user_id, item_id, event_timestamp) row, as known strictly before it.

    Rows come back in the entity frame's order with its other columns kept; list features are
    numpy arrays. For more rows than fit in memory, use `write_training_frame`.
    """
    frame = _entity_frame(entities).sort_values(["user_id", "event_timestamp"], kind="stable")
    table = pa.concat_tables(_feature_chunks(store, frame, feature_service, chunk_rows, []))
    table = table.sort_by("_row").drop_columns("_row")  # one sort, of the whole frame
    return table.to_pandas(timestamp_as_object=False)


def write_training_frame(store, entities: pd.DataFrame, folder: str | Path, *,
                         since: date | None = None, feature_service: str = TRAINING_SERVICE,
                         chunk_rows: int = CHUNK_ROWS) -> int:
    """Stream the training frame of the entity rows from day `since` on (UTC; None: all) into one
    parquet file per day, `folder/<YYYY-MM-DD>.parquet`, rows ordered by user and time; returns
    the rows written.

    The days from `since` on are replaced, each day's file appearing only once complete; earlier
    days' files are kept (all files are replaced when `since` is None), but for those of days
    without entity rows now (`drop_removed_days`). Memory stays bounded by one chunk.
    """
    folder = Path(folder)
    frame = _entity_frame(entities, since=since)
    days = frame["event_timestamp"].dt.floor("D")
    frame = frame.assign(_day=days.dt.strftime("%Y-%m-%d")).sort_values(
        ["_day", "user_id", "event_timestamp"], kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    with _DayFiles(folder) as files:
        for chunk in _feature_chunks(store, frame, feature_service, chunk_rows,
                                     ["_day", "user_id", "event_timestamp", "_row"]):
            day_column = chunk["_day"]
            chunk = chunk.drop_columns(["_row", "_day"])
            for day in pc.unique(day_column).to_pylist():
                files.write(day, chunk.filter(pc.equal(day_column, day)))
            rows += chunk.num_rows
    drop_removed_days(folder, entities)
    return rows


def drop_removed_days(folder: str | Path, entities: pd.DataFrame) -> list[str]:
    """Remove the training-frame files in `folder` of days without entity rows now: their events
    left the dataset (a deletion, a corrected export), so no table write marks them stale. Returns
    those days."""
    utc_days = entities["event_timestamp"].dt.tz_convert("UTC").dt.floor("D")  # as the files are named
    days = set(pd.DatetimeIndex(utc_days.unique()).strftime("%Y-%m-%d"))
    removed = sorted(p.stem for p in Path(folder).glob("????-??-??.parquet") if p.stem not in days)
    for day in removed:
        (Path(folder) / f"{day}.parquet").unlink()
    return removed


def stale_since(tables_dir: str | Path, folder: str | Path) -> date | None:
    """The first day whose training-frame file in `folder` is missing or older than the user
    history partition of that day in `tables_dir`, or than the last change of a profile its rows
    may have joined (`tables.profiles_changed`; None: every day is current).

    A day with events has a history partition, and a table write recomputes every day from its
    first change on, so the frame is current exactly from the day this returns on.
    """
    profiled = profiles_changed(tables_dir)
    history = table_path(tables_dir, "user_history")
    for part in sorted(history.glob("????-??-??.parquet")):
        made = Path(folder) / part.name
        if not made.is_file() or made.stat().st_mtime_ns < max(part.stat().st_mtime_ns, profiled):
            return date.fromisoformat(part.stem)
    return None


class _DayFiles:
    """One parquet file per day, written in day order; each appears (atomically) once its day
    is complete, and a failure leaves the unfinished day's previous file as it was."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._day: str | None = None
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> _DayFiles:
        return self

    def write(self, day: str, table: pa.Table) -> None:
        if day != self._day:
            self._finish()
            tmp = self._stack.enter_context(atomic_path(self.folder / f"{day}.parquet"))
            self._writer, self._day = pq.ParquetWriter(tmp, table.schema), day
        self._writer.write_table(table)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._stack.close()  # moves the day's file into place

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self._finish()
        else:  # the unfinished day's temporary file is removed
            if self._writer is not None:
                self._writer.close()
            self._stack.__exit__(kind, error, trace)


def example_entities(events: pd.DataFrame) -> pd.DataFrame:
    """The events' entity columns, and their labels where they have them: a training frame's rows
    (the columns themselves, not a copy of 10M rows that a day's join would mostly drop)."""
    return pd.DataFrame({c: events[c] for c in [*ENTITY_COLUMNS, *LABEL_COLUMNS] if c in events},
                        copy=False)


def _entity_frame(entities: pd.DataFrame, *, since: date | None = None) -> pd.DataFrame:
    """The entity rows checked (from day `since` on, UTC), in microseconds (what Feast's DuckDB
    store reads), numbered."""
    missing = [c for c in ENTITY_COLUMNS if c not in entities.columns]
    if missing:
        raise ValueError(f"entity frame: missing column {missing[0]!r}")
    if not isinstance(entities["event_timestamp"].dtype, pd.DatetimeTZDtype):
        raise ValueError("entity frame: column 'event_timestamp' must be tz-aware (UTC)")
    if since is not None:  # before the copy below: a new day is a sliver of all the events
        entities = entities[entities["event_timestamp"] >= pd.Timestamp(since, tz="UTC")]
    timestamps = entities["event_timestamp"]
    return entities.assign(event_timestamp=timestamps.astype("datetime64[us, UTC]"),
                           _row=range(len(entities)))


def _feature_chunks(store, frame: pd.DataFrame, feature_service: str, chunk_rows: int,
                    order_by: list[str]) -> Iterator[pa.Table]:
    """Feast's point-in-time join of the entity rows, `order_by` their columns (none: any order),
    `chunk_rows` rows at a time.

    The ASOF store joins every row at once and streams the result, reading each feature row once.
    Feast's own join holds its whole result in memory, so it runs over consecutive chunks of the
    (ordered) rows; DuckDB then skips the row groups of the (entity-sorted, day-partitioned)
    feature tables a chunk cannot need.
    """
    if frame.empty:
        return
    features = store.get_feature_service(feature_service)
    job = (store.get_historical_features(entity_df=frame, features=features)
           if store.config.offline_store.type == STORE_TYPE else None)
    if isinstance(job, SqlRetrievalJob):
        batches = job.batches(order_by, chunk_rows)
    else:
        batches = (store.get_historical_features(entity_df=frame.iloc[start:start + chunk_rows],
                                                 features=features).to_arrow()
                   for start in range(0, len(frame), chunk_rows))
        if order_by:
            batches = (table.sort_by([(c, "ascending") for c in order_by]) for table in batches)
    chunks = -(-len(frame) // chunk_rows)
    for table in tqdm(batches, desc="training frame", unit="chunk", total=chunks,
                      disable=chunks < 2 or not sys.stderr.isatty()):
        yield _fill_absent_arrow(table)


@functools.cache
def when_absent() -> dict[str, pa.Scalar]:
    """Feature name -> its value where no feature row precedes the lookup time.

    Read from the `WHEN_ABSENT` tags of the definitions' fields, typed as the field is.
    """
    from feast import FeatureView
    from feast.type_map import feast_value_type_to_pa as arrow_type

    from feature_repo.entities import WHEN_ABSENT

    modules = [importlib.import_module(f"feature_repo.{name}") for name in definition_modules(DEFINITIONS)]
    fields = [f for m in modules for v in vars(m).values() if isinstance(v, FeatureView) for f in v.features]
    return {f.name: pa.scalar(json.loads(f.tags[WHEN_ABSENT]), arrow_type(f.dtype.to_value_type()))
            for f in fields if WHEN_ABSENT in f.tags}


def _fill_absent_arrow(table: pa.Table) -> pa.Table:
    """Nulls where no row precedes the lookup time become the fields' `when_absent` values."""
    for name, fill in when_absent().items():
        if name in table.column_names:  # all-null columns come untyped: cast to the field's type
            column = pc.coalesce(table[name].cast(fill.type), fill)
            table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def online_user_features(store, user_ids: list[int]) -> pd.DataFrame:
    """The latest profile and history of each user from the online store."""
    response = store.get_online_features(features=store.get_feature_service(ONLINE_SERVICE),
                                         entity_rows=[{"user_id": int(u)} for u in user_ids])
    return _fill_absent_arrow(response.to_arrow()).to_pandas()
