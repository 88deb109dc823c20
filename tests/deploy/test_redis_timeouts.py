"""A Redis online store that stops answering costs each read a 503 with the reason and
`Retry-After` once its socket timeout passes (redis-py's own retries with backoff would hold it
past the request's deadline), and serving resumes with Redis."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import httpx

from feature_repo.datasets import load
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from tests.services.conftest import Service, promote_version
from tests.utils.servers import start_redis, twotower_service
from towers.features import examples
from towers.model import TowerConfig
from towers.train import TrainConfig, fit

SHOP = "synthetic:items=120,users=40,events=1500,seed=3"


def test_a_stopped_redis_is_a_503_with_the_reason_and_serving_resumes(tmp_path: Path):
    redis_server = start_redis()  # its own: stopping the session's would fail other tests
    try:
        home, dataset = tmp_path / "home", load(SHOP)
        store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo",
                                                        online_store="redis", redis_url=redis_server.url))
        materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
        artifact = fit(examples(store, dataset.interactions), dataset.items,
                       tower=TowerConfig(dim=16, max_len=50), train=TrainConfig(epochs=1, max_minutes=0.1))
        promote_version(Service("", home, dataset, artifact, "", ""))
        key, user = secrets.token_urlsafe(16), int(dataset.users["user_id"].iloc[0])
        env = {"TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": key, "TWOTOWER_ONLINE_STORE": "redis",
               "TWOTOWER_DEPENDENCY_TIMEOUT_S": "1"}
        with twotower_service(home, env, tmp_path / "serve.log") as server, \
                httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as http:
            assert http.post("/v1/recommendations", json={"user_id": user}).status_code == 200
            os.kill(redis_server.process.pid, signal.SIGSTOP)  # alive, connections open, silent
            try:
                stalled = http.post("/v1/recommendations", json={"user_id": user})
                health = http.get("/v1/health")
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
            resumed = http.post("/v1/recommendations", json={"user_id": user})
    finally:
        redis_server.stop()
    assert stalled.status_code == 503 and stalled.headers["retry-after"] == "1"
    assert stalled.json()["detail"] == f"online store unavailable: Timeout reading from {redis_server.url}"
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert health.json()["dependencies"]["online_store"]["status"] == "degraded"
    assert resumed.status_code == 200 and resumed.json()["items"]
