"""The event log keeps each idempotency key once, durably, and adds its writes to a dataset; on
SQLite (the default) and on a real PostgreSQL (the compose stack's)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from feature_repo.datasets import load
from index.catalogue import latest_stock
from index.events import EventLog, KeyReused, log_gaps, log_position, log_seqs, with_events
from tests.utils.servers import PostgresServer, start_postgres

SHOP = "synthetic:items=50,users=20,events=400,seed=3"


DATABASES = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request, tmp_path) -> Callable[[], EventLog]:
    """Opens the test's log (each call another connection to it, as another process would)."""
    if request.param == "sqlite":
        return lambda: EventLog(data_dir=tmp_path)
    url = request.getfixturevalue("postgres").create_database(f"events_{next(DATABASES)}")
    return lambda: EventLog(url)


@pytest.fixture
def log(opener) -> Iterator[EventLog]:
    events = opener()
    yield events
    events.close()


def test_a_key_is_logged_once_and_a_retry_gets_the_first_event_and_answer(log, opener):
    first = log.record("k1", "stock", {"item_id": 3, "quantity": 5})
    assert first.new and first.answer is None
    log.answer(first.seq, {"item_id": 3, "quantity": 5})
    again = log.record("k1", "stock", {"item_id": 3, "quantity": 5})
    assert (again.new, again.seq, again.answer) == (False, first.seq, {"item_id": 3, "quantity": 5})
    with pytest.raises(KeyReused, match="Idempotency-Key 'k1'"):
        log.record("k1", "stock", {"item_id": 3, "quantity": 6})
    reopened = opener()  # durable: another process reads it back
    assert [e.key for e in reopened.read()] == ["k1"] and reopened.position() == first.seq
    log.close()  # stores the answers still pending
    assert reopened.get("k1").answer == {"item_id": 3, "quantity": 5}
    reopened.close()


def test_one_items_events_are_read_in_log_order(log):
    big = 2**40  # item ids are int64
    for n, (item_id, kind) in enumerate([(big, "stock"), (3, "stock"), (big, "item"), (big, "interaction")]):
        body = {"item_id": item_id, "quantity": n} if kind == "stock" else {"item_id": item_id, "n": n}
        log.record(f"k{n}", kind, body)
    assert [e.key for e in log.read(item_id=big, kinds=("stock", "item"))] == ["k0", "k2"]
    assert [e.key for e in log.read(after=1, item_id=big, kinds=("stock", "item"))] == ["k2"]
    assert [e.key for e in log.read(item_id=3)] == ["k1"]


def test_an_answer_is_read_back_while_the_background_writer_stores_it(log):
    # The answer moves from memory to the table while `get` runs: it must be found in one of them.
    for n in range(300):
        written = log.record(f"race-{n}", "stock", {"item_id": n, "quantity": 1})
        log.answer(written.seq, {"n": n})
        assert log.get(f"race-{n}").answer == {"n": n}, f"answer of write {n} lost in flight"


def test_concurrent_writers_of_the_same_keys_log_each_once(log):
    def write(n: int) -> int:
        return log.record(f"key-{n % 20}", "interaction",
                          {"user_id": n % 20, "item_id": 1, "ts": None}).seq

    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(write, range(200)))
    assert len(log.read()) == 20 and len(set(seqs)) == 20


def test_concurrent_writers_stamp_the_log_in_seq_order(opener):
    """The index applies an item's changes in seq order, the online store keeps the newest stamp:
    both pick the same last change only if a later seq is never stamped earlier."""
    logs = [opener() for _ in range(4)]  # four processes' connections

    def write(n: int) -> None:
        logs[n % 4].record(f"w-{n}", "stock", {"item_id": 1, "quantity": n})

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(400)))
        stamps = [e.logged_at for e in logs[0].read()]
        assert len(stamps) == 400 and stamps == sorted(stamps)
    finally:
        for events in logs:
            events.close()


def test_logged_writes_join_the_dataset(log):
    data = load(SHOP)
    item, user = int(data.items["item_id"].iloc[0]), int(data.users["user_id"].max()) + 1
    log.record("a", "interaction", {"user_id": user, "item_id": item, "ts": "2030-01-01T00:00:00+00:00"})
    log.record("b", "item", {"item_id": 9_999, "title": "new lamp", "categories": ["lamps"],
                             "price": 3.5, "created_at": None, "stock": 4})
    log.record("c", "item", {"item_id": item, "title": "renamed", "categories": [], "price": None,
                             "created_at": None, "stock": 0})
    last = log.record("d", "stock", {"item_id": 9_999, "quantity": 0})
    merged = with_events(data, log.read()).validate()
    assert len(merged.interactions) == len(data.interactions) + 1
    assert user in set(merged.users["user_id"])  # a user first seen by the service
    titles = merged.items.set_index("item_id")["title"]
    assert titles[9_999] == "new lamp" and titles[item] == "renamed"
    assert len(merged.items) == len(data.items) + 1
    stock = merged.stock[merged.stock["item_id"] == 9_999].sort_values("event_timestamp")
    assert stock["quantity"].tolist() == [4, 0]
    assert log_position(merged) == last.seq and log_position(data) == 0


def test_stock_logged_for_an_item_not_in_the_catalogue_is_left_out_until_it_is(log, caplog):
    data = load(SHOP)
    log.record("a", "stock", {"item_id": 8_888, "quantity": 5})  # a stock feed ahead of the catalogue
    merged = with_events(data, log.read()).validate()  # validates: retraining goes on
    assert 8_888 not in set(merged.stock["item_id"]) and len(merged.stock) == len(data.stock)
    assert "1 stock changes of items not in the catalogue left out (item_id 8888" in caplog.text
    log.record("b", "item", {"item_id": 8_888, "title": "late", "categories": [], "price": None,
                             "created_at": None, "stock": 2})
    log.record("c", "stock", {"item_id": 8_888, "quantity": 1})
    merged = with_events(data, log.read()).validate()
    stock = merged.stock[merged.stock["item_id"] == 8_888].sort_values("log_seq")
    assert stock["quantity"].tolist() == [5, 2, 1]  # once the item is in, all of its stock is


def test_writes_to_another_dataset_stay_in_the_log_and_out_of_this_ones_tables(log, opener, caplog):
    """A home that changed dataset (`--replace`) keeps the old dataset's writes in its log; each
    dataset's tables take its own writes and untagged ones (a log older than the tags)."""
    data, other = load(SHOP), load("synthetic:items=60,users=20,events=400,seed=4")
    item = int(data.items["item_id"].iloc[0])
    user = int(data.users["user_id"].max()) + 1
    log.record("old", "interaction", {"user_id": user, "item_id": item, "ts": None},
               dataset=other.fingerprint)
    log.record("untagged", "stock", {"item_id": item, "quantity": 7})
    log.record("ours", "stock", {"item_id": item, "quantity": 3}, dataset=data.fingerprint)

    merged = with_events(data, log.read()).validate()

    assert len(merged.interactions) == len(data.interactions) and user not in set(merged.users["user_id"])
    assert merged.stock["quantity"].tail(2).tolist() == [7, 3]
    assert f"1 writes to another dataset ({other.fingerprint}) left out of {data.name}" in caplog.text
    reopened = opener()  # as another process reads it
    assert [e.dataset for e in reopened.read()] == [other.fingerprint, None, data.fingerprint]
    reopened.close()
    back = with_events(other, log.read())  # switched back: its write is there again
    assert len(back.interactions) == len(other.interactions) + 1


def test_a_log_written_before_the_dataset_tag_gains_it_on_open(tmp_path):
    with sqlite3.connect(tmp_path / "events.db") as db:  # the table as the first release made it
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, key VARCHAR(200) "
                   "NOT NULL UNIQUE, kind VARCHAR(16) NOT NULL, body JSON NOT NULL, logged_at DATETIME "
                   "NOT NULL, answer JSON)")
        db.execute("INSERT INTO events (key, kind, body, logged_at) VALUES ('k', 'stock', "
                   "'{\"item_id\": 1, \"quantity\": 2}', '2026-01-01 00:00:00.000000')")
    log = EventLog(data_dir=tmp_path)
    try:
        assert [(e.key, e.dataset) for e in log.read()] == [("k", None)]
        assert log.record("k2", "stock", {"item_id": 1, "quantity": 3}, dataset="abc").dataset == "abc"
        assert log.read()[-1].dataset == "abc"
    finally:
        log.close()


def test_an_upsert_without_stock_states_the_items_quantity_and_is_held(log):
    """Every logged upsert leaves a stock row, so a build holds its seq: one that left the stock out
    is never a gap read again over a later upsert of the item."""
    data = load(SHOP)
    item = int(data.items["item_id"].iloc[0])
    had = latest_stock(data.stock)[item]
    body = {"item_id": item, "categories": [], "price": None, "created_at": None}
    kept = log.record("a", "item", {**body, "title": "old", "stock": None})
    log.record("b", "item", {**body, "title": "new", "stock": had + 3})
    merged = with_events(data, log.read())
    assert log_gaps(merged) == [] and kept.seq in log_seqs(merged, since=kept.seq)
    logged = merged.stock[(merged.stock["item_id"] == item) & merged.stock["log_seq"].notna()]
    assert logged.sort_values("log_seq")["quantity"].tolist() == [had, had + 3]
    assert merged.items.set_index("item_id")["title"][item] == "new"


def test_a_dataset_names_the_seqs_below_its_position_it_lacks(log):
    """What a build read of the log: the seqs it skipped (still uncommitted then, or spent) are
    its gaps, which the service waits for."""
    data = load(SHOP)
    item = int(data.items["item_id"].iloc[0])
    written = [log.record(f"s{n}", "stock", {"item_id": item, "quantity": n}) for n in range(5)]
    assert log_gaps(data) == [] and log_gaps(with_events(data, log.read())) == []
    read = [e for e in log.read() if e.seq not in (written[1].seq, written[3].seq)]
    partial = with_events(data, read)
    assert log_position(partial) == written[4].seq
    assert log_gaps(partial) == [written[1].seq, written[3].seq]


def test_the_log_read_in_parts_joins_like_the_whole_log(log):
    data = load(SHOP)
    item, user = int(data.items["item_id"].iloc[0]), int(data.users["user_id"].max()) + 1
    writes = [("interaction", {"user_id": user + 1, "item_id": item, "ts": "2030-01-01T00:00:00+00:00"}),
              ("stock", {"item_id": item, "quantity": 7}),
              ("item", {"item_id": 9_999, "title": "lamp", "categories": [], "price": None,
                        "created_at": None, "stock": 4}),
              ("interaction", {"user_id": user, "item_id": item, "ts": "2030-01-02T00:00:00+00:00"}),
              ("item", {"item_id": 9_998, "title": "desk", "categories": [], "price": None,
                        "created_at": None, "stock": 1}),
              ("stock", {"item_id": 9_999, "quantity": 0}),
              ("item", {"item_id": 9_999, "title": "lamp v2", "categories": [], "price": None,
                        "created_at": None, "stock": 2})]
    for n, (kind, body) in enumerate(writes):
        log.record(f"w{n}", kind, body)
    logged = log.read()
    whole = with_events(data, logged)
    for cut in range(1, len(logged)):  # as runs extending the last run's tables read it
        parts = with_events(with_events(data, logged[:cut]), logged[cut:])
        for table in ("interactions", "items", "users", "stock"):
            pd.testing.assert_frame_equal(getattr(parts, table), getattr(whole, table), obj=f"{table} {cut}")
