"""Two service processes on one Redis online store and one event log, several threads each: every
acknowledged write is present exactly once, none answers 5xx, and both processes' indexes follow
the stock either of them set."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_repo.datasets import load
from feature_repo.store import FeatureStoreConfig, build_store, materialize, open_store
from index.events import EventLog
from services.client import RecommenderClient
from services.online import OnlineFeatures
from tests.services.conftest import Service, promote_version
from tests.utils.servers import RedisServer, start_redis, twotower_service
from towers.features import examples
from towers.model import TowerConfig
from towers.train import TrainConfig, fit

SHOP = "synthetic:items=200,users=60,events=3000,seed=7"
THREADS, WRITES = 4, 40


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: the session's is shared by tests that count its keys."""
    server = start_redis()
    yield server
    server.stop()


def test_two_processes_and_threads_apply_every_acknowledged_write_once(own_redis, tmp_path: Path):
    redis_server = own_redis
    home = tmp_path / "a"
    dataset = load(SHOP)
    config = FeatureStoreConfig(repo_dir=home / "feature_repo", online_store="redis",
                                redis_url=redis_server.url)
    store = build_store(dataset, config)
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(dim=16, max_len=50), train=TrainConfig(epochs=1, max_minutes=0.1))
    promote_version(Service("", home, dataset, artifact, "", ""))
    shutil.copytree(home, tmp_path / "b")  # the second replica: its own copy of the Edge shard
    with sqlite3.connect(tmp_path / "b" / "registry.db") as registry:  # (an Edge shard admits one process)
        registry.execute("UPDATE index_versions SET location = replace(location, ?, ?)",
                         (str(home), str(tmp_path / "b")))

    users = dataset.users["user_id"].tolist()[:5]  # few users: writers contend for each history
    online = OnlineFeatures(open_store(config))
    before = {u: online.user(u).event_count for u in users}
    items = dataset.items["item_id"].tolist()
    key = secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": key, "TWOTOWER_ONLINE_STORE": "redis",
           "TWOTOWER_RELOAD_INTERVAL_S": "0.2",
           "TWOTOWER_EVENT_LOG_URL": f"sqlite:///{home / 'events.db'}"}
    acked: list[tuple[int, str]] = []
    errors: list[Exception] = []

    def write(url: str, thread: int) -> None:
        with RecommenderClient(url, api_key=key) as client:
            for n in range(WRITES):
                try:
                    if n % 8 == 7:  # stock: this thread's own item, last set to 0
                        client.set_stock(items[thread], 0)
                    else:
                        user = users[n % len(users)]
                        client.record_interaction(user, items[n], idempotency_key=f"{url}-{thread}-{n}")
                        acked.append((user, f"{url}-{thread}-{n}"))
                except Exception as error:  # collected: the assertion names it
                    errors.append(error)

    with twotower_service(home, env, tmp_path / "a.log") as a, \
            twotower_service(tmp_path / "b", env, tmp_path / "b.log") as b:
        workers = [threading.Thread(target=write, args=(server.url, t))
                   for t, server in enumerate([a, b] * THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        time.sleep(1.0)  # a few polls: each process replays the stock the other logged
        neighbours = []
        for server in (a, b):
            with RecommenderClient(server.url, api_key=key) as client:
                neighbours.append({i.item_id for i in client.similar_items(
                    items[100], k=200, in_stock_only=True).items})

    assert errors == []
    log = EventLog(data_dir=home)
    logged = [e.key for e in log.read(kinds=["interaction"])]
    log.close()
    assert sorted(logged) == sorted(k for _, k in acked)
    for user in users:
        assert online.user(user).event_count == before[user] + sum(u == user for u, _ in acked)
    zeroed = set(items[:2 * THREADS])
    assert all(not (zeroed & found) for found in neighbours)
