"""Two service processes on one Redis online store and one event log, several threads each: every
acknowledged write is present exactly once (also when its retry reaches the other process), none
answers 5xx, and both processes' indexes follow the stock either of them set."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from feature_repo.store import open_store
from index.events import EventLog
from services.client import RecommenderClient
from services.online import OnlineFeatures
from tests.deploy.conftest import redis_shop
from tests.utils.servers import twotower_service

THREADS, WRITES = 4, 40


def test_two_processes_and_threads_apply_every_acknowledged_write_once(own_redis, tmp_path: Path):
    home = tmp_path / "a"
    dataset, config = redis_shop(home, own_redis)
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

    def write(url: str, other: str, thread: int) -> None:
        with RecommenderClient(url, api_key=key) as client, \
                RecommenderClient(other, api_key=key) as retrying:
            for n in range(WRITES):
                try:
                    if n % 8 == 7:  # stock: this thread's own item, last set to 0
                        client.set_stock(items[thread], 0)
                    else:
                        user, write_key = users[n % len(users)], f"{url}-{thread}-{n}"
                        first = client.record_interaction(user, items[n], idempotency_key=write_key)
                        if n % 4 == 0:  # its answer "lost": the retry reaches the other process
                            assert retrying.record_interaction(
                                user, items[n], idempotency_key=write_key).ts == first.ts
                        acked.append((user, write_key))
                except Exception as error:  # collected: the assertion names it
                    errors.append(error)

    with twotower_service(home, env, tmp_path / "a.log") as a, \
            twotower_service(tmp_path / "b", env, tmp_path / "b.log") as b:
        workers = [threading.Thread(target=write, args=(server.url, other.url, t))
                   for t, (server, other) in enumerate([(a, b), (b, a)] * THREADS)]
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
