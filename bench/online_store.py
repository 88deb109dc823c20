"""Benchmark: Redis memory per user and per item once a dataset is materialized into it.

    twotower bench online_store --data=movielens-100k:../shared/datasets/ml-100k
    twotower bench online_store --data=movielens-100k:../shared/datasets/ml-100k --listpack_value=1024

Starts a throwaway redis-server (tests/utils/servers.py), builds and applies the Feast repository with
the Redis online store, materializes every view, and reads `INFO memory` and `MEMORY USAGE` of
every key. Feast keeps one Redis hash per entity (all of a user's views in one key), so the
per-key figures are the bytes a user or an item costs; docs/scaling.md sizes Redis Cluster with them.
Redis packs a small hash into one listpack only while every value is at most
`hash-max-listpack-value` bytes (default 64); `--listpack_value` sets it (0 keeps the default).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; tests/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"data": "synthetic:shop-small", "listpack_value": 0}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import redis

    from feature_repo.datasets import load
    from feature_repo.store import FeatureStoreConfig, build_store, materialize
    from tests.utils.servers import start_redis

    dataset = load(config["data"])
    options = ["--hash-max-listpack-value", str(config["listpack_value"])] if config["listpack_value"] else []
    server = start_redis(*options)
    try:
        client = redis.Redis(port=server.port)
        baseline = client.info("memory")["used_memory"]
        with tempfile.TemporaryDirectory() as tmp:
            store = build_store(dataset, FeatureStoreConfig(repo_dir=Path(tmp) / "repo",
                                                            online_store="redis", redis_url=server.url))
            started = time.perf_counter()
            materialize(store, dataset.last_event.to_pydatetime())
            materialize_s = time.perf_counter() - started
        used = client.info("memory")["used_memory"] - baseline
        sizes: dict[str, list[int]] = {"user": [], "item": []}
        fields: dict[str, list[int]] = {"user": [], "item": []}
        packed: dict[str, int] = {"user": 0, "item": 0}
        for key in client.scan_iter(count=1000):
            kind = "user" if b"user_id" in key else "item"  # the join key is part of the Redis key
            sizes[kind].append(client.memory_usage(key, samples=0))
            fields[kind].append(client.hlen(key))
            packed[kind] += client.object("encoding", key) == b"listpack"
    finally:
        server.stop()
    result = {"data": config["data"], "listpack_value": config["listpack_value"] or 64,
              "users": len(sizes["user"]), "items": len(sizes["item"]),
              "materialize_s": round(materialize_s, 1), "used_memory_mb": round(used / 2**20, 2),
              **{f"{kind}_bytes_mean": round(sum(s) / len(s)) for kind, s in sizes.items()},
              **{f"{kind}_bytes_max": max(s) for kind, s in sizes.items()},
              **{f"{kind}_hash_fields": max(f) for kind, f in fields.items()},
              **{f"{kind}_listpack_share": round(n / len(sizes[kind]), 3) for kind, n in packed.items()},
              "bytes_per_key_overall": round(used / (len(sizes["user"]) + len(sizes["item"])))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
