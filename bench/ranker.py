"""Benchmark: NDCG@10 of retrieval alone vs retrieval + learned re-rank, TEMPORAL protocol.

    twotower bench ranker --data=movielens-100k:../shared/datasets/ml-100k

Windows (`towers.evaluate.temporal_split`): the towers train on events before the inner cut T1
(early stopping on the queries at T1), the ranker on the candidates of queries at 8 cuts in
[T1, T2) (`window_queries`, targets up to T2), and both orders are measured on the queries at the
test cut T2 (targets at or after T2): the same users and targets. `--towers=DIR` reuses (or
saves) the towers so the ranker can be re-run (`towers_s` ~0 then). Also times `features` and
`Ranker.score` for one request.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; bench/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

# max_minutes caps the towers' training; candidates is how deep the ranker re-orders; latency is
# timed for `timed` candidates against a 50-item history, `repeats` times after as many warm-ups.
DEFAULTS = {"data": "movielens-100k:../shared/datasets/ml-100k", "max_minutes": 3.0,
            "candidates": 100, "seed": 0, "towers": "", "timed": 200, "repeats": 1000}


def train_towers(config: dict, ds, split, store):
    """The towers trained before T1, early-stopped on the queries at T1."""
    from towers.evaluate import Validator
    from towers.features import examples, query_features
    from towers.train import TrainConfig, fit

    return fit(examples(store, split.train), ds.items,
               train=TrainConfig(max_minutes=config["max_minutes"], seed=config["seed"]),
               validate=Validator(query_features(store, split.validation), ds.items))


def latency_us(ranker, items, config: dict) -> dict:
    """Median microseconds of `features` and `Ranker.score` for one request of real items."""
    import numpy as np

    from towers.data import unix_seconds
    from towers.ranker import Candidates, Categories, UserState, features

    rng = np.random.default_rng(config["seed"])
    n, now = config["timed"], int(unix_seconds(items["created_at"]).max())
    rows = items.iloc[rng.choice(len(items), n + 50, replace=False)]
    offered, history = Categories.encode(rows["categories"].tolist(), {}).split(n)
    candidates = Candidates(
        rows["item_id"].to_numpy()[:n], np.sort(rng.random(n, np.float32))[::-1],
        rows["price"].to_numpy()[:n], rng.integers(0, 20, n), unix_seconds(rows["created_at"])[:n],
        offered, rng.integers(0, 50, (n, 3)))
    user = UserState(history, np.sort(rng.integers(0, now, 50)), now)
    timings = {"features": [], "score": []}
    for i in range(2 * config["repeats"]):
        started = time.perf_counter()
        x = features(candidates, user)
        middle = time.perf_counter()
        ranker.score(x)
        if i >= config["repeats"]:  # the first half warms up
            timings["features"].append(middle - started)
            timings["score"].append(time.perf_counter() - middle)
    return {f"{k}_us_p50": round(1e6 * float(np.median(v)), 1) for k, v in timings.items()}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import numpy as np
    import torch

    from feature_repo.datasets import load
    from towers.artifact import Artifact
    from towers.evaluate import temporal_split
    from towers.features import feature_store
    from towers.model import TowerConfig
    from towers.ranker import RankerConfig, train_ranker, window_queries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    ds = load(config["data"])
    split = temporal_split(ds.interactions)
    saved = Path(config["towers"]) if config["towers"] else None
    artifact = Artifact.load(saved) if saved and (saved / "artifact.json").is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        # The store's history length is the towers' window, as the service's online store holds.
        store = feature_store(ds, (artifact.config if artifact else TowerConfig()).max_len, tmp)
        started = time.perf_counter()
        if artifact is None:
            artifact = train_towers(config, ds, split, store)
            if saved:
                artifact.save(saved)
        towers_s = time.perf_counter() - started
        started = time.perf_counter()
        ranker = train_ranker(artifact, ds.items, store=store,
                              train=window_queries(split.test_train), holdout=split.test,
                              config=RankerConfig(candidates=config["candidates"],
                                                  seed=config["seed"]))
        ranker_s = time.perf_counter() - started
    timed = latency_us(ranker, ds.items, config)
    result = {"data": config["data"], "protocol": "temporal", **{
        k: round(v, 4) if isinstance(v, float) else v for k, v in ranker.metrics.items()},
        "improves": ranker.improves, "candidates": config["candidates"],
        "towers_s": round(towers_s, 1), "ranker_s": round(ranker_s, 1), "timed": config["timed"],
        **timed}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
