"""Online history appends on the real stores (SQLite, Redis): once per write id, also when a retry
races its first attempt, while distinct writes of the same item and second each append; and a
materialization racing an append never replaces the newer history with an older one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from feature_repo.datasets import Dataset, load
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from services.online import HISTORY, SEEN, OnlineFeatures
from tests.utils.servers import start_redis

SHOP = "synthetic:items=30,users=200,events=2000,seed=3"


@pytest.fixture(params=["sqlite", "redis"])
def shop(request, tmp_path: Path) -> Iterator[tuple[object, Dataset]]:
    """A Feast store (on its own Redis for "redis") materialized up to half its events, and its
    dataset."""
    redis = start_redis() if request.param == "redis" else None
    try:
        dataset = load(SHOP)
        store = build_store(dataset, FeatureStoreConfig(
            repo_dir=tmp_path / "feature_repo", online_store=request.param,
            **({"redis_url": redis.url} if redis else {})))
        materialize(store, _cut(dataset, 0.5))
        yield store, dataset
    finally:
        if redis is not None:
            redis.stop()


@pytest.fixture
def online(shop) -> OnlineFeatures:
    return OnlineFeatures(shop[0])


def _cut(dataset: Dataset, share: float) -> datetime:
    """The time by which `share` of the dataset's events happened."""
    return dataset.interactions["event_timestamp"].quantile(share).to_pydatetime()


def test_a_retried_append_adds_nothing_and_answers_the_length_as_it_is(online):
    before = online.user(1)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    first = online.append_interaction(1, 5, at, write_id=101)
    retried = online.append_interaction(1, 5, at, write_id=101)
    user = online.user(1)
    assert retried == first == len(user.recent_item_ids)
    assert user.event_count == before.event_count + 1
    assert list(user.recent_item_ids).count(5) == list(before.recent_item_ids).count(5) + 1

    another = online.append_interaction(1, 5, at, write_id=102)  # same item, same second: a new write
    assert online.user(1).event_count == before.event_count + 2
    assert another == min(first + 1, len(online.user(1).recent_item_ids))


def test_the_items_a_user_has_seen_are_loaded_and_an_append_adds_its_item_once(tmp_path):
    """A history of 3 events, the whole of what each user saw beside it: loaded once a load
    reaches the user's row (stamped just after their last event); until then the recent items
    stand in."""
    dataset = load(SHOP)
    store = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path / "feature_repo", history_length=3))
    materialize(store, _cut(dataset, 0.9))
    online = OnlineFeatures(store)
    events = dataset.interactions
    last = events.groupby("user_id")["event_timestamp"].max()
    loaded = [u for u in last[last < _cut(dataset, 0.9)].index
              if events.loc[events["user_id"] == u, "item_id"].nunique() > 3][:3]
    assert loaded, "users whose whole history is loaded and longer than the window"
    for user in loaded:
        mine = events.loc[events["user_id"] == user, "item_id"]
        assert len(online.user(user).recent_item_ids) == 3
        assert list(online.user(user).seen_item_ids) == sorted(set(mine)), "the whole history"
    later = next(u for u in last[last >= _cut(dataset, 0.9)].index if online.user(u).event_count > 3)
    assert online.user(later).seen_item_ids == tuple(sorted(set(online.user(later).recent_item_ids))), \
        "not loaded yet: the recent items stand in"
    user = int(loaded[0])
    before = online.user(user).seen_item_ids
    new = next(int(i) for i in dataset.items["item_id"] if i not in before)
    at = datetime(2030, 1, 5, tzinfo=UTC)
    online.append_interaction(user, new, at, write_id=401)
    online.append_interaction(user, new, at, write_id=401)  # a retry
    online.append_interaction(user, before[0], at, write_id=402)  # seen before
    assert list(online.user(user).seen_item_ids) == sorted({*before, new})


def test_a_repository_applied_before_user_seen_serves_and_finds_the_view_once_applied(tmp_path):
    dataset = load(SHOP)
    store = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path / "feature_repo", history_length=3))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    store.delete_feature_view(SEEN)  # as an older release applied it
    online = OnlineFeatures(store)
    user = int(dataset.interactions["user_id"].value_counts().index[0])
    recent = online.user(user).recent_item_ids
    assert online.user(user).seen_item_ids == tuple(sorted(set(recent))), "the recent items stand in"
    online.append_interaction(user, 0, datetime(2030, 1, 6, tzinfo=UTC), write_id=501)  # no seen row

    applied = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path / "feature_repo",
                                                      history_length=3))  # the pipeline, again
    materialize(applied, dataset.interactions["event_timestamp"].max().to_pydatetime())
    online.read_history_length()  # a version load
    mine = dataset.interactions.loc[dataset.interactions["user_id"] == user, "item_id"]
    assert list(online.user(user).seen_item_ids) == sorted(set(mine))


def test_racing_attempts_of_the_same_writes_append_each_once(online):
    before = online.user(2).event_count
    at = datetime(2030, 1, 2, tzinfo=UTC)
    writes = list(range(200, 206))

    def attempt() -> None:  # every thread sends every write: the first attempt and its retries
        for write_id in writes:
            online.append_interaction(2, write_id % 30, at, write_id=write_id)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert online.user(2).event_count == before + len(writes)


@pytest.mark.parametrize("shop", ["redis"], indirect=True)
def test_a_materialization_racing_an_append_keeps_the_newer_history(shop):
    """The append lands while the materialization writes user histories: right after it read the
    stored stamps, if it reads them before writing (as Feast's own Redis write does, which would
    then replace the append by its older row)."""
    store, dataset = shop
    online = OnlineFeatures(store)
    half = _cut(dataset, 0.5)
    later = dataset.interactions[dataset.interactions["event_timestamp"] > half]
    user = int(later["user_id"].iloc[0])  # the materialization below writes a newer row for them
    at = datetime(2030, 1, 3, tzinfo=UTC)
    host, port = store.config.online_store.connection_string.split(",")[0].split(":")
    watched = redis.Redis(host=host, port=int(port), socket_timeout=30)

    def append_on_the_first_history_write() -> None:
        with watched.monitor() as monitor:
            while f"_ts:{HISTORY}" not in monitor.next_command()["command"]:
                pass
            online.append_interaction(user, 1, at, write_id=1)

    appender = threading.Thread(target=append_on_the_first_history_write)
    appender.start()
    materialize(store, _cut(dataset, 1.0))
    appender.join()
    history = online.user(user)
    assert (history.recent_item_ids[-1], history.recent_timestamps[-1]) == (1, int(at.timestamp()))


@pytest.mark.parametrize("when", ["at_the_last_event", "before_it", "in_the_same_second"])
def test_a_load_of_tables_from_before_an_append_leaves_it_in_place(shop, when):
    """An event at (or before, or within the second of) the user's last one: the tables written
    before it was logged hold the user's row at the stamp the store had, without the event."""
    store, dataset = shop
    online = OnlineFeatures(store)
    half = _cut(dataset, 0.5)
    before = dataset.interactions[dataset.interactions["event_timestamp"] <= half]
    last = before.groupby("user_id")["event_timestamp"].max()
    user, at = int(last.index[0]), last.iloc[0].to_pydatetime()
    at += {"at_the_last_event": timedelta(0), "before_it": timedelta(minutes=-5),
           "in_the_same_second": timedelta(microseconds=2)}[when]
    item = next(i for i in dataset.items["item_id"].tolist() if i not in online.user(user).recent_item_ids)
    online.append_interaction(user, item, at, write_id=7)
    appended = online.user(user)
    materialize(store, half)  # the same rows again, stamped as they were
    again = online.user(user)
    assert (again.event_count, again.recent_item_ids) == (appended.event_count, appended.recent_item_ids)
    assert item in again.recent_item_ids and item in again.seen_item_ids


@pytest.mark.parametrize("shop", ["sqlite"], indirect=True)
def test_writes_do_not_read_the_registry_a_materialization_rewrites(shop):
    """Feast reads a feature view from the registry file on every lookup, and a materialization in
    the same process rewrites that registry (a view is briefly missing from it): the writes resolve
    their views once, when the service starts, and never read the registry again."""
    store, _ = shop
    online = OnlineFeatures(store)
    before = online.user(3).event_count
    registry = Path(store.config.repo_path) / store.config.registry.path
    aside = registry.rename(registry.with_name("moved-aside"))  # a lookup now fails
    try:
        online.append_interaction(3, 4, datetime(2030, 1, 4, tzinfo=UTC), write_id=301)
    finally:
        aside.rename(registry)
    assert online.user(3).event_count == before + 1


def test_an_append_keeps_as_many_events_as_the_stores_history_rows(tmp_path):
    dataset = load(SHOP)
    store = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path / "feature_repo",
                                                    history_length=3))
    materialize(store, _cut(dataset, 1.0))
    online = OnlineFeatures(store)
    user = int(dataset.interactions["user_id"].value_counts().index[0])  # more than 3 events
    assert online.history_length == 3 and len(online.user(user).recent_item_ids) == 3
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert online.append_interaction(user, 5, at, write_id=1) == 3
    assert list(online.user(user).recent_item_ids)[-1] == 5
