"""Benchmark: HNSW recall@10 against exact search on real tower embeddings, by ef_construct and ef.

    twotower bench index_tower_recall --data=synthetic:items=10000,users=5000,events=140000,seed=0
    twotower bench index_tower_recall --quant= --save=/tmp/bench/tower_shop.npz   # for bench/index.py

Trains the towers briefly on the dataset's Feast rows (as the pipeline's `two_tower_model` does),
embeds the catalogue, builds one Qdrant Edge version per (quantization, ef_construct) and measures
recall@10 of unfiltered search for test-window users against the exact dot-product top 10.
`--save` keeps the item vectors, their categories and the test users' vectors for `bench/index.py
--data=tower:FILE`, which fits its 1M-item generator to them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {
    "data": "synthetic:items=10000,users=5000,events=140000,seed=0",
    "max_minutes": 1.0,  # towers' training budget
    "queries": 200,  # test-window users, as the pipeline's recall check samples them
    "quant": "int8,none",
    "ef_construct": "64,128",
    "ef": "64,128,256",
    "save": "",  # write item/user vectors and item categories to this .npz ("" = don't)
}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import pandas as pd
    import torch

    from feature_repo.datasets import load
    from index import EdgeSettings, IndexSpec, SearchFilters, open_backend
    from index.catalogue import item_batch, latest_stock
    from towers import evaluate
    from towers.features import examples, feature_store, with_features
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    torch.manual_seed(0)
    home = Path(tempfile.mkdtemp(prefix="bench-recall-"))
    dataset = load(config["data"])
    tower = TowerConfig()
    store = feature_store(dataset, tower.max_len, home)
    split = with_features(evaluate.make_split(dataset, "temporal"), store)
    frame = examples(store, dataset.interactions)
    frame = frame[frame["event_timestamp"] < pd.Timestamp(split.notes["validation"]["cut"])]
    artifact = fit(frame, dataset.items, tower=tower, train=TrainConfig(max_minutes=config["max_minutes"]))
    vectors = artifact.embed_items(dataset.items)
    ids = dataset.items["item_id"].to_numpy()
    rows = np.sort(np.random.default_rng(0).permutation(len(split.test.frame))[:config["queries"]])
    queries = artifact.embed_users(split.test.frame.iloc[rows])
    if config["save"]:
        users = artifact.embed_users(split.test.frame)
        Path(config["save"]).parent.mkdir(parents=True, exist_ok=True)
        np.savez(config["save"], item_vectors=vectors, user_vectors=users,
                 categories=np.array(["|".join(c) for c in dataset.items["categories"]]))
        print(f"saved={config['save']} items={len(vectors)} users={len(users)}", flush=True)
    exact = [set(ids[np.argsort(-(vectors @ q))[:10]].tolist()) for q in queries]
    batch = item_batch(dataset.items, vectors, latest_stock(dataset.stock))
    everything = SearchFilters(in_stock_only=False)
    for quant in filter(None, config["quant"].split(",")):
        for ef_construct in map(int, config["ef_construct"].split(",")):
            spec = IndexSpec(dim=vectors.shape[1], quantization=quant, hnsw_ef_construct=ef_construct)
            with open_backend(EdgeSettings(path=home / f"{quant}-{ef_construct}")) as backend:
                location = backend.location_for(1)
                backend.create(location, spec)
                backend.upsert(batch, location=location)
                backend.finish(location)
                for ef in map(int, config["ef"].split(",")):
                    recall = np.mean([len(truth & {h.item_id for h in backend.search(
                        q, k=10, filters=everything, location=location, hnsw_ef=ef)}) / 10
                        for q, truth in zip(queries, exact, strict=True)])
                    print(f"items={len(ids)} quant={quant} ef_construct={ef_construct} ef={ef} "
                          f"queries={len(queries)} recall_at_10={recall:.4f}", flush=True)


if __name__ == "__main__":
    main()
