"""Benchmark: bytes per item of an index version on disk, by component.

    twotower bench index_footprint --items=100000 --dims=64,128,256 --quant=int8

Builds an Edge version per (dimension, quantization) with the items of `bench/index.py` (same
generator and payload: stock, one category, price, created_at) and sums the allocated bytes of
the shard's files per component. Qdrant server collections use the same segment format, so the
figures size a cluster: docs/scaling.md multiplies them out to 100M+ items.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)
from bench.index import DEFAULTS as ITEM_DEFAULTS  # noqa: E402
from bench.index import make_data  # noqa: E402

DEFAULTS = {"items": 100_000, "dims": "64", "quant": "int8", "seed": 0}
COMPONENTS = {  # first matching path fragment -> component
    "quantized.": "quantized_vectors",
    "vector_storage/": "vectors",
    "vector_index/": "hnsw_graph",
    "payload_storage/": "payload",
    "payload_index/": "payload_indexes",
    "id_tracker": "ids",
    "/wal/": "wal",
}


def footprint(root: Path) -> dict[str, int]:
    """Allocated bytes per component under a shard directory (sparse files count what they use)."""
    sizes: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            name = path.as_posix()
            component = next((c for fragment, c in COMPONENTS.items() if fragment in name), "other")
            sizes[component] = sizes.get(component, 0) + path.stat().st_blocks * 512
    return sizes


def measure(n: int, dim: int, quant: str, seed: int) -> dict:
    from index import EdgeSettings, IndexSpec, ItemBatch, open_backend

    vectors, stock, category = make_data(n, dim, ITEM_DEFAULTS, seed)
    items = ItemBatch.from_columns(ids=np.arange(n, dtype=np.int64), vectors=vectors, stock=stock,
                                   categories=[[f"c{c}"] for c in category], price=np.full(n, 10.0),
                                   created_at=np.zeros(n, dtype=np.int64))
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        backend = open_backend(EdgeSettings(path=Path(tmp)))
        location = backend.location_for(1)
        backend.create(location, IndexSpec(dim=dim, quantization=quant))  # type: ignore[arg-type]
        backend.upsert(items, location=location)
        backend.finish(location)
        backend.close()
        sizes = footprint(Path(location))
    per_item = {f"{k}_b": round(v / n, 1) for k, v in sorted(sizes.items())}
    return {"items": n, "dims": dim, "quant": quant, **per_item,
            "total_b": round(sum(sizes.values()) / n, 1),
            "total_without_wal_b": round((sum(sizes.values()) - sizes.get("wal", 0)) / n, 1)}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    for dim in [int(d) for d in config["dims"].split(",")]:
        for quant in config["quant"].split(","):
            print(json.dumps(measure(config["items"], dim, quant, config["seed"])), flush=True)


if __name__ == "__main__":
    main()
