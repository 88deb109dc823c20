"""Benchmark: recommendation latency in-process (by stage) and over HTTP through the client.

    twotower bench serving
    twotower bench serving --rps=200 --seconds=60 --home=.twotower/bench-serving
    twotower bench serving --rps=400 --workers=2 --parts=http

Builds (once; `--home` keeps it; `--parts=` only builds) the shop `data` (100k items): Feast
store, towers trained for `train_minutes` on the Feast training frame (served with a
`popularity_prior` of that weight, 0 by default), an int8 Qdrant Edge version of every item (float32
with a prior), and a re-ranker of production shape (`ranker_trees` LightGBM lambdarank
trees of 15 leaves, re-ranking `RankerConfig.candidates` candidates, fitted on random rows: its
quality does not change its latency, and training a real one here would take longer than the
benchmark). Then:

1. in-process: loading the live version (seconds, RSS added: item cache, model, shard), then
   `Engine.recommend` for `requests` random users (after `warmup` untimed), p50/p99 in total
   and per stage (features, tower, ANN, re-rank), and the process's RSS;
2. over HTTP: `twotower serve --workers` in its own processes (log in `home/serve.log`), one
   aiohttp session sending an open-loop `rps` requests per second for `seconds` (after `warmup`
   untimed): p50/p99 from each request's due time, errors, the server processes' CPU time per
   request and their RSS at the end. The load runs on the same cores as the server, so it is
   aiohttp, at a fifth of the CPU per request of the httpx-based `AsyncRecommenderClient`.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import shutil
import subprocess
import sys
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
    "home": ".twotower/bench-serving",  # built once, reused while `data` and the index defaults hold
    "train_minutes": 2.0,
    # weight of the served popularity prior (towers/prior.py); > 0 serves 65-d vectors from a
    # float32 version (index.model_store.default_quantization)
    "popularity_prior": 0.0,
    "ranker_trees": 60,  # the most a cross-validated ranker kept in bench/ranker.py (7 to 61)
    "k": 10,
    "requests": 3000,  # timed in-process requests
    "warmup": 300,  # untimed requests first, in-process and over HTTP
    "rps": 200,
    "workers": 1,  # `twotower serve --workers`
    "rerank_candidates": 0,  # 0 = the ranker's own depth (RankerConfig.candidates)
    "seconds": 60,
    "seed": 0,
    "parts": "inproc,http",  # comma list of inproc, http; empty = only build the home
}


def build(config: dict, home: Path) -> None:
    """Features, towers and a live index version under `home` (skipped when already built)."""
    from feature_repo.datasets import load
    from feature_repo.store import FeatureStoreConfig, build_store, materialize
    from feature_repo.tables import HISTORY_LENGTH
    from index.model_store import publish
    from towers.features import examples
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    marker = home / "BUILT"
    if marker.is_file():
        if marker.read_text() == _build_key(config):
            return
        shutil.rmtree(home)  # built for other data or index defaults: start afresh
    dataset = load(config["data"])
    store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo"))
    materialize(store, dataset.last_event.to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(max_len=HISTORY_LENGTH),
                   train=TrainConfig(epochs=1, max_minutes=config["train_minutes"], seed=config["seed"],
                                     popularity_prior=config["popularity_prior"]))
    registry = publish(artifact, dataset, home, config={"data": config["data"]})
    registry.backend.close()  # the Edge shard is single-process: the engine copies it next
    registry.close()
    marker.write_text(_build_key(config))


def _build_key(config: dict) -> str:
    """What a build depends on: the data, the prior and the index defaults (a change rebuilds)."""
    from index import IndexSpec

    defaults = {name: f.default for name, f in IndexSpec.model_fields.items() if name != "dim"}
    return json.dumps({"data": config["data"], "index": defaults,
                       **({"prior": config["popularity_prior"]} if config["popularity_prior"] else {})},
                      sort_keys=True)


def save_ranker(config: dict, home: Path) -> None:
    """A LightGBM lambdarank model of `ranker_trees` trees in the live model version's directory."""
    import lightgbm as lgb

    from index.registry import Registry
    from towers.ranker import FEATURES, Ranker, RankerConfig

    registry = Registry(data_dir=home)
    location = Path(registry.get_model(registry.live().model_version_id).location)
    registry.close()
    rng = np.random.default_rng(config["seed"])
    x = rng.normal(size=(200 * 100, len(FEATURES))).astype(np.float32)
    rows = lgb.Dataset(x, (rng.random(len(x)) < 0.1).astype(np.float32), group=np.full(200, 100))
    booster = lgb.train({"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 5,
                         "num_threads": 1, "verbosity": -1, "seed": config["seed"]}, rows,
                        num_boost_round=config["ranker_trees"])
    depth = RankerConfig().candidates
    # Timing only: recorded as judged and improving, so the service re-ranks with it. This home's
    # own, so each run replaces the last run's (`ranker_trees` may differ); nothing serves it now.
    shutil.rmtree(location / "ranker", ignore_errors=True)
    Ranker(booster, metrics={"ndcg10_gain_low": 0.01}, improves=True,
           config={"candidates": depth}).save(location / "ranker")


def requests(config: dict, home: Path, n: int, seed: int) -> list:
    """`n` requests for users drawn (seeded) from every user with a profile."""
    import pandas as pd

    from services.schemas import RecommendationRequest

    users = pd.read_parquet(home / "feature_repo" / "data" / "user_profile.parquet",
                            columns=["user_id"])["user_id"].to_numpy()
    chosen = np.random.default_rng(seed).choice(users, n)
    return [RecommendationRequest(user_id=int(u), k=config["k"]) for u in chosen]


def in_process(config: dict, home: Path) -> dict:
    from services.api.config import Settings
    from services.api.main import open_engine
    from services.engine import STAGES

    # The engine exactly as `twotower serve --home` opens it (its index and store settings; the
    # key only satisfies the settings' validation: nothing calls over HTTP here).
    key = secrets.token_urlsafe(16)
    engine = open_engine(Settings(data_dir=home, read_keys=[key], write_keys=[key],
                                  rerank_candidates=config["rerank_candidates"] or None))
    started, rss_before = time.perf_counter(), rss_mb(os.getpid())
    engine.refresh()
    loaded = {"load_s": round(time.perf_counter() - started, 1),
              "load_rss_mb": round(rss_mb(os.getpid()) - rss_before)}
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
    engine.backend.close()  # drops this process's copy of the shard
    engine.registry.close()
    out = {**loaded, "inproc_rss_mb": round(rss_mb(os.getpid())),
           **_percentiles("inproc", totals[config["warmup"]:])}
    for stage, values in stages.items():
        if values:  # "new_item" runs only when the prior would hide new items
            out |= _percentiles(stage, values)
    out["ranking"] = engine.snapshot().ranking
    return out


def _percentiles(name: str, seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {f"{name}_p50_ms": round(float(np.percentile(ms, 50)), 3),
            f"{name}_p99_ms": round(float(np.percentile(ms, 99)), 3)}


def over_http(config: dict, home: Path) -> dict:
    from tests.utils.servers import free_port, wait_for_port

    port = free_port()
    key = secrets.token_urlsafe(16)
    env = {**os.environ, "TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": secrets.token_urlsafe(16)}
    if config["rerank_candidates"]:
        env["TWOTOWER_RERANK_CANDIDATES"] = str(config["rerank_candidates"])
    log = home / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", "--home",
                                   str(home), "--port", str(port), "--workers",
                                   str(config["workers"])], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server, log, timeout_s=300)  # fails with the log if the server exits
        return _load(config, home, f"http://127.0.0.1:{port}", key, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status: no VmRSS")


def _tree(pid: int) -> list[int]:
    """A process and its children (uvicorn's workers), Linux."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(child for c in children for child in _tree(int(c)))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and its children (Linux)."""
    total = 0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _load(config: dict, home: Path, url: str, key: str, server_pid: int) -> dict:
    """Open loop: request i is sent at start + i / rps by one asyncio client, whatever came back.

    Latency runs from the due time, so a late send (a busy client) counts against it. One event
    loop keeps the load generator cheap: threads of sync clients queue on the GIL (up to its 5 ms
    switch interval per hand-off), which inflates the latency they measure.
    """
    import asyncio

    import aiohttp

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

    async def send(client: aiohttp.ClientSession, i: int, at: float) -> None:
        try:
            async with client.post("/v1/recommendations", data=batch[i].model_dump_json(),
                                   headers={"Content-Type": "application/json"}) as response:
                answer = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {answer}")
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
            return
        if i >= config["warmup"]:
            latencies.append(time.perf_counter() - at)

    async def run() -> None:
        async with aiohttp.ClientSession(url, headers={"X-API-Key": key}) as client:
            start, sent = time.perf_counter() + 0.5, []
            for i in range(len(batch)):
                at = start + i / config["rps"]
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                sent.append(asyncio.create_task(send(client, i, at)))
            await asyncio.gather(*sent)

    # The requests and everything imported are long-lived: exempt them from the collector, whose
    # full passes would otherwise pause this client mid-run (as the service does after a load).
    gc.collect()
    gc.freeze()
    cpu, client_cpu = _cpu_s(server_pid), time.process_time()
    asyncio.run(run())
    out = _percentiles("http", latencies)
    out |= {"http_requests": len(latencies), "http_errors": len(errors),
            "server_cpu_ms_per_request": round(1000 * (_cpu_s(server_pid) - cpu) / len(batch), 3),
            "client_cpu_ms_per_request": round(1000 * (time.process_time() - client_cpu) / len(batch), 3),
            "server_rss_mb": round(sum(rss_mb(p) for p in _tree(server_pid)))}
    if errors:
        out["first_error"] = errors[0]
    return out


def python_loop_s() -> float:
    """Seconds for 10M additions in a Python loop: how fast this box's CPU is right now.

    The 2 shared cores' speed varies by 2x between hours (hypervisor steal); this puts each run's
    latencies in proportion. (1.3-1.7 s was measured on the slow hours of 26 Nov.)
    """
    started, total = time.perf_counter(), 0
    for i in range(10_000_000):
        total += i
    return round(time.perf_counter() - started, 2)


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    home = Path(config["home"]).resolve()
    build(config, home)
    save_ranker(config, home)
    parts = {p for p in str(config["parts"]).split(",") if p}
    if parts - {"inproc", "http"}:
        raise SystemExit(f"--parts: unknown {sorted(parts - {'inproc', 'http'})}; choose from inproc, http")
    if not parts:
        return
    result = {"data": config["data"], "k": config["k"], "python_loop_s": python_loop_s()}
    if "inproc" in parts:
        result |= in_process(config, home)
    if "http" in parts:
        result |= {"rps": config["rps"], "seconds": config["seconds"], **over_http(config, home)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
