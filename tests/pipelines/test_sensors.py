"""The freshness sensors: new stock rows and new items are logged, and reach the live version without
retraining through the engine that serves it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd
import pytest
from dagster import RunRequest, SkipReason, build_sensor_context
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feature_repo.datasets.contract import DataError
from index import SearchFilters
from index.catalogue import latest_stock
from index.registry import ModelVersion
from pipelines.defs.resources import InboxResource, build_resources
from pipelines.defs.sensors import (
    _run_key,
    catalogue_sensor,
    new_items_job,
    pushed_rows,
    read_inbox_file,
    read_pushed,
    stock_log_sensor,
    stock_update_job,
    unpushed,
)
from services.engine import Engine
from towers.artifact import Artifact


def run_sensor(sensor, graph, cursor=None):
    resources = build_resources(graph.settings)
    context = build_sensor_context(cursor=cursor, resources={"inbox": resources["inbox"]},
                                   instance=graph.instance)
    return sensor(context), context.cursor


@contextmanager
def serving(graph) -> Iterator[tuple[Engine, object]]:
    """The engine over the live version, as a service or the demo opens it (with the registry)."""
    resources = build_resources(graph.settings)
    with resources["registry"].open() as registry:
        engine = Engine(store=resources["feature_store"].open(), backend=registry.backend,
                        registry=registry)
        assert engine.refresh()
        try:
            yield engine, registry
        finally:
            engine.close()


def logged(graph, *kinds: str) -> list:
    with build_resources(graph.settings)["event_log"].open() as log:
        return log.read(kinds=list(kinds))


def run_items(graph, key: str, *paths, stats: dict | None = None):
    """The items job on `paths` (as the sensor asks for it when `stats` are given), keyed `key`."""
    config = {"files": [str(p) for p in paths], **({"stats": stats} if stats else {})}
    return new_items_job.execute_in_process(
        run_config={"ops": {"upsert_new_items": {"config": config}}},
        resources=build_resources(graph.settings), instance=graph.instance,
        tags={"dagster/run_key": key})


def live_state(graph):
    """The live artifact and the number of model versions registered so far."""
    with build_resources(graph.settings)["registry"].open() as registry:
        model = registry.live_model()
        with Session(registry.engine) as session:
            models = session.scalar(select(func.count()).select_from(ModelVersion))
    return Artifact.load(model.location), models


def test_stock_sensor_hides_an_item_that_sold_out_without_a_new_model_version(graph):
    artifact, models_before = live_state(graph)
    items, stock = graph.dataset.items, latest_stock(graph.dataset.stock)
    candidate = items[items["item_id"].map(lambda i: stock.get(i, 0) > 0)].iloc[[0]]
    item_id = int(candidate["item_id"].iloc[0])
    vector = artifact.embed_items(candidate)[0]
    resources = build_resources(graph.settings)
    with resources["registry"].open() as registry:
        assert item_id in [h.item_id for h in registry.backend.search(vector, k=10)]
    inbox = resources["inbox"].stock_dir
    inbox.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": [item_id], "event_timestamp": [datetime.now(UTC).isoformat()],
                  "quantity": [0]}).to_csv(inbox / "sold-out.csv", index=False)

    request, cursor = run_sensor(stock_log_sensor, graph)
    assert isinstance(request, RunRequest)
    result = stock_update_job.execute_in_process(run_config=request.run_config, resources=resources,
                                                 instance=graph.instance)

    assert result.success
    assert [e.body for e in logged(graph, "stock")][-1] == {"item_id": item_id, "quantity": 0}
    assert logged(graph, "stock")[-1].dataset == graph.dataset.fingerprint
    with serving(graph) as (_, registry):
        assert item_id not in [h.item_id for h in registry.backend.search(vector, k=50)]
    online = resources["feature_store"].open().get_online_features(
        features=["item_stock:quantity"], entity_rows=[{"item_id": item_id}]).to_dict()
    assert online["quantity"] == [0]
    assert live_state(graph)[1] == models_before
    again, _ = run_sensor(stock_log_sensor, graph, cursor=cursor)
    assert isinstance(again, SkipReason), "rows already pushed are not pushed twice"

    # A late export: the sold-out item's older row is left out, another item's row is pushed.
    other = int(items["item_id"].iloc[-1])
    hour_ago = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).isoformat()
    pd.DataFrame({"item_id": [item_id, other], "event_timestamp": [hour_ago] * 2,
                  "quantity": [3, 6]}).to_csv(inbox / "late.csv", index=False)
    late, _ = run_sensor(stock_log_sensor, graph, cursor=cursor)
    assert late.run_config["ops"]["push_stock_quantities"]["config"]["quantities"] == {str(other): 6}
    stale = {"ops": {"push_stock_quantities": {"config": {  # a run asked for before the push
        "quantities": {str(item_id): 3, str(other): 6}, "stamps": {str(item_id): hour_ago,
                                                                   str(other): hour_ago}}}}}
    assert stock_update_job.execute_in_process(run_config=stale, resources=resources,
                                               instance=graph.instance).success
    assert [e.body for e in logged(graph, "stock")][-2:] == [
        {"item_id": item_id, "quantity": 0}, {"item_id": other, "quantity": 6}]

    # A push that fails part way keeps the items it wrote: a stale run after it cannot undo them.
    third, fourth = (int(i) for i in items["item_id"].iloc[-3:-1])
    now = pd.Timestamp.now(tz="UTC").isoformat()
    with resources["event_log"].open() as log:  # the key of fourth's write, taken by another write
        log.record("broken-run:stock:" + str(fourth), "stock", {"item_id": fourth, "quantity": 99},
                   dataset=graph.dataset.fingerprint)
    broken = {"ops": {"push_stock_quantities": {"config": {
        "quantities": {str(third): 1, str(fourth): 2}, "stamps": {str(third): now, str(fourth): now}}}}}
    failed = stock_update_job.execute_in_process(run_config=broken, resources=resources,
                                                 instance=graph.instance, raise_on_error=False,
                                                 tags={"dagster/run_key": "broken-run"})
    assert not failed.success
    stale["ops"]["push_stock_quantities"]["config"] = {"quantities": {str(third): 8},
                                                       "stamps": {str(third): hour_ago}}
    assert stock_update_job.execute_in_process(run_config=stale, resources=resources,
                                               instance=graph.instance).success
    assert [e.body for e in logged(graph, "stock")][-2:] == [
        {"item_id": fourth, "quantity": 99}, {"item_id": third, "quantity": 1}], "8 is left out"

    # A run asked for before stamps (its config has none) pushes as it is.
    unstamped = {"ops": {"push_stock_quantities": {"config": {"quantities": {str(third): 4}}}}}
    assert stock_update_job.execute_in_process(run_config=unstamped, resources=resources,
                                               instance=graph.instance).success
    assert logged(graph, "stock")[-1].body == {"item_id": third, "quantity": 4}


def test_catalogue_sensor_makes_a_new_item_retrievable_without_a_new_model_version(graph):
    artifact, models_before = live_state(graph)
    items = graph.dataset.items
    twin = items.iloc[[10]]
    new = twin.assign(item_id=int(items["item_id"].max()) + 1, title="A Brand New Film (2026)",
                      created_at=pd.Timestamp("2026-01-01", tz="UTC"), stock=4)
    new = new.assign(categories=new["categories"].map("|".join))
    resources = build_resources(graph.settings)
    inbox = resources["inbox"].items_dir
    inbox.mkdir(parents=True, exist_ok=True)
    new.to_csv(inbox / "new-film.csv", index=False)

    request, cursor = run_sensor(catalogue_sensor, graph)
    assert isinstance(request, RunRequest)
    result = new_items_job.execute_in_process(run_config=request.run_config, resources=resources,
                                              instance=graph.instance)

    assert result.success
    content = new.assign(categories=twin["categories"].to_numpy())
    vector = artifact.embed_items(content)[0]
    category = frozenset(twin["categories"].iloc[0][:1])
    assert logged(graph, "item")[-1].body["item_id"] == int(new["item_id"].iloc[0])
    assert logged(graph, "item")[-1].dataset == graph.dataset.fingerprint
    with serving(graph) as (engine, registry):
        hits = registry.backend.search(vector, k=5, filters=SearchFilters(categories=category))
        assert engine.similar(hits[0].item_id, k=1).items, "its content is read online"
    assert hits[0].item_id == int(new["item_id"].iloc[0]) and hits[0].stock == 4
    assert live_state(graph)[1] == models_before
    again, _ = run_sensor(catalogue_sensor, graph, cursor=cursor)
    assert isinstance(again, SkipReason), "a file is upserted once"


def test_an_items_file_run_after_a_newer_ones_run_leaves_the_newer_rows(graph):
    """Runs can end out of order (one retried while a later one ran): each item keeps the row of
    its newest file (by mtime), and the older file's other items are upserted."""
    resources = build_resources(graph.settings)
    folder = resources["inbox"].items_dir
    folder.mkdir(parents=True, exist_ok=True)
    lamp = int(graph.dataset.items["item_id"].max()) + 200
    monday, tuesday, copy = folder / "monday.csv", folder / "tuesday.csv", folder / "copy.csv"
    monday.write_text(f"item_id,title\n{lamp},Lamp\n{lamp + 1},Desk\n")
    tuesday.write_text(f"item_id,title\n{lamp},Brass Lamp\n")
    os.utime(monday, ns=(1_765_000_000_000_000_000,) * 2)
    os.utime(tuesday, ns=(1_765_086_400_000_000_000,) * 2)

    def titles():  # the last upsert of each of the two items, as the log orders them
        return {e.body["item_id"]: e.body["title"] for e in logged(graph, "item")
                if e.body["item_id"] in (lamp, lamp + 1)}

    assert run_items(graph, "items-tuesday", tuesday).success
    assert run_items(graph, "items-monday", monday).success
    assert titles() == {lamp: "Brass Lamp", lamp + 1: "Desk"}
    # A run without the sensor's stats reads a file as it is now: a newer version, sent as new
    # writes (its first version's write keys took other bodies)
    monday.write_text(f"item_id,title\n{lamp},Reading Lamp\n")
    assert run_items(graph, "items-monday", monday).success
    assert titles() == {lamp: "Reading Lamp", lamp + 1: "Desk"}
    # A file copied with its mtime (cp -p, tar, rsync -a) is as new: pushed when it differs
    copy.write_text(f"item_id,title\n{lamp},Desk Lamp\n")
    os.utime(copy, ns=(monday.stat().st_atime_ns, monday.stat().st_mtime_ns))
    assert run_items(graph, "items-copy", copy).success
    assert titles() == {lamp: "Desk Lamp", lamp + 1: "Desk"}
    count = len(logged(graph, "item"))
    assert run_items(graph, "items-copy-again", copy).success and len(logged(graph, "item")) == count
    # The sensor asked for the run with the files' states: one changed since is left to the run
    # it asks for next, the others beside it are upserted
    monday.write_text(f"item_id,title\n{lamp},Floor Lamp\n{lamp + 1},Writing Desk\n")
    stats = {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in (monday, tuesday)}
    tuesday.write_text(f"item_id,title\n{lamp + 1},Standing Desk\n")
    assert run_items(graph, "items-both", tuesday, monday, stats=stats).success
    assert titles() == {lamp: "Floor Lamp", lamp + 1: "Writing Desk"}


def test_an_items_files_stock_is_a_stock_row_as_of_its_mtime(graph):
    """Items and stock files can arrive in any order: the newer row of an item's stock wins,
    whichever kind of file it came in."""
    resources = build_resources(graph.settings)
    folder = resources["inbox"].items_dir
    folder.mkdir(parents=True, exist_ok=True)
    lamp = int(graph.dataset.items["item_id"].max()) + 300

    def push_stock(quantity, at):
        config = {"quantities": {str(lamp): quantity}, "stamps": {str(lamp): at}}
        return stock_update_job.execute_in_process(
            run_config={"ops": {"push_stock_quantities": {"config": config}}}, resources=resources,
            instance=graph.instance, tags={"dagster/run_key": f"stock-{quantity}"})

    def upsert(name, quantity, at):
        path = folder / name
        path.write_text(f"item_id,title,stock\n{lamp},Lamp,{quantity}\n")
        os.utime(path, ns=(pd.Timestamp(at).value,) * 2)
        return run_items(graph, f"items-{name}", path)

    assert push_stock(7, "2025-12-08T00:00:00Z").success
    assert upsert("monday.csv", 2, "2025-12-07T00:00:00Z").success  # older: its stock is left out
    assert upsert("wednesday.csv", 5, "2025-12-09T00:00:00Z").success
    assert push_stock(9, "2025-12-08T12:00:00Z").success  # older than Wednesday's file
    stock = [e.body["quantity"] if e.kind == "stock" else e.body["stock"]
             for e in logged(graph, "stock", "item") if e.body["item_id"] == lamp]
    assert stock == [7, None, 5], "Monday's upsert keeps the stock; Wednesday's sets it, as one write"

    # A newer file that leaves the stock blank upserts the item; an older file's stock in the
    # same run still counts, as a stock row of its own (it is newer than any pushed)
    older, newer = folder / "thursday.csv", folder / "friday.csv"
    older.write_text(f"item_id,title,stock\n{lamp},Lamp,3\n")
    newer.write_text(f"item_id,title,stock\n{lamp},Lamp in Brass,\n")
    os.utime(older, ns=(pd.Timestamp("2025-12-10T00:00:00Z").value,) * 2)
    os.utime(newer, ns=(pd.Timestamp("2025-12-11T00:00:00Z").value,) * 2)
    assert run_items(graph, "items-both-days", older, newer).success
    last = [(e.kind, e.body.get("title"), e.body.get("stock", e.body.get("quantity")))
            for e in logged(graph, "stock", "item") if e.body["item_id"] == lamp][-2:]
    assert last == [("item", "Lamp in Brass", None), ("stock", None, 3)]


def test_stock_sensor_reads_only_new_or_grown_files(tmp_path):
    inbox = InboxResource(data_dir=str(tmp_path))
    inbox.stock_dir.mkdir(parents=True)

    def tick(cursor):
        context = build_sensor_context(cursor=cursor, resources={"inbox": inbox})
        return stock_log_sensor(context), context.cursor

    def write(name, rows):
        pd.DataFrame(rows, columns=["item_id", "event_timestamp", "quantity"]).to_csv(
            inbox.stock_dir / name, index=False)

    write("a.csv", [(1, "2026-01-01T00:00:00Z", 5)])
    first, cursor = tick(None)
    assert first.run_config["ops"]["push_stock_quantities"]["config"]["quantities"] == {"1": 5}

    consumed = inbox.stock_dir / "a.csv"
    stat = consumed.stat()
    consumed.write_bytes(b"x" * stat.st_size)  # unreadable as stock rows, same size and mtime
    os.utime(consumed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    unchanged, cursor = tick(cursor)
    assert isinstance(unchanged, SkipReason), "a file already pushed is not read again"

    write("b.csv", [(2, "2025-12-31T00:00:00Z", 9), (3, "2026-01-02T00:00:00Z", 0)])
    second, _ = tick(cursor)
    assert second.run_config["ops"]["push_stock_quantities"]["config"]["quantities"] == {
        "2": 9, "3": 0}, "read a.csv again: only b.csv's rows, item 2's too though older than 1's"


def test_an_items_row_older_than_its_pushed_one_is_left_out_and_other_items_kept(tmp_path):
    inbox = InboxResource(data_dir=str(tmp_path))
    with pushed_rows(inbox.stock_pushed) as (pushed, record):
        assert pushed.empty
        record(pd.DataFrame({"item_id": [1, 2], "event_timestamp": pd.to_datetime(
            ["2026-01-02", "2026-01-01"], utc=True)}))
    assert pd.read_parquet(inbox.stock_pushed)["item_id"].dtype == "int64"
    late = pd.DataFrame({"item_id": [1, 1, 2, 3], "quantity": [7, 8, 4, 9],
                         "event_timestamp": pd.to_datetime(["2026-01-01 00:00", "2026-01-01 12:00",
                                                            "2026-01-03 00:00", "2025-06-01 00:00"],
                                                           utc=True)})
    with pushed_rows(inbox.stock_pushed) as (pushed, record):
        fresh = unpushed(late, pushed)
        assert fresh.set_index("item_id")["quantity"].to_dict() == {2: 4, 3: 9}
        record(fresh)
    assert read_pushed(inbox.stock_pushed)["event_timestamp"].to_dict() == {
        1: pd.Timestamp("2026-01-02", tz="UTC"), 2: pd.Timestamp("2026-01-03", tz="UTC"),
        3: pd.Timestamp("2025-06-01", tz="UTC")}
    with pytest.raises(RuntimeError), pushed_rows(inbox.stock_pushed) as (_, record):
        record(late[late["item_id"] == 3].assign(event_timestamp=pd.Timestamp("2027-01-01", tz="UTC")))
        raise RuntimeError("the push failed after item 3")
    assert read_pushed(inbox.stock_pushed)["event_timestamp"][3] == pd.Timestamp("2027-01-01", tz="UTC"), \
        "what was written counts"


def test_a_cursor_from_before_per_item_state_keeps_what_it_pushed(tmp_path):
    """The sensor kept one time, the newest row it pushed: an item's older row in a late file must
    not overwrite what was pushed then."""
    inbox = InboxResource(data_dir=str(tmp_path))
    inbox.stock_dir.mkdir(parents=True)
    (inbox.stock_dir / "a.csv").write_text("item_id,event_timestamp,quantity\n1,2026-01-02,0\n"
                                           "2,2026-01-01,5\n")
    stats = {"a.csv": [(inbox.stock_dir / "a.csv").stat().st_size,
                       (inbox.stock_dir / "a.csv").stat().st_mtime_ns]}
    old = json.dumps({"newest": "2026-01-02T00:00:00+00:00", "files": stats})
    (inbox.stock_dir / "late.csv").write_text("item_id,event_timestamp,quantity\n1,2026-01-01,7\n"
                                              "3,2025-12-01,2\n")
    request = stock_log_sensor(build_sensor_context(cursor=old, resources={"inbox": inbox}))
    assert request.run_config["ops"]["push_stock_quantities"]["config"]["quantities"] == {"3": 2}


def test_run_keys_are_short_and_name_each_files_size_and_mtime():
    many = {f"warehouse-{i:04d}-stock-export.csv": [1000 + i, 1765000000000000000] for i in range(50)}
    key = _run_key("stock", many)
    assert len(key) <= 40, "each write's idempotency key starts with it: at most 200 characters"
    grown = {**many, "warehouse-0000-stock-export.csv": [2000, 1765000000000000000]}  # same mtime
    assert _run_key("stock", grown) != key and _run_key("stock", dict(reversed(many.items()))) == key


def test_a_bad_item_file_is_skipped_naming_the_row_and_read_again_once_mended(graph, capsys):
    resources = build_resources(graph.settings)
    inbox = resources["inbox"].items_dir
    inbox.mkdir(parents=True, exist_ok=True)
    _, cursor = run_sensor(catalogue_sensor, graph)  # files other tests left: handled
    lamp = int(graph.dataset.items["item_id"].max()) + 100
    export = inbox / "export.csv"
    export.write_text(f"item_id,title,created_at\n{lamp},Lamp,2026-01-01\n{lamp + 1},Chair,soon\n")
    logged_before = len(logged(graph, "item"))

    skipped, cursor = run_sensor(catalogue_sensor, graph, cursor)
    assert isinstance(skipped, SkipReason)
    said = capsys.readouterr().err
    assert f"{export}, column 'created_at', row 2: cannot parse timestamp 'soon'" in said
    assert len(logged(graph, "item")) == logged_before, "nothing logged from a bad file"

    export.write_text(f"item_id,title\n{lamp},Lamp\n{lamp + 1},Chair\n")  # mended, same name
    request, _ = run_sensor(catalogue_sensor, graph, cursor)
    assert request.run_config["ops"]["upsert_new_items"]["config"]["files"] == [str(export.resolve())]
    assert new_items_job.execute_in_process(run_config=request.run_config, resources=resources,
                                            instance=graph.instance).success
    upserts = [e.body for e in logged(graph, "item")[logged_before:]]
    assert [(u["item_id"], u["title"], u["created_at"], u["stock"]) for u in upserts] == [
        (lamp, "Lamp", None, None), (lamp + 1, "Chair", None, None)]  # each its own, or new ones


def test_an_empty_or_bad_stock_file_is_skipped_and_the_others_are_pushed(tmp_path, capsys):
    inbox = InboxResource(data_dir=str(tmp_path))
    inbox.stock_dir.mkdir(parents=True)
    (inbox.stock_dir / "empty.csv").write_text("item_id,event_timestamp,quantity\n")  # a quiet day
    (inbox.stock_dir / "bad.csv").write_text("item_id,event_timestamp,quantity\n4,soon,1\n")
    (inbox.stock_dir / "good.csv").write_text("item_id,event_timestamp,quantity\n5,2026-01-01,2\n")
    context = build_sensor_context(resources={"inbox": inbox})
    request = stock_log_sensor(context)
    assert request.run_config["ops"]["push_stock_quantities"]["config"]["quantities"] == {"5": 2}
    said = capsys.readouterr().err
    assert "empty.csv: no rows" in said
    assert "bad.csv, column 'event_timestamp', row 1: cannot parse timestamp 'soon'" in said
    again = build_sensor_context(cursor=context.cursor, resources={"inbox": inbox})
    assert isinstance(stock_log_sensor(again), SkipReason), "skipped until they change"


@pytest.mark.parametrize(("table", "text", "error"), [
    ("items", "item_id,title\n3,Lamp\n-5,Chair\n", "column 'item_id', row 2: ids must be non-negative"),
    ("items", "item_id,title,stock\n3,Lamp,-1\n", "column 'stock', row 1: quantities must be non-neg"),
    ("stock", "item_id,event_timestamp,quantity\n3,2026-01-01,-2\n",
     "column 'quantity', row 1: quantities must be non-negative"),
    # what the service would refuse of an upsert: logged, no version could apply it
    ("items", f"item_id,title\n3,Lamp\n4,{'x' * 501}\n",
     "column 'title', row 2: item_id 4: String should have at most 500 characters"),
    ("items", "item_id,title,categories\n3,,lamps\n", "column 'title', row 1: item_id 3: Input should be"),
])
def test_an_inbox_row_the_tables_would_refuse_fails_naming_file_column_and_row(tmp_path, table,
                                                                              text, error):
    """Logged, such a row would fail every later training run's tables, or every replay."""
    path = tmp_path / "export.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}, {error}"):
        read_inbox_file(path, table)


def test_a_bad_item_row_of_a_parquet_file_with_its_own_index_is_named_by_position(tmp_path):
    path = tmp_path / "export.parquet"
    pd.DataFrame({"item_id": [3, 4], "title": ["Lamp", "x" * 501]},
                 index=pd.Index(["sku-a", "sku-b"], name="sku")).to_parquet(path)
    with pytest.raises(DataError, match=f"{path}, column 'title', row 2: item_id 4: String should"):
        read_inbox_file(path, "items")


def test_an_items_blank_stock_leaves_that_items_stock_as_it_is(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("item_id,title,stock\n3,Lamp,\n4,Chair,2\n")
    stock = read_inbox_file(path, "items")["stock"]
    assert stock.isna().tolist() == [True, False] and stock[1] == 2


def test_bad_or_half_written_item_files_do_not_hold_back_the_good_ones_beside_them(tmp_path,
                                                                                 capsys):
    inbox = InboxResource(data_dir=str(tmp_path))
    inbox.items_dir.mkdir(parents=True)
    (inbox.items_dir / "bad.csv").write_text("item_id,title\n-1,Lamp\n")
    (inbox.items_dir / "ragged.csv").write_text("item_id,title\n3,Lamp\n4,Desk,extra,more\n")
    (inbox.items_dir / "truncated.parquet").write_bytes(b"PAR1 still being written")
    (inbox.items_dir / "good.csv").write_text("item_id,title\n2,Chair\n")
    context = build_sensor_context(resources={"inbox": inbox})
    request = catalogue_sensor(context)
    assert request.run_config["ops"]["upsert_new_items"]["config"]["files"] == [
        str((inbox.items_dir / "good.csv").resolve())]
    said = capsys.readouterr().err
    assert all(f"item file skipped: {inbox.items_dir / name}" in said
               for name in ("bad.csv", "ragged.csv", "truncated.parquet"))
    again = build_sensor_context(cursor=context.cursor, resources={"inbox": inbox})
    assert isinstance(catalogue_sensor(again), SkipReason), "read again once they change"
