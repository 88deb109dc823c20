"""Nothing acknowledged is lost: writes survive kill -9 of the service, reach the next retrain's
training frame, and a full retrain and materialization never drop them from the online store."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pandas as pd

from feature_repo.store import FeatureStoreConfig, open_store
from index.events import EventLog
from services.client import RecommenderClient
from services.online import OnlineFeatures
from tests.utils.servers import twotower_service
from twotower.retrain import retrain

SHOP = "synthetic:items=200,users=60,events=3000,seed=7"
FAST = {"ops": {"two_tower_model": {"config": {
    "max_minutes": 1.0, "tower": {"dim": 32, "encoder": "mean"}, "train": {"epochs": 2}}}}}
NEW_USER = 90_000  # users first seen by the service


def _burst(url: str, key: str, items: list[int], acked: list, stop: threading.Event
           ) -> list[threading.Thread]:
    """Interactions from 4 threads until the server dies; every answered one is kept."""
    def write(thread: int) -> None:
        with RecommenderClient(url, api_key=key, max_retries=0, timeout_s=10) as client:
            n = 0
            while not stop.is_set():
                user, item = NEW_USER + thread * 1000 + n, items[n % len(items)]
                try:
                    answer = client.record_interaction(user, item)
                except Exception:  # the server was killed: this write was never acknowledged
                    return
                acked.append((user, item, pd.Timestamp(answer.ts)))
                n += 1

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    return threads


def test_acknowledged_writes_survive_a_kill_and_reach_the_next_retrain(tmp_path: Path):
    home = tmp_path / "home"
    assert retrain(home, SHOP, run_config=FAST).live_index_version is not None
    write_key = secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": write_key, "TWOTOWER_WRITE_KEYS": write_key}
    items = pd.read_parquet(home / "feature_repo" / "data" / "item_content.parquet")["item_id"].tolist()[:20]

    acked: list = []
    stop = threading.Event()
    with twotower_service(home, env, tmp_path / "serve1.log") as server:
        threads = _burst(server.url, write_key, items, acked, stop)
        while len(acked) < 60:
            stop.wait(0.05)
        server.process.kill()  # kill -9, mid-burst
        server.process.wait()
        for thread in threads:
            thread.join()

    with twotower_service(home, env, tmp_path / "serve2.log") as server:
        with RecommenderClient(server.url, api_key=write_key) as client:
            user = NEW_USER - 1
            marked = client.record_interaction(user, items[0])

    log = EventLog(data_dir=home)
    logged = {(e.body["user_id"], e.body["item_id"]) for e in log.read(kinds=["interaction"])}
    log.close()
    assert {(u, i) for u, i, _ in acked} <= logged

    retrain(home, SHOP, run_config=FAST)  # promoted or not, it reads the log and materializes
    frame = pd.read_parquet(home / "feature_repo" / "data" / "training_examples.parquet",
                            columns=["user_id", "item_id", "event_timestamp"])
    trained = set(zip(frame["user_id"], frame["item_id"], frame["event_timestamp"], strict=True))
    missing = [(u, i, ts) for u, i, ts in [*acked, (user, items[0], pd.Timestamp(marked.ts))]
               if (u, i, ts) not in trained]
    assert missing == []
    history = OnlineFeatures(open_store(FeatureStoreConfig(repo_dir=home / "feature_repo"))).user(user)
    assert items[0] in history.recent_item_ids  # the full materialization kept it
