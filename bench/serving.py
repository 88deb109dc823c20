"""Benchmark: recommendation latency in-process (by stage) and over HTTP through the client.

    twotower bench serving
    twotower bench serving --rps=200 --seconds=60 --home=.twotower/bench-serving

Builds (once; `--home` keeps it) the shop `data` (100k items): Feast store, towers trained
for `train_minutes` on the Feast training frame, an int8 Qdrant Edge version of every item, and a
re-ranker of production shape (`ranker_trees` LightGBM lambdarank trees of 15 leaves, re-ranking
100 candidates, fitted on random rows: its quality does not change its latency, and training a
real one here would take longer than the benchmark). Then:

1. in-process: `Recommender.recommend` for `requests` random users (after `warmup` untimed),
   p50/p99 in total and per stage (features, tower, ANN, re-rank);
2. over HTTP: `twotower serve` in its own process, `threads` `RecommenderClient`s sending an
   open-loop `rps` requests per second for `seconds` (after `warmup` untimed): p50/p99 from each
   request's due time, and errors. (The async client spends ~1.5 ms of CPU per call, against
   ~0.8 ms for the sync one: on two shared cores it could not send 200 per second.)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; bench/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {
    # 100k items; users and events only give the towers something to learn: one epoch of
    # shop-100k's 2M events takes over an hour on two cores, and latency does not depend on it
    "data": "synthetic:items=100000,users=2000,events=30000,seed=0",
    "home": ".twotower/bench-serving",  # built once, reused while its BUILT file names `data`
    "train_minutes": 2.0,
    "ranker_trees": 60,  # the most a cross-validated ranker kept in bench/ranker.py (7 to 61)
    "k": 10,
    "requests": 3000,  # timed in-process requests
    "warmup": 300,  # untimed requests first, in-process and over HTTP
    "rps": 200,
    "rerank_candidates": 0,  # 0 = the ranker's own depth (100); fewer trade quality for time
    "threads": 16,  # concurrent clients: enough that a slow answer does not hold back the next
    "seconds": 60,
    "seed": 0,
}


def build(config: dict, home: Path) -> None:
    """Features, towers and a live index version under `home` (skipped when already built)."""
    from feature_repo.datasets import load
    from feature_repo.store import FeatureStoreConfig, build_store, materialize
    from feature_repo.tables import HISTORY_LENGTH
    from pipelines.versions import publish
    from towers.features import examples
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    marker = home / "BUILT"
    if marker.is_file() and marker.read_text() == config["data"]:
        return
    dataset = load(config["data"])
    store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo"))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(max_len=HISTORY_LENGTH),
                   train=TrainConfig(epochs=1, max_minutes=config["train_minutes"], seed=config["seed"]))
    registry = publish(artifact, dataset, home, config={"data": config["data"]})
    registry.store.close()  # the Edge shard is single-process: the engine opens it next
    registry.close()
    marker.write_text(config["data"])


def save_ranker(config: dict, home: Path) -> None:
    """A LightGBM lambdarank model of `ranker_trees` trees in the live model version's directory."""
    import lightgbm as lgb

    from pipelines.registry import Registry
    from towers.ranker import FEATURES, Ranker

    registry = Registry(data_dir=home)
    location = Path(registry.get_model(registry.live().model_version_id).location)
    registry.close()
    rng = np.random.default_rng(config["seed"])
    x = rng.normal(size=(200 * 100, len(FEATURES))).astype(np.float32)
    rows = lgb.Dataset(x, (rng.random(len(x)) < 0.1).astype(np.float32), group=np.full(200, 100))
    booster = lgb.train({"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 5,
                         "num_threads": 1, "verbosity": -1, "seed": config["seed"]}, rows,
                        num_boost_round=config["ranker_trees"])
    Ranker(booster, metrics={}, improves=True, config={"candidates": 100}).save(location / "ranker")


def requests(config: dict, home: Path, n: int, seed: int) -> list:
    """`n` requests for users drawn (seeded) from every user with a profile."""
    import pandas as pd

    from services.schemas import RecommendationRequest

    users = pd.read_parquet(home / "feature_repo" / "data" / "user_profile.parquet",
                            columns=["user_id"])["user_id"].to_numpy()
    chosen = np.random.default_rng(seed).choice(users, n)
    return [RecommendationRequest(user_id=int(u), k=config["k"]) for u in chosen]


def in_process(config: dict, home: Path) -> dict:
    from feature_repo.store import FeatureStoreConfig, open_store
    from pipelines.index import IndexSettings, open_backend
    from pipelines.registry import Registry
    from services.recommender import STAGES, Recommender

    engine = Recommender(store=open_store(FeatureStoreConfig(repo_dir=home / "feature_repo")),
                         backend=open_backend(IndexSettings(path=home / "index")),
                         registry=Registry(data_dir=home),
                         rerank_candidates=config["rerank_candidates"] or None)
    engine.refresh()
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    engine.on_stage.append(lambda stage, seconds: stages[stage].append(seconds))
    batch = requests(config, home, config["warmup"] + config["requests"], config["seed"])
    totals = []
    for i, request in enumerate(batch):
        if i == config["warmup"]:
            for values in stages.values():
                values.clear()
        started = time.perf_counter()
        engine.recommend(request)
        totals.append(time.perf_counter() - started)
    engine.backend.close()  # the Edge shard is single-process: the server opens it next
    engine.registry.close()
    out = _percentiles("inproc", totals[config["warmup"]:])
    for stage, values in stages.items():
        out |= _percentiles(stage, values)
    out["ranking"] = engine.snapshot().ranking
    return out


def _percentiles(name: str, seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {f"{name}_p50_ms": round(float(np.percentile(ms, 50)), 3),
            f"{name}_p99_ms": round(float(np.percentile(ms, 99)), 3)}


def over_http(config: dict, home: Path) -> dict:
    from tests.utils.servers import free_port

    port = free_port()
    key = secrets.token_urlsafe(16)
    env = {**os.environ, "TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": secrets.token_urlsafe(16)}
    if config["rerank_candidates"]:
        env["TWOTOWER_RERANK_CANDIDATES"] = str(config["rerank_candidates"])
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--home", str(home),
                               "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        return _load(config, home, f"http://127.0.0.1:{port}", key, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(config: dict, home: Path, url: str, key: str, server_pid: int) -> dict:
    """Open loop: request i is due at start + i / rps; `threads` sync clients send them.

    Latency runs from the due time, so a late send (every client busy) counts against it.
    """
    from services.client import RecommenderClient

    with RecommenderClient(url, api_key=key, max_retries=0) as probe:
        for _ in range(600):  # the server imports torch and loads the version first
            try:
                if probe.health().status == "ok":
                    break
            except Exception:
                pass
            time.sleep(0.5)
    batch = requests(config, home, config["warmup"] + config["rps"] * config["seconds"],
                     config["seed"] + 1)
    latencies: list[float] = []
    errors: list[str] = []
    due = iter(range(len(batch)))
    lock = threading.Lock()
    start = time.perf_counter() + 0.5

    def worker() -> None:
        with RecommenderClient(url, api_key=key, max_retries=0) as client:
            while True:
                with lock:
                    i = next(due, None)
                if i is None:
                    return
                at = start + i / config["rps"]
                time.sleep(max(0.0, at - time.perf_counter()))
                try:
                    client.recommend(batch[i].user_id, k=batch[i].k)
                except Exception as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    continue
                if i >= config["warmup"]:
                    latencies.append(time.perf_counter() - at)

    threads = [threading.Thread(target=worker) for _ in range(config["threads"])]
    cpu = _cpu_s(server_pid)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = _percentiles("http", latencies)
    out |= {"http_requests": len(latencies), "http_errors": len(errors),
            "server_cpu_ms_per_request": round(1000 * (_cpu_s(server_pid) - cpu) / len(batch), 3)}
    if errors:
        out["first_error"] = errors[0]
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    home = Path(config["home"]).resolve()
    build(config, home)
    save_ranker(config, home)
    result = {"data": config["data"], "k": config["k"], **in_process(config, home)}
    result |= {"rps": config["rps"], "seconds": config["seconds"], **over_http(config, home)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
