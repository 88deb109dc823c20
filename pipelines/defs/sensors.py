"""Freshness without retraining: sensors on the stock log and the catalogue, and the jobs they start.

Files dropped in the inbox (`<data dir>/inbox/stock/` and `<data dir>/inbox/items/`, parquet or CSV)
reach the live version in seconds. Either way the writes go through the event log, as every write
does: with `TWOTOWER_SERVICE_URL` set, through the running service's HTTP API (it logs and applies
each at once); without it, or while the service cannot take them, logged here, and the engine
applies them where it serves the live version (a service replays what other processes logged on
its next poll, a version switch or a start replays what the version lacks). Each write's key is
derived from the run's key, so a re-executed run logs nothing twice.
"""

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import dagster as dg
import pandas as pd
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import OperationalError

from feature_repo.datasets.contract import DataError, check_non_negative, parse_ints
from feature_repo.datasets.generic import read_table
from feature_repo.files import atomic_path, locked
from index.catalogue import latest_rows
from pipelines.defs.resources import DatasetResource, EventLogResource, InboxResource, ServiceResource
from services.client import APIConnectionError, ServiceUnavailableError
from services.schemas import ItemUpsert

SUFFIXES = (".parquet", ".csv")
# What reading an inbox file can raise: a bad value (DataError, naming file, column and row), a
# ragged CSV (pandas' ParserError is a ValueError), a truncated parquet (pyarrow's ArrowInvalid
# is too), an unreadable file or encoding
UNREADABLE = (DataError, ValueError, OSError, UnicodeError)
# What the service answers while it cannot take writes yet: a version loading or a dependency
# down (503; a gateway's 502 or 504), a restart (no connection), a stuck host (no answer;
# APITimeoutError is one)
UNAVAILABLE = (ServiceUnavailableError, APIConnectionError)
# An inbox file's item rows, validated as the service validates an upsert
UPSERTS = TypeAdapter(list[ItemUpsert])
# What the event log raises while it cannot be written: its database down, unreachable or locked
LOG_UNAVAILABLE = (OperationalError,)
# A pushed state's columns (`pushed_rows`)
PUSHED_DTYPES = {"item_id": "int64", "event_timestamp": "datetime64[us, UTC]", "digest": "string"}
# The inbox jobs' runs carry it; deploy/dagster.yaml lets one such run go at a time, so a run that
# waits out an outage holds back no other job's run, and the runs go in the order asked for
INBOX_TAG = {"twotower/inbox": "writes"}


def read_inbox_file(path: Path, table: str) -> pd.DataFrame:
    """One inbox file of contract `table` rows ("stock" or "items", the latter with an optional
    `stock` column: a blank leaves the item's stock as it is, and each row's `upsert` body added),
    parsed as a dataset file is: a bad value fails the run naming file, column and row, before
    anything is logged."""
    frame = read_table(path, table)
    if table == "items" and "stock" in frame:
        given = frame["stock"].notna()
        frame["stock"] = parse_ints(frame["stock"][given], source=str(path), column="stock"
                                    ).reindex(frame.index).astype("Int64")
    # what a logged row must hold: one the tables refused would fail every later training run
    check_non_negative(frame, ["item_id", "quantity", "stock"])
    if table == "items":
        frame["upsert"] = _upserts(frame, str(path))
    return frame


def _upserts(items: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    """Each item row as the service logs its upsert: the `item_id` and an `ItemUpsert`, validated
    as the service validates it (a bad row a DataError naming it). No `created_at` column, or no
    `stock` (the column or a blank cell), leaves the item's own as they are (for a new item:
    created when logged, none in stock), as the service's `PUT /v1/items/{id}` does when they are
    left out."""
    fields = list(ItemUpsert.model_fields)
    columns = [items[f].astype(object).where(items[f].notna(), None).tolist() if f in items
               else [None] * len(items) for f in fields]
    rows = [dict(zip(fields, values, strict=True)) for values in zip(*columns, strict=True)]
    try:
        upserts = UPSERTS.validate_python(rows)
    except ValidationError as error:
        first = error.errors()[0]
        position, column = first["loc"][:2]
        label = items.index[position]  # numbered as `read_table` numbers rows
        row = (int(label) if pd.api.types.is_integer_dtype(items.index) else position) + 1
        raise DataError(source, f"item_id {items['item_id'].iloc[position]}: {first['msg']}",
                        column=str(column), row=row) from None
    return [{"item_id": int(i), **body} for i, body in
            zip(items["item_id"], UPSERTS.dump_python(upserts, mode="json"), strict=True)]


def _unreadable(path: Path, error: Exception) -> str:
    """Why a file was not read, naming it (a DataError names it, and its column and row)."""
    return str(error) if isinstance(error, DataError) else f"{path}: {error}"


def inbox_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in SUFFIXES) if folder.is_dir() else []


# -- stock -------------------------------------------------------------------------------------------

def unpushed(rows: pd.DataFrame, pushed: pd.DataFrame) -> pd.DataFrame:
    """Each item's newest row (item_id, event_timestamp, ...), where it is newer than the newest
    row of that item pushed before (`read_pushed`), or as new with another `digest` (rows that
    carry one: two item files of the same mtime). Files may arrive out of order: an item's older
    row never overwrites a newer one, and another item's is kept."""
    latest = latest_rows(rows).reset_index(drop=True)
    before = pushed.reindex(latest["item_id"]).reset_index(drop=True)
    time, pushed_time = latest["event_timestamp"], before["event_timestamp"]
    newer = pushed_time.isna() | (time > pushed_time)
    if "digest" in latest:
        differs = latest["digest"].astype(str).to_numpy() != before["digest"].fillna("").astype(str)
        newer |= (time == pushed_time) & differs
    return latest[newer.to_numpy()]


def read_pushed(path: Path) -> pd.DataFrame:
    """A pushed state (`pushed_rows`), indexed by item_id: the newest pushed row's
    `event_timestamp` (and `digest`, if its rows carry one); empty before the first push."""
    rows = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    return _as_pushed(rows).set_index("item_id")


def _as_pushed(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in a pushed state's columns and types (`digest` empty where they carry none)."""
    return rows.reindex(columns=list(PUSHED_DTYPES)).astype(PUSHED_DTYPES)


@contextmanager
def pushed_rows(path: Path) -> Iterator[tuple[pd.DataFrame, Callable[[pd.DataFrame], None]]]:
    """The newest pushed row per item kept at `path` (`read_pushed`), and a function to record
    rows (item_id, event_timestamp, optional digest) as pushed; what was recorded is written back
    (atomically) when the block ends, even by an error, so a push that failed part way keeps the
    items it wrote. A lock keeps concurrent runs in turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        pushed, added = read_pushed(path), []
        try:
            yield pushed, added.append
        finally:
            if any(len(frame) for frame in added):
                frames = [_as_pushed(frame) for frame in (pushed.reset_index(), *added) if len(frame)]
                with atomic_path(path) as tmp:
                    latest_rows(pd.concat(frames, ignore_index=True)).to_parquet(tmp, index=False)


@contextmanager
def retried_while_unavailable(context: dg.OpExecutionContext, event_log: EventLogResource) -> Iterator[None]:
    """A write the event log cannot take (its database down, unreachable or locked) has the step
    retried later (`EventLogResource.step_retries`, the wait doubling from `step_retry_wait_s` up
    to `step_retry_wait_max_s`) with the same config and write keys, so a longer outage delays the
    rows rather than dropping them; any other error fails the run. The run keeps its slot while it
    waits: the inbox jobs share one (`INBOX_TAG`)."""
    try:
        yield
    except LOG_UNAVAILABLE as error:
        wait = min(event_log.step_retry_wait_s * 2 ** context.retry_number, event_log.step_retry_wait_max_s)
        if context.retry_number < event_log.step_retries:
            context.log.warning("event log unavailable (%s); retry %d of %d in %.0f s", error,
                                context.retry_number + 1, event_log.step_retries, wait)
        raise dg.RetryRequested(max_retries=event_log.step_retries, seconds_to_wait=wait) from error


@dataclass
class Writer:
    """Where a run's writes go: through the running service while it serves the pipeline's dataset
    and takes them (`through_service`); else, and from the first write it cannot take on, into
    the event log, tagged with the dataset: the service replays them once it can, and the next
    training reads them."""

    context: dg.OpExecutionContext
    service: ServiceResource
    event_log: EventLogResource
    dataset: DatasetResource
    through_service: bool

    @classmethod
    def of_run(cls, context: dg.OpExecutionContext, service: ServiceResource,
               event_log: EventLogResource, dataset: DatasetResource) -> Self:
        """Through the service if one is set, answers and serves this dataset's model."""
        through = bool(service.url)
        if through:
            try:
                through = service.serves(dataset.fingerprint)
                if not through:
                    context.log.warning("the service serves another dataset's model: writes go into "
                                        "the event log, for this dataset's next version")
            except UNAVAILABLE as error:
                context.log.warning("service unavailable (%s): writes go into the event log, "
                                    "which it replays", error)
                through = False
        return cls(context, service, event_log, dataset, through)

    def write(self, kind: Literal["stock", "item"], writes: list[tuple[str, dict[str, Any]]], *,
              written: Callable[[int], None]) -> list[int]:
        """Each (key, body) write in order; `written(item_id)` after each one taken. Returns the
        items whose stock the service refused (the catalogue lacks them: not logged).

        A write the service cannot take after its client's retries (`UNAVAILABLE`) goes into the
        log with the rest of the run's writes, under the same keys: one the service logged
        without answering is found there, not logged twice."""
        sent, unknown = 0, []
        if not writes:
            return unknown
        if self.through_service:
            try:
                for taken in self.service.send(kind, writes):
                    item_id = writes[sent][1]["item_id"]
                    if taken:
                        written(item_id)
                    else:
                        unknown.append(item_id)
                    sent += 1
            except UNAVAILABLE as error:
                self.through_service = False
                self.context.log.warning("service unavailable (%s): this run's %d %s writes left "
                                         "go into the event log, which it replays",
                                         error, len(writes) - sent, kind)
        if sent < len(writes):
            with self.event_log.open() as log:
                for key, body in writes[sent:]:
                    log.record(key, kind, body, dataset=self.dataset.fingerprint)
                    written(body["item_id"])
        self.context.log.info("%d %s writes: %d through the service, %d into the event log",
                              len(writes), kind, sent, len(writes) - sent)
        return unknown


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
    batch = _batch(context)
    rows = pd.DataFrame({"item_id": [int(k) for k in config.quantities],
                         "quantity": list(config.quantities.values()),
                         "event_timestamp": pd.to_datetime([config.stamps.get(k) for k in config.quantities],
                                                           utc=True, format="ISO8601"),
                         "key": [f"{batch}:stock:{k}" for k in config.quantities]})
    with retried_while_unavailable(context, event_log), pushed_rows(inbox.stock_pushed) as state:
        _push_stock(context, rows, *state, Writer.of_run(context, service, event_log, dataset))


def _push_stock(context: dg.OpExecutionContext, rows: pd.DataFrame, pushed: pd.DataFrame,
                record: Callable[[pd.DataFrame], None], writer: Writer) -> None:
    """Each item's stock row of `rows` (item_id, event_timestamp (NaT: a run asked for before
    stamps, pushed as it is), quantity, its write's key, optional digest) newer than the newest
    of that item pushed before (the stock state, held: `pushed_rows`), written by `writer`."""
    stamped = rows["event_timestamp"].notna()
    fresh = pd.concat([unpushed(rows[stamped], pushed), rows[~stamped]], ignore_index=True)
    written: list[int] = []
    try:
        unknown = writer.write("stock", [
            (row.key, {"item_id": int(row.item_id), "quantity": int(row.quantity)})
            for row in fresh.itertuples()], written=written.append)
        if unknown:
            context.log.warning("stock of %d items the catalogue does not hold left out "
                                "(refused by the service, not logged): item_id %s",
                                len(unknown), ", ".join(map(str, unknown[:20])))
    finally:
        record(fresh[fresh["item_id"].isin(written) & fresh["event_timestamp"].notna()])
    if len(fresh) < len(rows):
        context.log.info("stock of %d items not newer than a row pushed before, left out",
                         len(rows) - len(fresh))


@dg.job(description="Push new stock quantities to the live index payload and the online store.",
        tags=INBOX_TAG)
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
    stats = {name: stat for name, p in files.items() if (stat := file_stat(p)) is not None}
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
    # path -> [size, mtime_ns] as the sensor read it: a file changed or gone since is left to the
    # run the sensor asks for it next. A file without (a run asked for before) is read as it is.
    stats: dict[str, list[int]] = {}


@dg.op
def upsert_new_items(context: dg.OpExecutionContext, config: NewItemsConfig, dataset: DatasetResource,
                     event_log: EventLogResource, service: ServiceResource, inbox: InboxResource) -> None:
    """New items, embedded from content by the live item tower and upserted into the live version.

    Each row is as new as its file (its mtime): an item whose row from a newer file was pushed
    meanwhile (by a later run that ran first, or before this run's retry) keeps that one; of two
    files as new, the one pushed last."""
    frames = [rows for p in config.files
              if (rows := _as_the_sensor_read(context, Path(p), config.stats.get(p))) is not None]
    if not frames:
        context.log.info("no items file as the sensor read it: nothing upserted")
        return
    items = pd.concat(frames, ignore_index=True)
    items["stock"] = [u["stock"] for u in items["upsert"]]  # None where left as it is
    items["digest"] = [hashlib.sha256(json.dumps(u, sort_keys=True).encode()).hexdigest()[:16]
                       for u in items["upsert"]]
    batch = _batch(context)
    # The locks are held while the client retries (up to a minute, a few against a host that
    # takes no connection): other inbox runs wait their turn, as they would for the service
    with retried_while_unavailable(context, event_log), pushed_rows(inbox.items_pushed) as (pushed, record), \
            pushed_rows(inbox.stock_pushed) as (stock_pushed, record_stock):
        writer = Writer.of_run(context, service, event_log, dataset)
        fresh = unpushed(items, pushed)
        # A file's stock is a stock row as of its mtime: an item upserted here carries it when
        # no newer stock row was pushed (one write, as the service applies an upsert); else it
        # keeps its stock. The stock of an item not upserted with it (a newer row of the item,
        # here or pushed before, left it blank) is pushed after, as a stock write.
        stock = unpushed(items[items["stock"].notna()], stock_pushed)
        carried = fresh["digest"].isin(stock["digest"]).to_numpy()
        bodies = [u if c else {**u, "stock": None} for u, c in zip(fresh["upsert"], carried, strict=True)]
        # Keyed by what is sent: a retry sends what it sent before under the same keys, and an
        # item whose row or stock changed since as a new write
        keys = [f"{batch}:item:{row.item_id}:{row.digest}{'' if c else ':kept'}"
                for row, c in zip(fresh.itertuples(), carried, strict=True)]
        written: list[int] = []
        try:
            writer.write("item", list(zip(keys, bodies, strict=True)), written=written.append)
        finally:
            done = fresh["item_id"].isin(written).to_numpy()
            record(fresh[done])
            record_stock(fresh[done & carried])
        if left_out := items["item_id"].nunique() - len(fresh):
            context.log.info("%d items with a row as new pushed before, left out", left_out)
        rest = stock[~stock["digest"].isin(fresh["digest"][carried])]
        if len(rest):
            _push_stock(context, rest.assign(
                quantity=rest["stock"].astype("int64"),
                key=[f"{batch}:stock:{i}:{d}" for i, d in zip(rest["item_id"], rest["digest"], strict=True)]),
                stock_pushed, record_stock, writer)


def _as_the_sensor_read(context: dg.OpExecutionContext, path: Path, seen: list[int] | None
                        ) -> pd.DataFrame | None:
    """An items file's rows, each stamped (`event_timestamp`) with the file's mtime, if the file
    is as the sensor read it (`seen`: its size and mtime; None: as it is); else None, logged."""
    stat = file_stat(path)
    if seen is not None and stat != seen:
        context.log.warning("%s since the sensor read it: %s", path,
                            "gone, left out" if stat is None else "changed, left to the run it asks for next")
        return None
    try:
        rows = read_inbox_file(path, "items")
    except UNREADABLE:
        if file_stat(path) == stat:
            raise
        rows = None  # rewritten while read
    if file_stat(path) != stat:
        context.log.warning("%s changed while read: left to the run the sensor asks for next", path)
        return None
    return rows.assign(event_timestamp=pd.Timestamp(stat[1], unit="ns", tz="UTC").floor("us"))


def file_stat(path: Path) -> list[int] | None:
    """A file's [size, mtime in ns], the state the sensors key it by; None if it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


@dg.job(description="Embed new catalogue items with the live item tower and upsert them into the live index.",
        tags=INBOX_TAG)
def new_items_job() -> None:
    upsert_new_items()


@dg.sensor(job=new_items_job, minimum_interval_seconds=30)
def catalogue_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource):
    """Readable item files new or changed since handled (the cursor keeps each one's size and
    mtime, so a daily export under the same name is read again) become one upsert run; a bad one
    is skipped with a warning, not holding back the others, and read again once it changes."""
    paths = {p.name: p for p in inbox_files(inbox.items_dir)}
    stats = {name: stat for name, p in paths.items() if (stat := file_stat(p)) is not None}
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
    files = {str(paths[name].resolve()): stats[name] for name in readable}
    return dg.RunRequest(run_key=_run_key("items", {name: stats[name] for name in readable}),
                         run_config={"ops": {"upsert_new_items": {"config": {
                             "files": list(files), "stats": files}}}})


def _run_key(kind: str, files: dict[str, list[int]]) -> str:
    """One key per set of file states (name, size, mtime): short, since each write's idempotency
    key starts with it (at most 200 characters), however many files changed."""
    digest = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


def _batch(context: dg.OpExecutionContext) -> str:
    """The run's key (the sensor's, kept by a re-execution), else its id: one write id per item."""
    return context.run.tags.get("dagster/run_key") or context.run_id
