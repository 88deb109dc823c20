"""Benchmark: what an item upsert costs the service's item cache, by catalogue size.

    twotower bench item_cache
    twotower bench item_cache --sizes=1000000 --upserts=2000

For each size, fills an `ItemCache` with that many generated items (as a version load does, from a
stand-in for the online store's item reads: the cache's own cost is measured, not the store's),
then times `upserts` upserts of new items and as many of known items (half keep their number of
categories, half change it), one at a time as the service applies writes, and a request's read of
100 candidates' columns. Prints one JSON line per size: the median and p99 microseconds of each,
the rows the cache holds after the upserts, and the RSS the cache added.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"sizes": "10000,100000,1000000", "upserts": 1000, "seed": 0}
CATEGORIES = [f"category-{i}" for i in range(50)]


def _item(rng: np.random.Generator, categories: int | None = None):
    from services.online import ItemFeatures

    count = int(rng.integers(1, 4)) if categories is None else categories
    return ItemFeatures(title="item", categories=tuple(rng.choice(CATEGORIES, count, replace=False)),
                        price=float(rng.uniform(1, 100)), created_at_s=int(rng.integers(1e9, 2e9)),
                        popularity=(1, 2, 3), stock=int(rng.integers(0, 10)))


class GeneratedItems:
    """The online store's `items(ids)` read, answered from generated items."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.known = {i: _item(rng) for i in range(1, size + 1)}

    def items(self, ids):
        return {i: self.known[i] for i in ids if i in self.known}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentiles(seconds: list[float]) -> dict[str, float]:
    micros = np.array(seconds) * 1e6
    return {"p50_us": round(float(np.median(micros)), 1),
            "p99_us": round(float(np.percentile(micros, 99)), 1)}


def run(size: int, upserts: int, seed: int) -> dict:
    from services.engine import ItemCache

    rng = np.random.default_rng(seed)
    online = GeneratedItems(size, rng)
    before = _rss_mb()
    cache = ItemCache(online, prefill=list(online.known))
    added_mb = _rss_mb() - before
    timed: dict[str, list[float]] = {"new": [], "same_categories": [], "other_categories": []}
    for n in range(upserts):
        new = size + 1 + n
        known = int(rng.integers(1, size + 1))
        same = len(online.known[known].categories)
        for kind, item_id, item in (("new", new, _item(rng)),
                                    ("same_categories", known, _item(rng, same)),
                                    ("other_categories", known, _item(rng, same % 3 + 1))):
            started = time.perf_counter()
            cache.put(item_id, item)
            timed[kind].append(time.perf_counter() - started)
            online.known[item_id] = item  # what "as many categories" compares with next time
    reads = []
    for _ in range(upserts):
        ids = rng.integers(1, size + 1, 100).tolist()
        started = time.perf_counter()
        cache.columns(ids)
        reads.append(time.perf_counter() - started)
    return {"items": size, "upserts": upserts, "cache_rss_mb": round(added_mb),
            "rows_after": len(cache._columns.numbers),
            **{f"{kind}_{k}": v for kind, t in timed.items() for k, v in _percentiles(t).items()},
            **{f"read_100_{k}": v for k, v in _percentiles(reads).items()}}


def main(argv: list[str]) -> None:
    args = parse(argv, DEFAULTS)
    for size in (int(s) for s in str(args["sizes"]).split(",")):
        print(json.dumps(run(size, args["upserts"], args["seed"])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
