"""Stage 1, features: raw tables -> Feast tables -> `feast apply` -> training examples, online store.

The event-derived tables and the training examples are kept per day: a run recomputes only the days
from the first whose events changed (on a daily run, the new day) and keeps the rest.
"""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from feature_repo.datasets import Dataset, identity, stamp
from feature_repo.files import atomic_write
from feature_repo.store import (
    apply,
    drop_removed_days,
    example_entities,
    materialize,
    materialize_incremental,
    render_repo,
    stale_since,
    write_training_frame,
)
from feature_repo.tables import unloaded, write_feature_tables
from index.events import LATE_COMMITS, LOG_POSITION, log_position, log_seqs, unplaced, with_events
from index.home import check_home
from index.registry import Registry
from pipelines.defs.resources import (
    RAW_TABLES,
    DatasetResource,
    EventLogResource,
    FeatureStoreResource,
    RawTablesStore,
    RegistryResource,
)
from pipelines.defs.values import TrainingExamples

GROUP = "features"
TRAINING_EXAMPLES = "training_examples.parquet"  # a folder of day files, in the rendered repository's data/
# Beside the stored raw tables: the log position they reached, its event's key and the seqs of the
# stock they left out (`index.events.unplaced`)
LOG_MARK = "log.json"


@dg.asset(group_name=GROUP, kinds={"pandas"}, io_manager_key="raw_tables_store")
def raw_tables(context: dg.AssetExecutionContext, dataset: DatasetResource, event_log: EventLogResource,
               raw_tables_store: dg.ResourceParam[RawTablesStore]) -> dg.Output[Dataset]:
    """The dataset's four contract tables (interactions, items, users, stock log) plus every write
    the service logged (`index.events.with_events`), validated.

    A run extends the last run's tables with the writes logged since, while the dataset's files are
    unchanged and the log still holds what they hold; otherwise it loads the dataset again.
    """
    started = time.perf_counter()
    stored, mark = raw_tables_store.manifest(), raw_tables_store.folder / LOG_MARK
    with event_log.open() as log:
        noted = _extends(stored, mark, dataset, log) if stored else None
        base = raw_tables_store.stored() if noted is not None else None  # None: unreadable
        extend = base is not None
        if not extend:
            base = dataset.load()
        position = log_position(base)
        # Re-read a margin before the position: on PostgreSQL a lower seq can commit after a higher.
        logged = log.read(after=max(position - LATE_COMMITS, 0) if extend else 0)
        if extend:
            held = log_seqs(base, since=position - LATE_COMMITS)
            logged = [e for e in logged if e.seq not in held]
            # and the stock written ahead of its item, left out before: the item may be here now
            logged = sorted({e.seq: e for e in log.at(noted.get("unplaced", [])) + logged}.values(),
                            key=lambda e: e.seq)
        data = with_events(base, logged).validate()
        newest = log_position(data)
        key = log.key_at(newest) if newest else None
    if not extend:
        raw_tables_store.clear()  # tables stored from another source or log are not reused
    atomic_write(mark, json.dumps({"position": newest, "key": key,
                                   "unplaced": unplaced(data, logged)}) + "\n")
    context.log.info("%s: %d interactions (%d logged events read, %s)", data.name,
                     len(data.interactions), len(logged),
                     "extending the last run's tables" if extend else "dataset loaded")
    return dg.Output(data, metadata={
        "dataset": dataset.spec, "extended_last_run": extend, "logged_events_read": len(logged),
        LOG_POSITION: newest, **{f"{name}_rows": len(getattr(data, name)) for name in RAW_TABLES},
        "first_event": str(data.interactions["event_timestamp"].min()),
        "last_interaction": str(data.interactions["event_timestamp"].max()),
        "last_event": str(data.last_event),
        "seconds": round(time.perf_counter() - started, 2)})


def _extends(stored: dict, mark: Path, dataset: DatasetResource, log) -> dict | None:
    """What this asset noted of the stored raw tables when they can be extended (the same source,
    unchanged, and the log still the one they read: its event at their position has the key
    noted), else None."""
    try:
        noted = json.loads(mark.read_text())
    except (OSError, ValueError):
        return None
    position = stored["log_position"]
    if (stored["identity"], stored["source_stamp"]) != (identity(dataset.spec), stamp(dataset.spec)) \
            or noted.get("position") != position or log.position() < position:
        return None
    return noted if position == 0 or log.key_at(position) == noted["key"] else None


class FeatureTablesConfig(dg.Config):
    replace: bool = False  # True: overwrite another dataset's features that a live model serves
    rebuild: bool = False  # True: recompute every day, not only those whose events changed


@dg.asset(group_name=GROUP, kinds={"duckdb", "parquet"})
def feature_tables(context: dg.AssetExecutionContext, config: FeatureTablesConfig, raw_tables: Dataset,
                   feature_store: FeatureStoreResource,
                   registry: RegistryResource) -> dg.MaterializeResult:
    """The six point-in-time Feast source tables, written by DuckDB into the rendered repository:
    the static ones whole, the event-derived ones from the first day whose events changed.

    Refused when the home's live model serves another dataset (`index.home`), unless `replace`.
    """
    started = time.perf_counter()
    repo = render_repo(feature_store.config)
    versions = Registry(registry.url, data_dir=registry.data_dir)  # the database alone, no shard
    try:
        check_home(versions, repo / "data", raw_tables, replace=config.replace)
    finally:
        versions.close()
    update = write_feature_tables(raw_tables, repo / "data", rebuild=config.rebuild,
                                  history_length=feature_store.config.history_length)
    context.log.info("feature tables: %d days recomputed from %s, %d kept", len(update.days),
                     update.since, update.kept_days)
    return dg.MaterializeResult(metadata={
        "repository": dg.MetadataValue.path(str(repo)),
        "days_recomputed": len(update.days), "days_kept": update.kept_days,
        "recomputed_from": str(update.since), "recomputed_to": str(update.days[-1] if update.days else None),
        **{f"{table}_rows_written": rows for table, rows in update.rows.items()},
        "seconds": round(time.perf_counter() - started, 2)})


@dg.asset(group_name=GROUP, deps=[feature_tables], kinds={"feast"})
def feature_repository(feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    """The applied Feast repository (`feast apply`): entities, feature views and services registered."""
    started = time.perf_counter()
    store = apply(feature_store.config.repo_dir)
    return dg.MaterializeResult(metadata={
        "feature_views": ", ".join(sorted(v.name for v in store.list_feature_views())),
        "feature_services": ", ".join(sorted(s.name for s in store.list_feature_services())),
        "seconds": round(time.perf_counter() - started, 2)})


@dg.asset(group_name=GROUP, deps=[feature_repository], kinds={"feast", "parquet"})
def training_examples(context: dg.AssetExecutionContext, raw_tables: Dataset,
                      feature_store: FeatureStoreResource) -> dg.Output[TrainingExamples]:
    """Every interaction with its features as known strictly before it (Feast's point-in-time join).

    The value names the folder (one parquet file per day, rows ordered by user and time) and the
    first day joined: only the days whose feature tables were recomputed since their file was
    written are joined again.
    """
    started = time.perf_counter()
    data = Path(feature_store.config.repo_dir) / "data"
    path = data / TRAINING_EXAMPLES
    if path.is_file():  # a single file, as written before examples were kept per day
        path.unlink()
    entities = example_entities(raw_tables.interactions)
    since = stale_since(data, path)
    if since is None:  # nothing to join; the days whose events are gone still go (a write does that)
        removed = drop_removed_days(path, entities)
        if removed:
            context.log.info("training examples of %d days whose events are gone removed: %s",
                             len(removed), ", ".join(removed))
    rows = 0 if since is None else write_training_frame(feature_store.open(), entities, path, since=since)
    context.log.info("%d training examples joined from %s in %s", rows, since, path)
    dataset = pq.ParquetDataset(path)
    return dg.Output(TrainingExamples(str(path), since if rows else None), metadata={
        "path": dg.MetadataValue.path(str(path)), "rows_joined": rows, "joined_from": str(since),
        "dagster/row_count": sum(f.count_rows() for f in dataset.fragments),
        "columns": ", ".join(dataset.schema.names), "seconds": round(time.perf_counter() - started, 2)})


class OnlineFeaturesConfig(dg.Config):
    """How far to load the online store: everything up to the last event, or only what is new."""

    incremental: bool = False  # True: `feast materialize-incremental` from the last run to `end`
    end: str | None = None  # ISO timestamp; None = the dataset's last event (or now, incremental)


@dg.asset(group_name=GROUP, deps=[feature_repository, raw_tables], kinds={"feast", "sqlite"})
def online_features(context: dg.AssetExecutionContext, config: OnlineFeaturesConfig,
                    raw_tables_store: dg.ResourceParam[RawTablesStore],
                    feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    """The online store loaded with the latest feature values (`feast materialize`). The raw
    tables are read only for their last event, when the config names no end."""
    started = time.perf_counter()
    if config.end is not None:
        end = datetime.fromisoformat(config.end)
    elif config.incremental:
        end = datetime.now(UTC)
    else:
        stored = raw_tables_store.manifest()
        if stored is None:
            raise ValueError(f"online_features: no raw tables in {raw_tables_store.folder}; "
                             "materialize raw_tables first, or set config end")
        end = datetime.fromisoformat(stored["last_event"])
    if end.tzinfo is None:
        raise ValueError(f"online_features config end={config.end!r}: needs a timezone (e.g. +00:00)")
    store = feature_store.open()
    behind = unloaded(Path(feature_store.config.repo_dir) / "data")  # rows written past a load's watermark
    if config.incremental:
        materialize_incremental(store, end)
    else:
        materialize(store, end)
    context.log.info("online store loaded up to %s", end)
    return dg.MaterializeResult(metadata={
        "end": end.isoformat(), "incremental": config.incremental,
        "tables_behind": ", ".join(sorted(behind)) or None,
        "online_store": feature_store.online_store, "seconds": round(time.perf_counter() - started, 2)})
