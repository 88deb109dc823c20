"""Benchmark: what the GraphSAGE item encoder costs in training, at index build and per request.

    twotower bench graph_towers --data=movielens-1m:PATH
    twotower bench graph_towers --part=steps --rounds=2 --data=movielens-1m:PATH

`serving` (the default part): for the `content` and `sage` item encoders (default TowerConfig
otherwise, untrained weights: the cost does not depend on their values), on the dataset's whole
interaction graph: the time to embed the catalogue as an index build does (`Artifact.embed_items`,
`repeats` builds, each from a fresh copy, so none reuses another's neighbourhood table), and the
user tower's latency for one request (`requests` single-user calls, p50/p99). The user tower does
not read the graph, so the two latencies should agree; the build time shows the graph's cost.

`steps`: one training pass (`fit`, no validation) over the LOO training rows with each encoder,
alternating for `rounds` rounds so both see the same machine load; ms per optimizer step.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"part": "serving", "data": "movielens-100k:../shared/datasets/ml-100k", "threads": 1,
            "repeats": 5, "requests": 500, "rounds": 2}
ENCODERS = ("content", "sage")


def steps(config: dict, ds) -> None:
    import tempfile

    from towers import evaluate
    from towers.features import examples, feature_store
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    with tempfile.TemporaryDirectory() as home:
        frame = examples(feature_store(ds, TowerConfig().max_len, home),
                         evaluate.make_split(ds, "loo").train)
    ms: dict[str, list[float]] = {name: [] for name in ENCODERS}
    for _ in range(config["rounds"]):
        for name in ENCODERS:
            artifact = fit(frame, ds.items, tower=TowerConfig(item_encoder=name),
                           train=TrainConfig(epochs=1))
            ms[name].append(1000 * artifact.metrics["seconds_total"] / artifact.metrics["steps"])
            print(f"{name:>8}: {artifact.metrics['steps']} steps, {ms[name][-1]:.0f} ms/step")
    for name in ENCODERS:
        print(f"{name:>8}: median {np.median(ms[name]):.0f} ms/step over {len(ms[name])} passes")


def main(argv: list[str]) -> None:
    from feature_repo.datasets import load
    from towers.artifact import Artifact
    from towers.data import Vocab, catalogue_content, encode_users
    from towers.encoders import item_encoder_inputs
    from towers.model import TowerConfig, TwoTower

    config = parse(argv, DEFAULTS)
    torch.set_num_threads(config["threads"])
    ds = load(config["data"])
    events = ds.interactions
    print(f"{config['data']}: {len(events):,} events, {len(ds.items):,} items, "
          f"threads={config['threads']}")
    if config["part"] == "steps":
        return steps(config, ds)
    user = {"user_id": [int(events["user_id"].iloc[0])], "event_timestamp": [0], "age": [30],
            "profile_tokens": [["gender=F"]], "recent_item_ids": [events["item_id"].iloc[:50].tolist()],
            "recent_timestamps": [list(range(50))]}
    for name in ENCODERS:
        tower = TowerConfig(item_encoder=name)
        vocab = Vocab.build(events, ds.items, title_buckets=tower.title_buckets,
                            profile_buckets=tower.profile_buckets)
        content = catalogue_content(vocab, ds.items) | item_encoder_inputs(tower, vocab, events)
        torch.manual_seed(0)
        model = TwoTower(tower, vocab, content).eval()
        builds = []
        for _ in range(config["repeats"]):
            fresh = Artifact(copy.deepcopy(model))
            started = time.perf_counter()
            fresh.embed_items(ds.items)
            builds.append(time.perf_counter() - started)
        batch = encode_users(vocab, user, tower.max_len)
        times = []
        with torch.inference_mode():
            for i in range(config["requests"] + 50):
                started = time.perf_counter()
                model.users(batch)
                if i >= 50:
                    times.append(time.perf_counter() - started)
        ms = 1000 * np.array(times)
        print(f"{name:>8}: catalogue embedding {np.median(builds):.3f} s (median of "
              f"{len(builds)}; min {min(builds):.3f}), user tower p50 {np.percentile(ms, 50):.2f} ms "
              f"p99 {np.percentile(ms, 99):.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
