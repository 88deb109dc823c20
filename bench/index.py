"""Benchmark of the item index: build time, memory, disk and filtered top-10 latency and recall.

For every (dimension, quantization) pair, a fresh process draws N seeded items from a clustered
Gaussian mixture (unit vectors, ~15% out of stock, one category of 20 each), builds an Edge index
version, then runs filtered top-10 queries (stock >= 1 and two random categories) and compares
them with exact brute force over the same filtered set. Peak RSS is the build process's
ru_maxrss (it includes the data arrays, reported separately as rss_data_mb).

    python bench/index.py --items=100000 --dims=32,64,128,256 --json=docs/index_bench.json
    python bench/index.py --items=1000000 --dims=64 --quant=int8 --json=docs/index_bench.json
    python bench/index.py --plot=docs/index_tradeoff.png --from-json=docs/index_bench.json
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS: dict[str, Any] = {
    "items": 100_000,  # catalogue size
    "dims": "64",  # comma list of embedding dimensions
    "quant": "none,int8,binary,product",  # comma list of quantizations
    "queries": 300,  # timed queries per configuration
    "warmup": 30,  # untimed queries first (page cache, thread pool)
    "k": 10,  # top-k
    "clusters": 100,  # mixture components
    "spread": 0.8,  # within-cluster noise relative to the cluster centres
    "categories": 20,  # distinct categories in the catalogue
    "query_categories": 2,  # categories each query allows (~10% of items); 0 = stock filter only
    "out_of_stock": 0.15,  # share of items with stock 0
    "m": 16,  # HNSW degree
    "ef_construct": 64,  # HNSW build beam
    "ef": "64",  # comma list of HNSW query beams, all measured on the same build
    "oversampling": 0.0,  # 0 = the IndexSpec default (2.0 when quantized)
    "seed": 0,
    "json": "",  # append results to this JSON file
    "from_json": "",  # skip running: read results from this file (for --plot)
    "plot": "",  # draw recall vs p99 vs memory to this PNG
}


def make_data(n: int, dim: int, cfg: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors from a Gaussian mixture, stock counts and one category index per item."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(cfg["clusters"], dim)).astype(np.float32)
    labels = rng.integers(0, cfg["clusters"], n)
    vectors = centres[labels] + cfg["spread"] * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stock = rng.integers(1, 50, n)
    stock[rng.random(n) < cfg["out_of_stock"]] = 0
    # Categories follow clusters 70% of the time, like real catalogues, else are random.
    category = np.where(
        rng.random(n) < 0.7, labels % cfg["categories"], rng.integers(0, cfg["categories"], n)
    )
    return vectors, stock, category


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _disk_mb(path: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 2**20


def run_one(cfg: dict[str, Any], dim: int, quant: str) -> list[dict[str, Any]]:
    """Build and query one configuration (runs in its own process, so ru_maxrss is its own)."""
    from pipelines.index import IndexSettings, IndexSpec, ItemBatch, SearchFilters, open_backend

    n, k = cfg["items"], cfg["k"]
    vectors, stock, category = make_data(n, dim, cfg, cfg["seed"])
    names = [f"c{i}" for i in range(cfg["categories"])]
    items = ItemBatch.from_columns(
        ids=np.arange(n, dtype=np.int64),
        vectors=vectors,
        stock=stock,
        categories=[[names[c]] for c in category],
        price=np.full(n, 10.0),
        created_at=np.zeros(n, dtype=np.int64),
    )
    rss_data = _rss_mb()
    spec = IndexSpec(
        dim=dim,
        quantization=quant,  # type: ignore[arg-type]
        hnsw_m=cfg["m"],
        hnsw_ef_construct=cfg["ef_construct"],
        oversampling=cfg["oversampling"] or None,
    )
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        backend = open_backend(IndexSettings(backend="edge", path=Path(tmp)))
        location = backend.location_for(1)
        started, cpu_started = time.perf_counter(), _cpu_s()
        backend.create(location, spec)
        backend.upsert(items, location=location)
        upsert_s = time.perf_counter() - started
        backend.finish(location)
        build_s, build_cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started
        disk = _disk_mb(Path(location))
        common = {
            "items": n,
            "dims": dim,
            "quant": quant,
            "build_s": round(build_s, 1),
            "upsert_s": round(upsert_s, 1),
            "build_cpu_s": round(build_cpu_s, 1),  # 2 busy cores = 2x wall; shared machines inflate wall
            "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_data_mb": round(rss_data),
            "disk_mb": round(disk, 1),
            "m": cfg["m"],
            "ef_construct": cfg["ef_construct"],
            "oversampling": spec.effective_oversampling,
        }

        queries, _, _ = make_data(cfg["warmup"] + cfg["queries"], dim, cfg, cfg["seed"] + 1)
        rng = np.random.default_rng(cfg["seed"] + 2)
        allowed = [rng.choice(cfg["categories"], size=cfg["query_categories"], replace=False)
                   for _ in queries]
        rows = []
        for ef in [int(e) for e in str(cfg["ef"]).split(",")]:
            latencies, answers = [], []
            for i, (query, cats) in enumerate(zip(queries, allowed, strict=True)):
                filters = SearchFilters(categories=frozenset(names[c] for c in cats) or None)
                t0 = time.perf_counter()
                hits = backend.search(query, k=k, filters=filters, location=location, hnsw_ef=ef)
                elapsed = time.perf_counter() - t0
                if i >= cfg["warmup"]:
                    latencies.append(elapsed * 1000)
                    answers.append({h.item_id for h in hits})
            rows.append((ef, latencies, answers))
        backend.close()
    # Ground truth only after timing: numpy's BLAS threads would steal the cores mid-run.
    truths, selectivity = [], []
    for query, cats in zip(queries[cfg["warmup"] :], allowed[cfg["warmup"] :], strict=True):
        mask = (stock >= 1) & (np.isin(category, cats) if len(cats) else True)
        scores = vectors @ query
        scores[~mask] = -np.inf
        truths.append(set(np.argpartition(-scores, k)[:k].tolist()))
        selectivity.append(mask.mean())
    return [
        {
            **common,
            "ef": ef,
            "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "recall_at_10": round(
                float(np.mean([len(t & a) / k for t, a in zip(truths, answers, strict=True)])), 4
            ),
            "selectivity": round(float(np.mean(selectivity)), 3),
        }
        for ef, latencies, answers in rows
    ]


def save(results: list[dict[str, Any]], path: Path) -> None:
    """Merge results into the JSON file, replacing rows with the same (items, dims, quant, ef)."""
    old = json.loads(path.read_text()) if path.exists() else []
    key = lambda r: (r["items"], r["dims"], r["quant"], r["ef"])  # noqa: E731
    merged = {key(r): r for r in old} | {key(r): r for r in results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(merged.values(), key=key), indent=2) + "\n")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Recall vs p99 latency; marker area is the peak RSS minus the data arrays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"none": "tab:blue", "int8": "tab:green", "binary": "tab:red", "product": "tab:orange"}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for quant, colour in colours.items():
        rows = [r for r in results if r["quant"] == quant]
        if not rows:
            continue
        sizes = [max(r["rss_peak_mb"] - r["rss_data_mb"], 1) / 4 for r in rows]
        ax.scatter(
            [r["p99_ms"] for r in rows],
            [r["recall_at_10"] for r in rows],
            s=sizes,
            c=colour,
            alpha=0.6,
            label=quant,
            edgecolors="k",
        )
        for r in rows:
            label = f"{r['dims']}d" + (f" {r['items'] // 1_000_000}M" if r["items"] >= 1_000_000 else "")
            ax.annotate(
                label, (r["p99_ms"], r["recall_at_10"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_xlabel("filtered top-10 p99 latency (ms, log)")
    ax.set_ylabel("recall@10 vs exact filtered search")
    ax.set_title("Qdrant Edge index: recall vs p99 latency (marker area ~ index memory)")
    ax.axhline(0.97, ls="--", c="grey", lw=0.8)
    ax.legend(title="quantization")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    cfg = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    if cfg["from_json"]:
        results = json.loads(Path(cfg["from_json"]).read_text())
    else:
        results = []
        dims = [int(d) for d in str(cfg["dims"]).split(",")]
        quants = str(cfg["quant"]).split(",")
        for dim in dims:
            for quant in quants:
                # A fresh process per configuration: its own peak RSS, no warm caches.
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    rows = pool.submit(run_one, cfg, dim, quant).result()
                for row in rows:
                    results.append(row)
                    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if cfg["json"]:
            save(results, Path(cfg["json"]))
            results = json.loads(Path(cfg["json"]).read_text())  # plot every run recorded so far
    if cfg["plot"]:
        plot(results, Path(cfg["plot"]))
        print(f"plot={cfg['plot']}")
    return results


if __name__ == "__main__":
    main()
