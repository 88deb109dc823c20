"""Benchmark: time and peak memory to build the feature tables and a training frame.

    twotower bench features --data=movielens-100k:../shared/datasets/ml-100k
    twotower bench features --data=synthetic:shop-1m --frame_rows=1000000
    twotower bench features --data=movielens-100k:../shared/datasets/ml-100k --offline_store=duckdb
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

# frame_rows 0 takes every interaction; chunk_rows is how many entity rows Feast joins at once;
# stream=1 writes the frame to parquet chunk by chunk (write_training_frame) instead of memory;
# offline_store: asof (the ASOF join, the default) or duckdb (Feast's own point-in-time join).
DEFAULTS = {"data": "synthetic:shop-small", "frame_rows": 0, "chunk_rows": 500_000, "stream": 0,
            "offline_store": "asof", "seed": 0}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    from feature_repo.datasets import load
    from feature_repo.store import (
        FeatureStoreConfig,
        apply,
        render_repo,
        training_frame,
        write_training_frame,
    )
    from feature_repo.tables import write_feature_tables

    timings = {}
    started = time.perf_counter()
    dataset = load(config["data"])
    timings["load_s"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        repo = render_repo(FeatureStoreConfig(repo_dir=Path(tmp), offline_store=config["offline_store"]))
        started = time.perf_counter()
        write_feature_tables(dataset, repo / "data")
        timings["tables_s"] = time.perf_counter() - started
        rss_tables = peak_rss_mb()
        started = time.perf_counter()
        store = apply(repo)
        timings["apply_s"] = time.perf_counter() - started
        entities = dataset.interactions[["user_id", "item_id", "event_timestamp"]]
        if config["frame_rows"]:
            entities = entities.sample(config["frame_rows"], random_state=config["seed"])
        started = time.perf_counter()
        if config["stream"]:
            rows = write_training_frame(store, entities, repo / "frame",
                                        chunk_rows=config["chunk_rows"])
        else:
            rows = len(training_frame(store, entities, chunk_rows=config["chunk_rows"]))
        timings["frame_s"] = time.perf_counter() - started
    result = {"data": config["data"], "events": len(dataset.interactions), "frame_rows": rows,
              "chunk_rows": config["chunk_rows"], "stream": config["stream"],
              "offline_store": config["offline_store"],
              **{k: round(v, 1) for k, v in timings.items()},
              "frame_rows_per_s": round(rows / timings["frame_s"]),
              "peak_rss_mb_after_tables": round(rss_tables), "peak_rss_mb": round(peak_rss_mb())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
