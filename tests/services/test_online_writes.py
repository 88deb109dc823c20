"""Online history appends on the real stores (SQLite, Redis): once per write id, also when a retry
races its first attempt, while distinct writes of the same item and second each append."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_repo.datasets import load
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from services.online import OnlineFeatures
from tests.utils.servers import start_redis

SHOP = "synthetic:items=30,users=10,events=200,seed=3"


@pytest.fixture(params=["sqlite", "redis"])
def online(request, tmp_path: Path) -> Iterator[OnlineFeatures]:
    redis = start_redis() if request.param == "redis" else None
    try:
        dataset = load(SHOP)
        store = build_store(dataset, FeatureStoreConfig(
            repo_dir=tmp_path / "feature_repo", online_store=request.param,
            **({"redis_url": redis.url} if redis else {})))
        materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
        yield OnlineFeatures(store)
    finally:
        if redis is not None:
            redis.stop()


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
