"""`apply`, the one way a stock or item change reaches a version: a write the engine applies as it
logs it leaves the version as the replay of the same logged write does in another engine."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, insert, update

from feature_repo.datasets import Dataset
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from index import EdgeSettings, IndexSpec, build_version, open_backend
from index.catalogue import item_batch, latest_stock
from index.edge import COPIES_DIR, SHARD_DIR
from index.events import (
    LOG_GAPS,
    LOG_POSITION,
    Event,
    EventLog,
    events,
    log_gaps,
    log_position,
    with_events,
)
from index.model_store import default_quantization, publish
from index.registry import IndexVersion, Registry
from services.engine import Engine, KeyConflict, ServiceUnavailable
from services.engine.live import LATE_COMMIT_S, LiveVersion
from services.engine.writes import apply, item_frame, logged_item
from services.schemas import ItemUpsert
from tests.services.conftest import Service
from tests.utils.polling import eventually
from tests.utils.servers import start_postgres


@dataclass
class Shop:
    home: Path
    store: object  # feast.FeatureStore
    registry: Registry
    log: EventLog

    def engine(self) -> Engine:
        """An engine on the live version: it replays the log's changes the version lacks."""
        engine = Engine(store=self.store, backend=self.registry.backend, registry=self.registry,
                        log=self.log)
        assert engine.refresh()
        return engine


@pytest.fixture
def shop(service: Service, tmp_path: Path) -> Iterator[Shop]:
    """The service's shop, published in-process under its own home."""
    dataset = service.dataset
    store = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path / "feature_repo"))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    registry = publish(service.artifact, dataset, tmp_path)
    log = EventLog(data_dir=tmp_path)
    yield Shop(tmp_path, store, registry, log)
    log.close()
    registry.backend.close()
    registry.close()


def _state(engine: Engine, item_id: int) -> tuple:
    """What a version holds of an item: its online row, its item cache stock, its index payload stock."""
    s = engine.snapshot()
    item = s.items.item(item_id)
    vector = s.artifact.embed_items(item_frame(item_id, item))[0]
    hits = engine.backend.search(vector, k=5, location=s.index_location)
    stock = [h.stock for h in hits if h.item_id == item_id]
    return item, int(s.items.columns([item_id]).stock[0]), stock


def test_a_write_applied_as_logged_equals_its_replay_in_another_engine(service, shop):
    live = shop.engine()
    item_id = int(service.dataset.items["item_id"].max()) + 7
    live.upsert_item(item_id, ItemUpsert(title="A Replayed Film", categories=["Drama"], stock=2))
    live.set_stock(item_id, 5)
    applied = _state(live, item_id)
    live.close()

    # Another engine (a second process, or a restart) has only the log: it replays both writes.
    replica = Engine(store=build_store(service.dataset, FeatureStoreConfig(
        repo_dir=shop.home / "replica")), backend=shop.registry.backend, registry=shop.registry,
        log=shop.log)
    assert replica.refresh()
    assert _state(replica, item_id) == applied
    assert applied[0].title == "A Replayed Film" and applied[0].stock == applied[1] == 5
    assert applied[2] == [5]
    replica.close()


def test_the_last_change_of_an_item_wins_whichever_kind_it_is(service, shop):
    engine = shop.engine()
    s = engine.snapshot()
    item_id = int(service.dataset.items["item_id"].max()) + 8
    body = {"item_id": item_id, "title": "Set Then Upserted", "categories": ["Comedy"], "stock": 4}
    events = [shop.log.record("stock-first", "stock", {"item_id": item_id, "quantity": 9}),
              shop.log.record("upsert-last", "item", body)]
    assert apply(s, engine.online, engine.backend, events) == set()
    assert engine.online.items([item_id])[item_id].stock == 4
    upserted_then_set = [*events, shop.log.record("stock-last", "stock",
                                                  {"item_id": item_id, "quantity": 1})]
    apply(s, engine.online, engine.backend, upserted_then_set)
    assert engine.online.items([item_id])[item_id].stock == 1
    assert s.items.columns([item_id]).stock[0] == 1
    engine.close()


def test_a_write_logged_before_and_reaching_the_engine_late_does_not_undo_a_later_change(service,
                                                                                         shop):
    """The inbox jobs logged a write themselves (the service had not answered it in time), and
    the item changed again since; then the first request reached the service after all. It finds
    its write in the log, unanswered: applied in log order, it leaves the later change in place."""
    engine = shop.engine()
    item_id, other = (int(i) for i in service.dataset.items["item_id"].iloc[[3, 4]])
    shop.log.record("late:stock", "stock", {"item_id": item_id, "quantity": 5})
    shop.log.record("late:item", "item", {"item_id": other, "title": "Late Title", "categories": [],
                                          "price": None, "created_at": None, "stock": None})
    engine.set_stock(item_id, 7, key="newer:stock")
    engine.upsert_item(other, ItemUpsert(title="Newer Title", categories=["Drama"]))

    assert engine.set_stock(item_id, 5, key="late:stock").quantity == 5  # its own answer
    engine.upsert_item(other, ItemUpsert(title="Late Title"), key="late:item")
    assert _state(engine, item_id)[1:] == (7, [7])
    assert engine.online.items([item_id])[item_id].stock == 7
    assert engine.online.items([other])[other].title == "Newer Title"
    assert engine.set_stock(item_id, 9, key="late:stock-2").quantity == 9  # a new write applies
    assert _state(engine, item_id)[1:] == (9, [9])
    engine.close()


def test_an_upserts_stock_replayed_after_a_later_upsert_that_keeps_the_stock_is_taken(service,
                                                                                      shop):
    """Another process logged an upsert with stock 5, then this engine applied a later upsert that
    leaves the stock out (before replaying the first): the replay sets 5, as the log orders it."""
    engine = shop.engine()
    item_id = int(service.dataset.items["item_id"].iloc[6])
    shop.log.record("elsewhere:item", "item", {"item_id": item_id, "title": "Elsewhere", "categories": [],
                                               "price": None, "created_at": None, "stock": 5})
    engine.upsert_item(item_id, ItemUpsert(title="Here", categories=["Drama"]), key="here:item")
    engine.live._catch_up_live(engine.snapshot())
    item, cached, indexed = _state(engine, item_id)
    assert (item.title, item.stock, cached, indexed) == ("Here", 5, 5, [5])
    engine.close()


def test_an_upsert_without_stock_or_created_at_keeps_the_items_own_in_version_replay_and_tables(
        service, shop):
    live = shop.engine()
    item_id = int(service.dataset.items["item_id"].max()) + 9
    live.upsert_item(item_id, ItemUpsert(title="Stocked", categories=["Drama"], price=3.0, stock=6))
    first = _state(live, item_id)[0].created_at_s
    live.upsert_item(item_id, ItemUpsert(title="Renamed", categories=["Drama"]))  # no price either
    existing = int(service.dataset.items["item_id"].iloc[0])
    before = _state(live, existing)
    live.upsert_item(existing, ItemUpsert(title="Renamed Too", categories=["Drama"]))
    new = int(service.dataset.items["item_id"].max()) + 11
    live.upsert_item(new, ItemUpsert(title="Never Stocked", categories=["Drama"]))
    applied = {i: _state(live, i) for i in (item_id, existing, new)}
    live.close()
    assert applied[item_id][1:] == (6, [6])
    assert (applied[item_id][0].title, applied[item_id][0].price) == ("Renamed", None)
    assert applied[item_id][0].created_at_s == first
    assert applied[existing][1:] == (before[1], [before[1]])
    assert applied[existing][0].created_at_s == before[0].created_at_s
    assert applied[new][1:] == (0, [])  # none in stock: not searched

    # Another process: its own online store, loaded from the tables as every store is
    store = build_store(service.dataset, FeatureStoreConfig(repo_dir=shop.home / "replica"))
    materialize(store, service.dataset.interactions["event_timestamp"].max().to_pydatetime())
    replica = Engine(store=store, backend=shop.registry.backend, registry=shop.registry,
                     log=shop.log)
    assert replica.refresh()
    assert {i: _state(replica, i) for i in applied} == applied
    replica.close()
    tables = with_events(service.dataset, shop.log.read())
    stock = latest_stock(tables.stock)
    assert (stock[item_id], stock[existing], stock[new]) == (6, before[1], 0)
    created = tables.items.set_index("item_id")["created_at"]
    assert created[existing] == service.dataset.items.set_index("item_id")["created_at"][existing]
    assert created[item_id].timestamp() // 1 == first


def test_a_new_items_first_upsert_takes_the_stock_logged_before_it(service, shop):
    """Written into the log alone (the inbox jobs without the service), a stock change may come
    before its item's first upsert: applied, it reaches the online store alone. The upsert, which
    leaves the stock out, takes that quantity, as the tables and a replay of both together do."""
    engine = shop.engine()
    s = engine.snapshot()
    item_id = int(service.dataset.items["item_id"].max()) + 12
    stock = shop.log.record("stock-before-item", "stock", {"item_id": item_id, "quantity": 4})
    assert apply(s, engine.online, engine.backend, [stock]) == {item_id}, "not in the version yet"
    body = {"item_id": item_id, "title": "Stocked Before", "categories": ["Drama"], "stock": None}
    apply(s, engine.online, engine.backend, [shop.log.record("item-after-stock", "item", body)])
    assert _state(engine, item_id)[1:] == (4, [4])
    engine.close()
    assert latest_stock(with_events(service.dataset, shop.log.read()).stock)[item_id] == 4


def test_an_upserted_item_keeps_its_popularity_and_the_cache_reads_it_again(service, shop):
    """The re-ranker's popularity of an item is the online store's: an upsert changes its content,
    not how often it was bought, and the cache follows the materializations."""
    engine = Engine(store=shop.store, backend=shop.registry.backend, registry=shop.registry,
                    log=shop.log, popularity_interval_s=0.05)
    try:
        engine.start()
        s = engine.snapshot()
        ids = service.dataset.items["item_id"].tolist()
        counts = engine.online.popularity(ids)
        popular = ids[int(counts[:, 2].argmax())]
        before = s.items.columns([popular]).popularity[0].copy()
        assert before[2] > 0
        engine.upsert_item(popular, ItemUpsert(title="Renamed", categories=["Drama"], stock=1))
        np.testing.assert_array_equal(s.items.columns([popular]).popularity[0], before)
        s.items.columns(ids)  # every id has its row
        stale = s.items._columns.numbers
        stale[:, 3:] = 0  # as if materialized since the version loaded
        assert eventually(lambda: np.array_equal(s.items.columns(ids).popularity, counts))
    finally:
        engine.close()


def test_an_item_the_version_lacks_is_reported_and_changes_nothing_in_it(service, shop):
    engine = shop.engine()
    s = engine.snapshot()
    known = int(service.dataset.items["item_id"].iloc[0])
    before = engine.online.items([known])[known].stock
    unknown = shop.log.record("unknown", "stock", {"item_id": 999_999, "quantity": 3})
    assert apply(s, engine.online, engine.backend, [unknown]) == {999_999}
    skipped = shop.log.record("skipped", "stock", {"item_id": known, "quantity": before + 1})
    assert apply(s, engine.online, engine.backend, [skipped], skip={skipped.seq}) == set()
    assert engine.online.items([known])[known].stock == before
    engine.close()


def test_an_index_that_fails_a_write_is_named_in_the_503_not_the_online_store(service, shop):
    """The index's files gone from under a write: the 503 says the index failed (the online store
    took the change), so an operator looks at the right dependency."""
    engine = shop.engine()
    s = engine.snapshot()
    item = int(service.dataset.items["item_id"].iloc[0])
    engine.backend.close()
    shutil.rmtree(Path(s.index_location) / SHARD_DIR)
    with pytest.raises(ServiceUnavailable, match=rf"^index version {s.index_version} unavailable"):
        engine.set_stock(item, 7)
    assert engine.online.items([item])[item].stock == 7
    with pytest.raises(ServiceUnavailable, match=rf"^index version {s.index_version} unavailable"):
        engine.upsert_item(item, ItemUpsert(title="Gone", categories=["Drama"]))
    engine.close()


def test_workers_each_on_a_copy_of_the_shard_get_each_others_writes_between_reloads(service, shop):
    """Two engines as `twotower serve --workers 2` runs them: each serves its own copy of the live
    shard, and a write one answers reaches the other through the log, with no version reload."""
    with _workers(shop) as (first, second):
        for worker in (first, second):
            worker.start()
        item_id = int(service.dataset.items["item_id"].max()) + 9
        first.upsert_item(item_id, ItemUpsert(title="Written Once", categories=["Drama"], stock=3))
        assert eventually(lambda: _state(second, item_id)[1:] == (3, [3]))
        second.set_stock(item_id, 0)
        assert eventually(lambda: _state(first, item_id)[1] == 0)
        assert _state(first, item_id)[2] == []  # out of stock: no longer served
        assert _state(first, item_id)[0] == _state(second, item_id)[0]


@contextmanager
def _workers(shop: Shop) -> Iterator[tuple[Engine, Engine]]:
    """Two engines as `twotower serve --workers 2` runs them (not started): each on its own copy
    of the live shard, replaying the log every 0.05 s once started."""
    workers = []
    for _ in range(2):
        registry = Registry(data_dir=shop.home, backend=open_backend(
            EdgeSettings(path=shop.home / "index", own_copies=True)))
        workers.append(Engine(store=shop.store, backend=registry.backend, registry=registry,
                              log=EventLog(data_dir=shop.home), reload_interval_s=3600,
                              replay_interval_s=0.05))
    try:
        yield workers[0], workers[1]
    finally:
        for worker in workers:
            worker.close()
            worker.backend.close()
            worker.registry.close()
            worker.log.close()


def test_stock_of_an_item_another_worker_upserted_is_taken_and_reaches_the_index_with_it(service,
                                                                                       shop):
    """The item is in the online store (its catalogue) before this worker's index copy replays it:
    the change is logged and online, and lands in the index with that replay; not a 404, nor a 503
    that a retry could not mend while the version lacks the item."""
    with _workers(shop) as (first, second):
        for worker in (first, second):
            assert worker.refresh()
        item_id = int(service.dataset.items["item_id"].max()) + 10
        first.upsert_item(item_id, ItemUpsert(title="Written Once", categories=["Drama"], stock=3))
        answer = second.set_stock(item_id, 4, key="ahead-of-the-replay")
        assert (answer.quantity, answer.indexed) == (4, False)
        assert second.online.items([item_id])[item_id].stock == 4
        assert [e.body for e in shop.log.read(kinds=("stock",))][-1] == {"item_id": item_id,
                                                                          "quantity": 4}
        second.start()  # its replay brings the upsert, then the logged change
        assert eventually(lambda: _state(second, item_id)[1:] == (4, [4]))
        assert second.set_stock(item_id, 4, key="ahead-of-the-replay") == answer  # a retry


def test_a_version_a_request_still_reads_is_released_after_it_not_reopened_by_it(service, shop):
    """A request that outlives a switch and the next poll (past its deadline, its thread still
    running) reads its version to the end; the version's shard and its own copy are released at
    the first poll after, not reopened by the request and kept until the process ends."""
    copies = shop.home / "index" / COPIES_DIR
    with _workers(shop) as (worker, _):
        assert worker.refresh()
        with worker.live.reading() as old:
            _build(service, shop, service.dataset, {})
            assert worker.refresh()  # the switch
            assert not worker.refresh()  # a poll while the old version is read
            vector = old.artifact.embed_items(service.dataset.items.head(1))[0]
            assert worker.backend.search(vector, k=3, location=old.index_location)
        assert not worker.refresh()  # the poll after the request
        held = {p.name for p in copies.glob("*/*")}
        assert Path(worker.snapshot().index_location).name in held
        assert Path(old.index_location).name not in held


def test_a_version_served_again_after_a_rollback_is_not_released_with_its_old_snapshot(service,
                                                                                       shop):
    """A request reads version 1 across a switch to 2 and a rollback to 1; once it ends, and
    before the next promotion (3) is loaded, releasing the replaced versions leaves version 1's
    shard and copy to the requests it serves."""
    copies = shop.home / "index" / COPIES_DIR
    with _workers(shop) as (worker, _):
        assert worker.refresh()
        with worker.live.reading() as old:
            _build(service, shop, service.dataset, {})
            assert worker.refresh()  # version 2
            shop.registry.rollback()
            assert worker.refresh()  # version 1 again, a new snapshot of the same location
        _build(service, shop, service.dataset, {})  # version 3 live in the registry
        worker.live._release_retired()  # what the next poll does first
        assert Path(old.index_location).name in {p.name for p in copies.glob("*/*")}
        assert worker.snapshot().index_location == old.index_location


def test_closing_waits_for_a_request_still_reading_its_version(shop):
    """The backend is closed right after the engine: a request still searching (a thread past its
    deadline) ends first, rather than reopening the shard under the shutdown."""
    engine = shop.engine()
    reading, done = threading.Event(), threading.Event()

    def request() -> None:
        with engine.live.reading():
            reading.set()
            time.sleep(0.5)
            done.set()

    worker = threading.Thread(target=request)
    worker.start()
    assert reading.wait(30)
    engine.close()
    assert done.is_set()
    worker.join()


def test_a_logged_change_that_cannot_be_applied_does_not_hold_back_the_later_ones(service, shop):
    """An item upsert whose body the version cannot apply (here: no title, as a faulty producer
    could log it) is passed over with an error in the log; the changes logged around it land,
    the same item's later stock included."""
    engine = Engine(store=shop.store, backend=shop.registry.backend, registry=shop.registry,
                    log=shop.log, replay_interval_s=0.05)
    assert engine.refresh()
    dataset = engine.snapshot().dataset
    first, last = (int(i) for i in service.dataset.items["item_id"].iloc[[0, -1]])
    for key, kind, body in [("before", "stock", {"item_id": first, "quantity": 41}),
                            ("bad", "item", {"item_id": 10**8, "categories": []}),
                            ("bad-of-first", "item", {"item_id": first, "categories": []}),
                            ("then", "stock", {"item_id": first, "quantity": 43}),
                            ("after", "stock", {"item_id": last, "quantity": 42})]:
        shop.log.record(key, kind, body, dataset=dataset)
    engine.start()
    try:
        assert eventually(lambda: (_state(engine, first)[1], _state(engine, last)[1]) == (43, 42))
        assert engine.online.items([10**8]) == {}
    finally:
        engine.close()


def _log_stock(db, key: str, item_id: int, quantity: int) -> None:
    """A stock change logged in `db`'s transaction: committed when the caller's transaction is."""
    db.execute(insert(events).values(key=key, kind="stock",
                                     body={"item_id": item_id, "quantity": quantity},
                                     logged_at=datetime.now(UTC)))


def _build(service: Service, shop: Shop, read: Dataset, metrics: dict, *,
           promote: bool = True) -> IndexVersion:
    """A new version of the shop's model (live if `promote`), built from the stock `read` holds,
    with `metrics`."""
    items = service.dataset.items
    return build_version(item_batch(items, service.artifact.embed_items(items),
                                    latest_stock(read.stock)),
                         registry=shop.registry,
                         spec=IndexSpec(dim=service.artifact.dim,
                                        quantization=default_quantization(service.artifact)),
                         model_version_id=shop.registry.live().model_version_id, promote=promote,
                         metrics=metrics)


def test_writes_refused_after_a_switch_died_before_its_commit_are_taken_after_the_next_poll(
        service, shop):
    """A promotion killed between moving the backend's pointer and committing: a worker refuses
    writes while the pointer and the registry disagree, and its next poll points the backend back."""
    engine = shop.engine()
    item = int(service.dataset.items["item_id"].iloc[0])
    try:
        served = engine.snapshot().index_location
        stranded = _build(service, shop, service.dataset, {}, promote=False)
        shop.registry.backend.activate(stranded.location)
        with pytest.raises(ServiceUnavailable, match="being loaded"):
            engine.set_stock(item, 3)

        assert not engine.refresh()  # the registry's live version is still the one served

        assert shop.registry.backend.live_location() == served
        assert engine.set_stock(item, 3).quantity == 3
        assert _state(engine, item)[1:] == (3, [3])
    finally:
        engine.close()


def test_writes_are_tagged_with_the_versions_dataset_and_another_datasets_are_not_replayed(service, shop):
    """After a home changed dataset, the old one's logged changes (other ids, the same numbers) must
    not reach the new one's version."""
    engine = shop.engine()
    first, second = service.dataset.items["item_id"].iloc[:2].astype(int).tolist()
    try:
        assert engine.set_stock(first, 5, key="ours").quantity == 5
        assert shop.log.get("ours").dataset == engine.snapshot().dataset == service.dataset.fingerprint
        before = _state(engine, second)
        shop.log.record("theirs", "stock", {"item_id": second, "quantity": 0}, dataset="another-set")

        assert not engine.refresh()  # the poll: replays what other processes logged

        assert _state(engine, second) == before
        replayed = shop.engine()  # another worker: replays its own dataset's change
        assert _state(replayed, first)[1:] == (5, [5]) and _state(replayed, second) == before
        replayed.close()
        with pytest.raises(KeyConflict, match="another dataset's model"):  # its retry, unanswered
            engine.set_stock(second, 0, key="theirs")
        assert _state(engine, second) == before
    finally:
        engine.close()


def test_a_change_committed_after_a_later_one_is_replayed_when_it_lands(service, shop):
    """On PostgreSQL a lower log seq can commit after a higher one: the replay must not move past
    it for good, and the item's last change in log order still wins."""
    server = start_postgres()
    log = EventLog(server.create_database("late_commits"))
    engine = Engine(store=shop.store, backend=shop.registry.backend, registry=shop.registry,
                    log=log, reload_interval_s=3600, replay_interval_s=0.05)
    first, second = service.dataset.items["item_id"].iloc[:2].astype(int).tolist()
    try:
        engine.start()
        assert _state(engine, first)[1] > 0 and _state(engine, second)[1] > 0
        with log.engine.begin() as late:  # another writer, its insert not committed yet
            _log_stock(late, "late", first, 0)
            log.record("on-time", "stock", {"item_id": second, "quantity": 0})
            assert eventually(lambda: _state(engine, second)[1] == 0)
            assert _state(engine, first)[1] > 0
        assert eventually(lambda: _state(engine, first)[1:] == (0, []))  # the late one, once committed
        log.record("after", "stock", {"item_id": first, "quantity": 4})
        assert eventually(lambda: _state(engine, first)[1:] == (4, [4]))
    finally:
        engine.close()
        log.close()
        server.stop()


def test_writes_a_build_did_not_see_committed_reach_its_version(service, shop):
    """A build reads the log while lower seqs are still uncommitted: its version lacks those
    writes, and a worker loading it replays them though they are below the build's position;
    per item, the last change in log order still wins."""
    server = start_postgres()
    log = EventLog(server.create_database("late_for_the_build"))
    first, second, third = service.dataset.items["item_id"].iloc[:3].astype(int).tolist()
    engine = None
    try:
        with log.engine.begin() as late:  # another writer, its inserts not committed yet
            _log_stock(late, "late-1", first, 0)
            _log_stock(late, "late-2", third, 0)
            log.record("on-time-1", "stock", {"item_id": second, "quantity": 0})
            log.record("on-time-2", "stock", {"item_id": third, "quantity": 7})
            read = with_events(service.dataset, log.read())  # what the pipeline's build reads
            position = log_position(read)
            assert log_gaps(read) == [position - 3, position - 2]
            _build(service, shop, read, {LOG_POSITION: position, LOG_GAPS: log_gaps(read)})
        engine = Engine(store=shop.store, backend=shop.registry.backend, registry=shop.registry,
                        log=log, reload_interval_s=3600)
        engine.start()
        assert _state(engine, second)[2] == []  # built in (out of stock: not served)
        assert _state(engine, first)[1:] == (0, [])  # landed after the build: replayed
        assert _state(engine, third)[2] == [7]  # its later change in log order wins
    finally:
        if engine is not None:
            engine.close()
        log.close()
        server.stop()


@pytest.mark.parametrize(("registered", "frontier"), [(-3600, "position"), (3600, "below the gap")])
def test_a_versions_gap_is_waited_for_from_its_registration(service, shop, registered, frontier):
    """A gap that never lands (a failed insert spent its seq) is waited for only LATE_COMMIT_S from
    the version's registration: a version registered an hour ago is past it at the switch, one
    registered just now (here: in the future, so the wait is whole) still waits."""
    item = int(service.dataset.items["item_id"].iloc[0])
    seqs = [shop.log.record(f"w{n}", "stock", {"item_id": item, "quantity": n}).seq for n in range(3)]
    with shop.log.engine.begin() as db:  # the middle one never committed
        db.execute(delete(events).where(events.c.seq == seqs[1]))
    version = _build(service, shop, service.dataset, {LOG_POSITION: seqs[2], LOG_GAPS: [seqs[1]]})
    with shop.registry.engine.begin() as db:
        db.execute(update(IndexVersion).where(IndexVersion.id == version.id)
                   .values(created_at=datetime.now(UTC) + timedelta(seconds=registered)))
    engine = Engine(store=shop.store, backend=shop.registry.backend, registry=shop.registry,
                    log=shop.log)
    try:
        assert engine.refresh()
        expected = {"position": seqs[2], "below the gap": seqs[0]}[frontier]
        assert engine.live._applied == expected
    finally:
        engine.close()


def test_seqs_that_never_commit_are_waited_for_together_then_passed_over():
    """A failed insert spends its seq: each missing seq's wait starts when it is found missing, so
    many such seqs cost one wait, not one each, and a late one is taken when it lands."""
    live = LiveVersion.__new__(LiveVersion)  # the frontier's bookkeeping alone, no dependencies
    live._applied, live._done, live._missing = 0, {1, 3, 5, 7, 8}, {}
    live._advance(now=0.0)
    assert live._applied == 1 and set(live._missing) == {2, 4, 6}
    live._done.add(4)  # committed late
    live._advance(now=1.0)
    assert live._applied == 1
    live._advance(now=LATE_COMMIT_S + 0.1)
    assert live._applied == 8 and not live._missing and not live._done


@pytest.mark.parametrize(("created_at", "second"), [("2020-01-01T00:00:00.7+00:00", 1577836800),
                                                    ("1969-12-31T23:59:59.5+00:00", -1)])
def test_a_logged_item_is_created_at_its_floored_second_as_the_index_and_tables_have_it(created_at,
                                                                                       second):
    body = {"title": "t", "categories": ["c"], "created_at": created_at}
    assert logged_item(Event(1, "k", "item", body, datetime.now(UTC))).created_at_s == second
