"""Freshness without retraining: sensors on the stock log and the catalogue, and the jobs they start.

Files dropped in the inbox (`<data dir>/inbox/stock/` and `<data dir>/inbox/items/`, parquet or CSV)
reach the live version in seconds. Either way the writes go through the event log, as every write
does: with `TWOTOWER_SERVICE_URL` set, through the running service's HTTP API (it logs and applies
each at once); without it, logged here, and the engine applies them where it serves the live
version (a service replays what other processes logged on its next poll, a version switch or a
start replays what the version lacks). Each write's key is derived from the run's key, so a
re-executed run logs nothing twice.
"""

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import pandas as pd

from feature_repo.datasets.contract import DataError, check_non_negative, parse_ints
from feature_repo.datasets.generic import read_table
from feature_repo.files import atomic_path, locked
from index.catalogue import latest_rows
from pipelines.defs.resources import DatasetResource, EventLogResource, InboxResource, ServiceResource
from services.client import APIConnectionError, ServiceUnavailableError

SUFFIXES = (".parquet", ".csv")
# What reading an inbox file can raise: a bad value (DataError, naming file, column and row), a
# ragged CSV (pandas' ParserError is a ValueError), a truncated parquet (pyarrow's ArrowInvalid
# is too), an unreadable file or encoding
UNREADABLE = (DataError, ValueError, OSError, UnicodeError)
# What the service answers while it cannot take writes yet: a version loading or a dependency
# down (503), a restart (no connection), a stuck host (no answer; APITimeoutError is one)
UNAVAILABLE = (ServiceUnavailableError, APIConnectionError)


def read_inbox_file(path: Path, table: str) -> pd.DataFrame:
    """One inbox file of contract `table` rows ("stock" or "items", the latter with an optional
    `stock` column: a blank leaves the item's stock as it is), parsed as a dataset file is: a bad
    value fails the run naming file, column and row, before anything is logged."""
    frame = read_table(path, table)
    if table == "items" and "stock" in frame:
        given = frame["stock"].notna()
        frame["stock"] = parse_ints(frame["stock"][given], source=str(path), column="stock"
                                    ).reindex(frame.index).astype("Int64")
    # what a logged row must hold: one the tables refused would fail every later training run
    check_non_negative(frame, ["item_id", "quantity", "stock"])
    return frame


def _unreadable(path: Path, error: Exception) -> str:
    """Why a file was not read, naming it (a DataError names it, and its column and row)."""
    return str(error) if isinstance(error, DataError) else f"{path}: {error}"


def inbox_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in SUFFIXES) if folder.is_dir() else []


# -- stock -------------------------------------------------------------------------------------------

def unpushed(rows: pd.DataFrame, pushed: pd.Series) -> pd.DataFrame:
    """Each item's newest stock row (item_id, event_timestamp, quantity), where it is newer than
    the newest row of that item pushed before (`pushed`: item_id -> time). Files may arrive out of
    order: an item's older row never overwrites a newer quantity, and another item's is kept."""
    latest = latest_rows(rows)
    before = latest["item_id"].map(pushed)
    return latest[before.isna().to_numpy() | (latest["event_timestamp"] > before).to_numpy()]


def read_pushed(path: Path) -> pd.Series:
    """A pushed state (`pushed_rows`) as item_id -> time (empty before the first push)."""
    if not path.exists():
        return pd.Series(dtype="datetime64[us, UTC]", index=pd.Index([], dtype="int64", name="item_id"),
                         name="event_timestamp")
    return pd.read_parquet(path).set_index("item_id")["event_timestamp"]


@contextmanager
def pushed_rows(path: Path) -> Iterator[tuple[pd.Series, Callable[[pd.DataFrame], None]]]:
    """The newest pushed row time per item kept at `path`, and a function to record rows
    (item_id, event_timestamp) as pushed; what was recorded is written back (atomically) when the
    block ends, even by an error, so a push that failed part way keeps the items it wrote. A lock
    keeps concurrent runs in turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        pushed, added = read_pushed(path), []
        try:
            yield pushed, added.append
        finally:
            if added:
                rows = pd.concat([pushed.reset_index(),
                                  *(a[["item_id", "event_timestamp"]] for a in added)], ignore_index=True)
                newest = rows.groupby("item_id", as_index=False)["event_timestamp"].max()
                with atomic_path(path) as tmp:
                    newest.astype({"item_id": "int64", "event_timestamp": "datetime64[us, UTC]"}
                                  ).to_parquet(tmp, index=False)


@contextmanager
def retried_while_unavailable(context: dg.OpExecutionContext, service: ServiceResource) -> Iterator[None]:
    """A write the service still cannot take after the client's own retries (503, no connection,
    no answer) has the step retried later (`ServiceResource.step_retries`, the wait doubling from
    `step_retry_wait_s`) with the same config and write keys, so a longer outage delays the rows
    rather than dropping them; any other error fails the run."""
    try:
        yield
    except UNAVAILABLE as error:
        wait = service.step_retry_wait_s * 2 ** context.retry_number
        if context.retry_number < service.step_retries:
            context.log.warning("service unavailable (%s); retry %d of %d in %.0f s", error,
                                context.retry_number + 1, service.step_retries, wait)
        raise dg.RetryRequested(max_retries=service.step_retries, seconds_to_wait=wait) from error


def _seed_pushed(inbox: InboxResource, files: list[Path], newest: pd.Timestamp) -> None:
    """Before per-item state, the sensor kept only the newest row time it had pushed: take each
    item's newest row up to it in the files it had handled as pushed, so no older row overwrites
    it after the upgrade."""
    rows = []
    for path in files:
        with suppress(DataError):  # a bad file was never pushed
            rows.append(read_inbox_file(path, "stock"))
    with pushed_rows(inbox.stock_pushed) as (pushed, record):
        if rows and pushed.empty:
            every = pd.concat(rows, ignore_index=True)
            record(every[every["event_timestamp"] <= newest])


class StockPushConfig(dg.Config):
    quantities: dict[str, int]  # item id (as text: JSON keys) -> new quantity
    # item id -> its row's time (ISO 8601): a row not newer than one pushed before is left out. An
    # item without a stamp (a run asked for before stamps) is pushed as it is.
    stamps: dict[str, str] = {}


@dg.op
def push_stock_quantities(context: dg.OpExecutionContext, config: StockPushConfig, dataset: DatasetResource,
                          event_log: EventLogResource, service: ServiceResource,
                          inbox: InboxResource) -> None:
    """New quantities for the online store and the live index payload (no retraining); an item
    whose newer row was pushed meanwhile (by a later run that ran first) keeps that one."""
    rows = pd.DataFrame({"item_id": [int(k) for k in config.quantities],
                         "quantity": list(config.quantities.values()),
                         "event_timestamp": pd.to_datetime([config.stamps.get(k) for k in config.quantities],
                                                           utc=True, format="ISO8601")})
    stamped = rows["event_timestamp"].notna()
    batch = _batch(context)
    with retried_while_unavailable(context, service), pushed_rows(inbox.stock_pushed) as (pushed, record):
        through = _through_service(service, dataset)
        fresh = pd.concat([unpushed(rows[stamped], pushed), rows[~stamped]], ignore_index=True)
        quantities = dict(zip(fresh["item_id"].tolist(), fresh["quantity"].tolist(), strict=True))
        written: list[int] = []
        try:
            if through:
                unknown = service.set_stock(quantities, batch=batch, written=written.append)
                if unknown:
                    context.log.warning("stock of %d items the catalogue does not hold left out "
                                        "(refused by the service, not logged): item_id %s",
                                        len(unknown), ", ".join(map(str, unknown[:20])))
            else:
                with event_log.open() as log:
                    for item_id, quantity in quantities.items():
                        log.record(f"{batch}:stock:{item_id}", "stock",
                                   {"item_id": item_id, "quantity": int(quantity)},
                                   dataset=dataset.fingerprint)
                        written.append(item_id)
        finally:
            record(fresh[fresh["item_id"].isin(written) & fresh["event_timestamp"].notna()])
    context.log.info("pushed stock of %d items (%s)%s", len(quantities),
                     "through the service" if through else "into the event log",
                     f"; {len(rows) - len(fresh)} not newer than a row pushed before, left out"
                     if len(fresh) < len(rows) else "")


@dg.job(description="Push new stock quantities to the live index payload and the online store.")
def stock_update_job() -> None:
    push_stock_quantities()


@dg.sensor(job=stock_update_job, minimum_interval_seconds=30)
def stock_log_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource):
    """Each item's newest stock row, where newer than the newest row of that item pushed so far
    (`pushed_rows`), becomes one stock update run.

    The cursor keeps each file's size and mtime, so a tick reads only the files that are new or
    have changed since, not the whole inbox.
    """
    cursor = json.loads(context.cursor) if context.cursor else {"files": {}}
    files = {p.name: p for p in inbox_files(inbox.stock_dir)}
    stats = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name, p in files.items()}
    changed = [files[name] for name, stat in stats.items() if cursor["files"].get(name) != stat]
    if cursor.get("newest") and not inbox.stock_pushed.exists():  # a cursor from before the state
        handled = [path for path in files.values() if path not in changed]
        _seed_pushed(inbox, handled, pd.Timestamp(cursor["newest"]))
    if not changed:
        return dg.SkipReason(f"no new or changed stock files in {inbox.stock_dir}")
    frames = []
    for path in changed:
        try:
            frames.append(read_inbox_file(path, "stock"))
        except UNREADABLE as error:  # an empty, bad or half-written file: read again once it changes
            context.log.warning("stock file skipped: %s", _unreadable(path, error))
    context.update_cursor(json.dumps({"files": stats}))
    if not frames:
        return dg.SkipReason("no readable stock rows in the new or changed files")
    fresh = unpushed(pd.concat(frames, ignore_index=True), read_pushed(inbox.stock_pushed))
    if fresh.empty:
        return dg.SkipReason("no stock row newer than its item's last pushed one")
    keys = [str(i) for i in fresh["item_id"]]
    return dg.RunRequest(
        run_key=_run_key("stock", {path.name: stats[path.name] for path in changed}),
        run_config={"ops": {"push_stock_quantities": {"config": {
            "quantities": dict(zip(keys, fresh["quantity"].astype(int).tolist(), strict=True)),
            "stamps": dict(zip(keys, (t.isoformat() for t in fresh["event_timestamp"]), strict=True)),
        }}}})


# -- catalogue ---------------------------------------------------------------------------------------

class NewItemsConfig(dg.Config):
    files: list[str]  # inbox files of new items (contract item columns, optional `stock`)


@dg.op
def upsert_new_items(context: dg.OpExecutionContext, config: NewItemsConfig, dataset: DatasetResource,
                     event_log: EventLogResource, service: ServiceResource, inbox: InboxResource) -> None:
    """New items, embedded from content by the live item tower and upserted into the live version.

    Each row is as new as its file (its mtime): an item whose row from a newer file was pushed
    meanwhile (by a later run that ran first, or before this run's retry) keeps that one."""
    items = pd.concat([stamped_items(Path(p)) for p in config.files], ignore_index=True)
    if "created_at" not in items:  # none given: created when logged, as the service's default
        items["created_at"] = pd.NaT
    if "stock" not in items:  # none given: each item's stock stays as it is (0 for a new one)
        items["stock"] = pd.NA
    batch = _batch(context)
    with retried_while_unavailable(context, service), pushed_rows(inbox.items_pushed) as (pushed, record):
        through = _through_service(service, dataset)
        fresh = unpushed(items, pushed)
        # A file's rows are keyed by its version too: a retry that reads a changed file sends its
        # new rows as new writes, not as other bodies under the first ones' keys
        keys = [f"{batch}:item:{row.item_id}:{row.event_timestamp.value // 1000}"
                for row in fresh.itertuples()]
        upserts = [{"item_id": int(row.item_id), "title": str(row.title),
                    "categories": list(row.categories),
                    "price": None if pd.isna(row.price) else float(row.price),
                    "created_at": None if pd.isna(row.created_at) else row.created_at.isoformat(),
                    "stock": None if pd.isna(row.stock) else int(row.stock)}
                   for row in fresh.itertuples()]
        written: list[int] = []
        try:
            if through:
                service.upsert_items(upserts, keys, written=written.append)
            else:
                with event_log.open() as log:
                    for key, upsert in zip(keys, upserts, strict=True):
                        log.record(key, "item", upsert, dataset=dataset.fingerprint)
                        written.append(upsert["item_id"])
        finally:
            record(fresh[fresh["item_id"].isin(written)])
    context.log.info("upserted %d items (%s)%s", len(fresh),
                     "through the service" if through else "into the event log",
                     f"; {items['item_id'].nunique() - len(fresh)} with a newer row pushed before, "
                     "left out" if items["item_id"].nunique() > len(fresh) else "")


def stamped_items(path: Path) -> pd.DataFrame:
    """An items file's rows, each stamped (`event_timestamp`) with the file's mtime taken before it
    is read: a file changing meanwhile is read again under its newer mtime, never the reverse."""
    mtime = pd.Timestamp(path.stat().st_mtime_ns, unit="ns", tz="UTC").floor("us")
    return read_inbox_file(path, "items").assign(event_timestamp=mtime)


@dg.job(description="Embed new catalogue items with the live item tower and upsert them into the live index.")
def new_items_job() -> None:
    upsert_new_items()


@dg.sensor(job=new_items_job, minimum_interval_seconds=30)
def catalogue_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource):
    """Readable item files new or changed since handled (the cursor keeps each one's size and
    mtime, so a daily export under the same name is read again) become one upsert run; a bad one
    is skipped with a warning, not holding back the others, and read again once it changes."""
    paths = {p.name: p for p in inbox_files(inbox.items_dir)}
    stats = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name, p in paths.items()}
    seen = json.loads(context.cursor) if context.cursor else {}
    if isinstance(seen, list):  # a cursor of names only (before sizes and mtimes): as they are now
        seen = {name: stats.get(name) for name in seen}
    new = [name for name, stat in stats.items() if seen.get(name) != stat]
    if not new:
        return dg.SkipReason(f"no new or changed item files in {inbox.items_dir}")
    readable = []
    for name in new:
        try:
            read_inbox_file(paths[name], "items")
            readable.append(name)
        except UNREADABLE as error:
            context.log.warning("item file skipped: %s", _unreadable(paths[name], error))
    context.update_cursor(json.dumps({**seen, **{name: stats[name] for name in new}}))
    if not readable:
        return dg.SkipReason("no readable item files among the new or changed ones")
    return dg.RunRequest(run_key=_run_key("items", {name: stats[name] for name in readable}),
                         run_config={"ops": {"upsert_new_items": {"config": {
                             "files": [str(paths[name].resolve()) for name in readable]}}}})


def _through_service(service: ServiceResource, dataset: DatasetResource) -> bool:
    """Whether writes go through the running service (one serves this dataset's model), else only
    into the event log, tagged with the dataset (they reach its next training and version)."""
    return bool(service.url) and service.serves(dataset.fingerprint)


def _run_key(kind: str, files: dict[str, list[int]]) -> str:
    """One key per set of file states (name, size, mtime): short, since each write's idempotency
    key starts with it (at most 200 characters), however many files changed."""
    digest = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


def _batch(context: dg.OpExecutionContext) -> str:
    """The run's key (the sensor's, kept by a re-execution), else its id: one write id per item."""
    return context.run.tags.get("dagster/run_key") or context.run_id
