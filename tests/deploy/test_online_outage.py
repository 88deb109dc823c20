"""An online store that stops answering (its Redis server frozen): reads and writes are 503s with
the reason, health names the store while a read waits on it, the version still answers, a write
changes neither the index nor the online store, and once the server answers again its retry
changes both."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from pathlib import Path

import httpx

from feature_repo.store import open_store
from index.catalogue import latest_stock
from services.client import RecommenderClient, ServiceUnavailableError
from services.online import OnlineFeatures
from tests.deploy.conftest import redis_shop
from tests.utils.servers import twotower_service


def test_a_frozen_online_store_is_a_503_with_the_reason_and_a_write_changes_nothing(
        own_redis, tmp_path: Path):
    dataset, config = redis_shop(tmp_path, own_redis)
    online = OnlineFeatures(open_store(config))
    stock = latest_stock(dataset.stock)
    probe, item = [i for i, q in stock.items() if q > 0][:2]
    user = int(dataset.interactions["user_id"].iloc[0])
    key = secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": key, "TWOTOWER_ONLINE_STORE": "redis",
           "TWOTOWER_DEPENDENCY_TIMEOUT_S": "1", "TWOTOWER_REQUEST_TIMEOUT_S": "3",
           "TWOTOWER_RELOAD_INTERVAL_S": "600"}  # no poll replays the failed write meanwhile
    with twotower_service(tmp_path, env, tmp_path / "serve.log") as server, \
            RecommenderClient(server.url, api_key=key, max_retries=0) as client:
        assert item in {i.item_id for i in client.similar_items(probe, k=200).items}
        client.similar_items(item, k=1)  # the item's row is cached: the write reaches its apply
        waiting: list[httpx.Response] = []
        reader = threading.Thread(target=lambda: waiting.append(httpx.post(
            f"{server.url}/v1/recommendations", json={"user_id": user},
            headers={"X-API-Key": key}, timeout=60)))
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # the server hangs: no answer, no error
        try:
            reader.start()
            health = httpx.get(f"{server.url}/v1/health", timeout=60)
            version = client.version()
            reader.join()
            try:
                client.set_stock(item, 0, idempotency_key="sold-out")
                raise AssertionError("a write to a frozen online store answered")
            except ServiceUnavailableError as error:
                write_error = error
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)

        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert health.json()["dependencies"]["online_store"]["status"] == "degraded"
        assert "online_store: " in health.json()["reason"]
        assert health.json()["dependencies"]["index"]["status"] == "ok"
        assert version.index_version >= 1
        (answer,) = waiting
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["detail"].startswith("online store")  # its error or its deadline
        assert write_error.status_code == 503
        assert write_error.message.startswith("online store unavailable: ")

        assert online.items([item])[item].stock == stock[item], "the online store is unchanged"
        assert item in {i.item_id for i in client.similar_items(probe, k=200).items}, \
            "so is the index"
        client.set_stock(item, 0, idempotency_key="sold-out")  # the retry, with the store back
        assert online.items([item])[item].stock == 0
        assert item not in {i.item_id for i in client.similar_items(probe, k=200).items}
        assert client.recommend(user).items and client.health().status == "ok"
