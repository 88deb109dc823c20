"""Benchmark: write throughput with the event log on, over HTTP (interactions/s at p99 <= 10 ms).

    twotower bench writes
    twotower bench writes --online_store=redis --seconds=10
    twotower bench writes --part=steps   # in-process: each step of a write, timed alone

Builds a small shop (Feast store, towers, one Edge index version) in a temporary data directory,
starts `twotower serve` on loopback, and posts interactions from 1, 2, 4, 8 ... client threads (each
its own connection, each call a new Idempotency-Key) for `seconds` per step. Every answer is a
write logged and fsync'd (SQLite WAL, synchronous=FULL) before the online history append. Prints
each step's throughput and latency percentiles, and the best throughput whose p99 is <= 10 ms.
`--part=steps` times instead, in this process and one write at a time, the three steps of a write:
the log's durable commit, the online history append, handing over the answer.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; tests/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"data": "synthetic:items=500,users=200,events=5000,seed=1", "online_store": "sqlite",
            "seconds": 8.0, "max_threads": 16, "p99_ms": 10.0, "part": "http", "writes": 400}


def _home(data: str, home: Path, online_store: str, redis_url: str | None) -> None:
    from feature_repo.datasets import load
    from feature_repo.store import FeatureStoreConfig, build_store, materialize
    from index.model_store import publish
    from towers.features import examples
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    dataset = load(data)
    config = FeatureStoreConfig(repo_dir=home / "feature_repo", online_store=online_store,
                                **({"redis_url": redis_url} if redis_url else {}))
    store = build_store(dataset, config)
    materialize(store, dataset.last_event.to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(dim=32, max_len=50), train=TrainConfig(epochs=1, max_minutes=0.2))
    registry = publish(artifact, dataset, home)
    registry.backend.close()
    registry.close()


def _step(url: str, key: str, threads: int, seconds: float, users: list[int], items: list[int]
          ) -> np.ndarray:
    import httpx

    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    def post(thread: int) -> None:
        rng = np.random.default_rng(thread)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}) as http:
            while time.monotonic() < deadline:
                body = {"user_id": int(rng.choice(users)), "item_id": int(rng.choice(items))}
                started = time.perf_counter()
                answer = http.post("/v1/interactions", json=body,
                                   headers={"Idempotency-Key": secrets.token_hex(12)})
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()

    workers = [threading.Thread(target=post, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return np.array(latencies) * 1000


def _steps(home: Path, online_store: str, redis_url: str | None, writes: int, users: list[int],
           items: list[int]) -> None:
    from feature_repo.store import FeatureStoreConfig, open_store
    from index.events import EventLog
    from services.online import OnlineFeatures

    online = OnlineFeatures(open_store(FeatureStoreConfig(
        repo_dir=home / "feature_repo", online_store=online_store,
        **({"redis_url": redis_url} if redis_url else {}))))
    log = EventLog(data_dir=home)
    times: dict[str, list[float]] = {"log_commit": [], "history_append": [], "answer": []}
    for n in range(writes):
        user, item = users[n % len(users)], items[n % len(items)]
        started = time.perf_counter()
        event = log.record(secrets.token_hex(12), "interaction",
                           {"user_id": user, "item_id": item, "ts": None})
        logged = time.perf_counter()
        online.append_interaction(user, item, event.logged_at, event.seq)
        appended = time.perf_counter()
        log.answer(event.seq, {"user_id": user})
        times["log_commit"].append(logged - started)
        times["history_append"].append(appended - logged)
        times["answer"].append(time.perf_counter() - appended)
    log.close()
    for step, seconds in times.items():
        ms = np.array(seconds) * 1000
        print(json.dumps({"step": step, "p50_ms": round(float(np.percentile(ms, 50)), 2),
                          "p99_ms": round(float(np.percentile(ms, 99)), 2)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    if config["part"] not in ("http", "steps"):
        raise SystemExit(f"part={config['part']!r}: http or steps")
    from feature_repo.datasets import load
    from tests.utils.servers import start_redis, twotower_service

    redis = start_redis() if config["online_store"] == "redis" else None
    dataset = load(config["data"])
    users, items = dataset.users["user_id"].tolist(), dataset.items["item_id"].tolist()
    try:
        with tempfile.TemporaryDirectory(prefix="twotower-bench-writes-") as tmp:
            home = Path(tmp)
            _home(config["data"], home, config["online_store"], redis.url if redis else None)
            if config["part"] == "steps":
                _steps(home, config["online_store"], redis.url if redis else None,
                       config["writes"], users, items)
                return
            key = secrets.token_urlsafe(16)
            env = {"TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": key,
                   "TWOTOWER_ONLINE_STORE": config["online_store"]}
            steps = []
            with twotower_service(home, env, home / "serve.log") as server:
                _step(server.url, key, 1, 1.0, users, items)  # warm-up
                threads = 1
                while threads <= config["max_threads"]:
                    ms = _step(server.url, key, threads, config["seconds"], users, items)
                    step = {"threads": threads, "writes_per_s": round(len(ms) / config["seconds"], 1),
                            "p50_ms": round(float(np.percentile(ms, 50)), 2),
                            "p99_ms": round(float(np.percentile(ms, 99)), 2)}
                    print(json.dumps(step), flush=True)
                    steps.append(step)
                    threads *= 2
    finally:
        if redis is not None:
            redis.stop()
    within = [s for s in steps if s["p99_ms"] <= config["p99_ms"]]
    best = max(within, key=lambda s: s["writes_per_s"]) if within else None
    print(json.dumps({"online_store": config["online_store"], "best_within_p99": best}))


if __name__ == "__main__":
    main()
