"""Benchmark of the item index: build time, memory, disk and filtered top-10 latency and recall.

For every (dimension, quantization) pair, a fresh process draws N seeded items, builds an Edge index
version, then runs top-10 queries under each filter of `--filters` and compares them with exact
brute force over the same filtered set. Two kinds of catalogue (`--data`):

- `mixture`: unit vectors from a 100-component Gaussian mixture with one of 20 categories each
  (70% tied to the cluster). Nearly uniform on the sphere: the worst case for HNSW.
- `tower:FILE`: a Gaussian mixture fitted to item embeddings of trained towers (written by
  `bench/index_tower_recall.py --save=FILE`): one component per k-means cluster of the real
  items, with that cluster's mean and (shrunk) covariance; each drawn item takes the categories
  of a random real member of its cluster; the queries are the real test users' embeddings.
  `tower-real:FILE` indexes the real items themselves (to check the fit at their size).

`--item_queries=1` queries with further draws of the items' mixture instead of user vectors;
`--centre=0` does not centre the version on the items' mean (`build_version` does; same ranking).
Latency is that of `search_ids` (ids and scores, as the service asks) unless `--payload=1`.

Filters: `none` filters nothing; `stock` is the service's default (stock >= 1, minus `--exclude`
"seen" items drawn from the query's exact top 100); `category` allows `--query_categories` random
categories (the worst case); `liked` allows the category of the query's nearest item; `new` is the
service's new-item place (stock >= 1, created after the model: the last `--new_share` of the ids;
an exact search, as the service asks it).
Peak RSS is the build process's ru_maxrss (it includes the data arrays, reported as rss_data_mb);
rss_serving_mb is what a fresh process adds to its RSS by opening the version and querying it.

    python bench/index.py --items=100000 --dims=32,64,128,256 --json=docs/index_bench.json
    python bench/index.py --items=1000000 --quant=int8 --data=tower:/tmp/bench/tower_shop.npz
    python bench/index.py --data=tower:/tmp/bench/tower_shop.npz --calibrate=1
    python bench/index.py --plot=docs/index_tradeoff.png --from-json=docs/index_bench.json
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS: dict[str, Any] = {
    "items": 100_000,  # catalogue size
    "dims": "64",  # comma list of embedding dimensions (tower data: its own dimension only)
    "quant": "none,int8,binary,product",  # comma list of quantizations
    "data": "mixture",  # mixture | tower:FILE | tower-real:FILE (see the docstring)
    "filters": "stock,category",  # comma list of query filters: none, stock, category, liked, new
    "queries": 300,  # timed queries per configuration and filter
    "warmup": 30,  # untimed queries first (page cache, thread pool)
    "k": 10,  # top-k
    "clusters": 100,  # mixture: components
    "spread": 0.8,  # mixture: within-cluster noise relative to the cluster centres
    "categories": 20,  # mixture: distinct categories in the catalogue
    "centre": 1,  # 1 = centre the version on the items' mean, as build_version does; 0 = not
    "item_queries": 0,  # tower: 1 = query with further draws of the items' mixture, not user vectors
    "fit_clusters": 1000,  # tower: components fitted to the real items; ~10 items each matches
    # the real items' HNSW recall at 10k (fewer, smoother components make the search easier)
    "query_categories": 2,  # categories a `category` query allows
    "exclude": 20,  # `stock` queries: seen items excluded, drawn from the exact top max(100, 5x)
    "out_of_stock": 0.15,  # share of items with stock 0
    "new_share": 0.001,  # `new` queries: share of items created after the model (the newest ids)
    # Index knobs; -1 keeps the IndexSpec default.
    "m": -1,  # HNSW degree
    "ef_construct": -1,  # HNSW build beam
    "payload_m": -1,  # links of the per-category subgraphs; 0 = none
    "full_scan_kb": -1,  # filters keeping fewer vectors than this many KB are scored exactly
    "segments": -1,  # HNSW graphs per version (searched in parallel)
    "acorn": 0,  # 1 = ACORN filtered search
    "ef": "-1",  # comma list of HNSW query beams, all measured on the same build; -1 = the version's own
    "oversampling": "0",  # comma list of query-time oversampling factors; 0 = the IndexSpec default
    "payload": 0,  # 0 = `search_ids` (ids and scores: what the service asks for); 1 = `search` (with payload)
    "seed": 0,
    "json": "",  # append results to this JSON file
    "from_json": "",  # skip running: read results from this file (for --plot)
    "plot": "",  # draw recall vs p99 vs memory to this PNG
    "calibrate": 0,  # 1 = print the shape of the real and the generated vectors, then exit
}
SPEC_KNOBS = {"m": "hnsw_m", "ef_construct": "hnsw_ef_construct", "payload_m": "payload_m",
              "full_scan_kb": "full_scan_threshold_kb", "segments": "segments"}


@dataclass(frozen=True)
class Catalogue:
    """Seeded items (vectors, stock, categories) and the query vectors run against them."""

    vectors: np.ndarray  # (N, D) float32, unit norm
    stock: np.ndarray  # (N,) int64
    categories: list[list[str]]  # N lists of names
    member: np.ndarray  # (N, C) bool: item n has category names[c]
    names: list[str]
    queries: np.ndarray  # (Q, D) float32


def _stock(rng: np.random.Generator, n: int, cfg: dict[str, Any]) -> np.ndarray:
    stock = rng.integers(1, 50, n)
    stock[rng.random(n) < cfg["out_of_stock"]] = 0
    return stock


def _catalogue(vectors: np.ndarray, stock: np.ndarray, categories: list[list[str]],
               queries: np.ndarray) -> Catalogue:
    names = sorted({c for cats in categories for c in cats})
    column = {c: i for i, c in enumerate(names)}
    member = np.zeros((len(categories), len(names)), dtype=bool)  # (N, C)
    for row, cats in enumerate(categories):
        member[row, [column[c] for c in cats]] = True
    return Catalogue(vectors.astype(np.float32), stock, categories, member, names,
                     queries.astype(np.float32))


def mixture(n: int, dim: int, cfg: dict[str, Any], seed: int, n_queries: int) -> Catalogue:
    """Unit vectors from a Gaussian mixture, 70% of them in their cluster's category."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(cfg["clusters"], dim)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, cfg["clusters"], count)
        vectors = centres[labels] + cfg["spread"] * rng.normal(size=(count, dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels

    vectors, labels = draw(n)
    stock = _stock(rng, n, cfg)
    category = np.where(rng.random(n) < 0.7, labels % cfg["categories"],
                        rng.integers(0, cfg["categories"], n))
    queries, _ = draw(n_queries)
    return _catalogue(vectors, stock, [[f"c{c}"] for c in category], queries)


def _spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, steps: int = 25) -> np.ndarray:
    centres = x[rng.choice(len(x), k, replace=False)]  # (K, D)
    for _ in range(steps):
        labels = np.argmax(x @ centres.T, axis=1)
        for c in np.unique(labels):
            mean = x[labels == c].mean(axis=0)
            centres[c] = mean / np.linalg.norm(mean)
    return np.argmax(x @ centres.T, axis=1)


def fitted(real: np.ndarray, real_categories: list[list[str]], n: int, cfg: dict[str, Any],
           rng: np.random.Generator) -> tuple[np.ndarray, list[list[str]]]:
    """`n` unit vectors from a Gaussian mixture fitted to `real`, with categories of real members."""
    dim = real.shape[1]
    labels = _spherical_kmeans(real.astype(np.float64), cfg["fit_clusters"], rng)
    clusters = np.unique(labels)
    weights = np.array([np.sum(labels == c) for c in clusters], dtype=np.float64)
    draws = rng.choice(len(clusters), n, p=weights / weights.sum())
    vectors = np.empty((n, dim), dtype=np.float32)
    categories: list[list[str]] = [[] for _ in range(n)]
    for i, c in enumerate(clusters):
        members = np.flatnonzero(labels == c)
        rows = np.flatnonzero(draws == i)
        cov = np.cov(real[members].T) if len(members) > 1 else np.zeros((dim, dim))
        cov = 0.9 * cov + 0.1 * np.trace(cov) / dim * np.eye(dim)  # shrunk: ~100 points per cluster
        root = np.linalg.cholesky(cov + 1e-9 * np.eye(dim))
        vectors[rows] = real[members].mean(axis=0) + rng.normal(size=(len(rows), dim)) @ root.T
        for row, member in zip(rows, rng.choice(members, len(rows)), strict=True):
            categories[row] = real_categories[member]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, categories


def tower(kind: str, path: str, n: int, dim: int, cfg: dict[str, Any], seed: int,
          n_queries: int) -> Catalogue:
    """Items fitted to (or taken from) trained tower embeddings; queries are real user vectors."""
    saved = np.load(path)
    real = saved["item_vectors"]
    real_categories = [str(c).split("|") for c in saved["categories"]]
    if real.shape[1] != dim:
        raise SystemExit(f"--dims={dim}: {path} holds {real.shape[1]}-d embeddings")
    rng = np.random.default_rng(seed)
    if kind == "tower-real":
        if n > len(real):
            raise SystemExit(f"--items={n}: {path} holds {len(real)} items")
        rows = rng.permutation(len(real))[:n]
        vectors, categories = real[rows], [real_categories[r] for r in rows]
    else:
        vectors, categories = fitted(real, real_categories, n + n_queries * cfg["item_queries"], cfg, rng)
    users = saved["user_vectors"]
    queries = users[rng.choice(len(users), n_queries, replace=len(users) < n_queries)]
    if len(vectors) > n:  # in-distribution queries: how far the users sit from the items matters
        vectors, categories, queries = vectors[:n], categories[:n], vectors[n:]
    return _catalogue(vectors, _stock(rng, n, cfg), categories, queries)


def make_data(cfg: dict[str, Any], n: int, dim: int, n_queries: int) -> Catalogue:
    kind, _, path = str(cfg["data"]).partition(":")
    if kind == "mixture":
        return mixture(n, dim, cfg, cfg["seed"], n_queries)
    if kind in ("tower", "tower-real") and path:
        return tower(kind, path, n, dim, cfg, cfg["seed"], n_queries)
    raise SystemExit(f"--data={cfg['data']!r}: expected mixture, tower:FILE or tower-real:FILE")


def describe(vectors: np.ndarray, queries: np.ndarray, sample: int = 1000, k: int = 20) -> dict[str, float]:
    """Shape of a catalogue: spectrum spread, local intrinsic dimension, query-to-item contrast."""
    eigen = np.linalg.eigvalsh(np.cov(vectors.T.astype(np.float64)))
    x = vectors[:sample].astype(np.float64)
    dist = np.sqrt(np.maximum(2 - 2 * x @ vectors.T, 1e-12))  # (S, N) chord distances
    dist[np.arange(len(x)), np.arange(len(x))] = np.inf
    near = np.sort(dist, axis=1)[:, :k]  # (S, k)
    lid = -1 / np.mean(np.log(near[:, :-1] / near[:, -1:]), axis=1)  # MLE (Levina-Bickel)
    top = -np.sort(-(queries @ vectors.T), axis=1)  # (Q, N)
    return {
        "participation_ratio": round(float(eigen.sum() ** 2 / (eigen**2).sum()), 1),
        "mean_norm": round(float(np.linalg.norm(vectors.mean(axis=0))), 2),
        "lid": round(float(lid.mean()), 1),
        "query_top1": round(float(top[:, 0].mean()), 3),
        "query_top10": round(float(top[:, 9].mean()), 3),
        "query_top100": round(float(top[:, 99].mean()), 3),
    }


def calibrate(cfg: dict[str, Any]) -> None:
    """Print `describe` for the real items and for same-size draws of each generator."""
    path = str(cfg["data"]).partition(":")[2]
    real = len(np.load(path)["item_vectors"]) if path else 10_000
    dim = int(str(cfg["dims"]).split(",")[0])
    kinds = [f"tower-real:{path}", f"tower:{path}", "mixture"] if path else ["mixture"]
    for kind in kinds:
        data = make_data({**cfg, "data": kind}, real, dim, 500)
        print(f"data={kind.partition(':')[0]} items={real}", " ".join(
            f"{k}={v}" for k, v in describe(data.vectors, data.queries).items()), flush=True)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _disk_mb(path: Path) -> float:
    from index.quality import disk_bytes

    return (disk_bytes(str(path)) or 0) / 2**20


def serving_rss_mb(root: str, location: str, queries: np.ndarray) -> float:
    """RSS a fresh process adds by opening a version and answering `queries` (stock filter)."""
    from index import EdgeSettings, SearchFilters, open_backend

    before = _rss_mb()
    with open_backend(EdgeSettings(path=Path(root))) as backend:
        for query in queries:
            backend.search_ids(query, k=10, filters=SearchFilters(), location=location)
        return _rss_mb() - before


def query_cases(data: Catalogue, kind: str, cfg: dict[str, Any], rng: np.random.Generator
                ) -> list[tuple[np.ndarray, Any, set[int], float]]:
    """(query, filters, exact top-k ids, selectivity) for every query under filter `kind`."""
    from index import SearchFilters

    k, in_stock = cfg["k"], data.stock >= 1
    cases = []
    for query in data.queries:
        scores = data.vectors @ query  # (N,)
        mask, filters = in_stock.copy(), SearchFilters()
        if kind == "none":
            mask, filters = np.ones_like(in_stock), SearchFilters(in_stock_only=False)
        elif kind == "stock":
            candidates = np.where(in_stock, scores, -np.inf)
            pool = max(100, 5 * cfg["exclude"])  # a long history reaches further out
            top = np.argpartition(-candidates, pool)[:pool]
            seen = rng.choice(top, cfg["exclude"], replace=False)
            mask[seen] = False
            filters = SearchFilters(exclude_ids=frozenset(int(i) for i in seen))
        elif kind == "new":
            mask &= np.arange(len(mask)) >= _first_new(len(mask), cfg)
            filters = SearchFilters(created_after=1)
        elif kind in ("category", "liked"):
            if kind == "category":
                allowed = rng.choice(len(data.names), cfg["query_categories"], replace=False)
            else:
                nearest = int(np.argmax(np.where(in_stock, scores, -np.inf)))
                allowed = np.flatnonzero(data.member[nearest])[:1]
            mask &= data.member[:, allowed].any(axis=1)
            filters = SearchFilters(categories=frozenset(data.names[c] for c in allowed))
        else:
            raise SystemExit(f"--filters: unknown filter {kind!r}; choose from none, stock, category, "
                             "liked, new")
        masked = np.where(mask, scores, -np.inf)
        top = np.argpartition(-masked, k)[:k]
        truth = set(top[mask[top]].tolist())  # fewer than k when fewer items pass the filter
        cases.append((query, filters, truth, float(mask.mean())))
    return cases


def _first_new(n: int, cfg: dict[str, Any]) -> int:
    """The first id of the items created after the model (`new` queries ask for those)."""
    return n - max(1, round(cfg["new_share"] * n))


def run_one(cfg: dict[str, Any], dim: int, quant: str) -> list[dict[str, Any]]:
    """Build and query one configuration (runs in its own process, so ru_maxrss is its own)."""
    from index import EdgeSettings, IndexSpec, ItemBatch, open_backend

    n, k = cfg["items"], cfg["k"]
    data = make_data(cfg, n, dim, cfg["warmup"] + cfg["queries"])
    items = ItemBatch.from_columns(
        ids=np.arange(n, dtype=np.int64),
        vectors=data.vectors,
        stock=data.stock,
        categories=data.categories,
        price=np.full(n, 10.0),
        created_at=(np.arange(n) >= _first_new(n, cfg)).astype(np.int64),  # 1: after the model
    )
    rss_data = _rss_mb()
    knobs = {field: cfg[key] for key, field in SPEC_KNOBS.items() if cfg[key] >= 0}
    centre = data.vectors.mean(axis=0).tolist() if cfg["centre"] else None  # as build_version does
    spec = IndexSpec(dim=dim, quantization=quant, acorn=bool(cfg["acorn"]), centre=centre,  # type: ignore[arg-type]
                     **knobs)
    # Exact answers (numpy's BLAS threads) before any timing, so they cannot steal the cores.
    rng = np.random.default_rng(cfg["seed"] + 2)
    kinds = str(cfg["filters"]).split(",")
    cases = {kind: query_cases(data, kind, cfg, rng) for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        backend = open_backend(EdgeSettings(path=Path(tmp)))
        location = backend.location_for(1)
        started, cpu_started = time.perf_counter(), _cpu_s()
        backend.create(location, spec)
        backend.upsert(items, location=location)
        upsert_s, upsert_cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started
        backend.finish(location)
        build_s, build_cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started
        common = {
            "items": n,
            "dims": dim,
            "quant": quant,
            "data": str(cfg["data"]).partition(":")[0],
            "fit_clusters": cfg["fit_clusters"] if str(cfg["data"]).startswith("tower:") else None,
            "item_queries": cfg["item_queries"],
            "centre": cfg["centre"],
            "build_s": round(build_s, 1),
            "upsert_s": round(upsert_s, 1),
            "build_cpu_s": round(build_cpu_s, 1),  # 2 busy cores = 2x wall; shared machines inflate wall
            "upsert_cpu_s": round(upsert_cpu_s, 1),
            "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_data_mb": round(rss_data),
            "disk_mb": round(_disk_mb(Path(location)), 1),
            "qdrant_segments": backend.stats(location=location)["segments"],  # + 1 appendable (empty)
            "m": spec.hnsw_m,
            "ef_construct": spec.hnsw_ef_construct,
            "payload_m": spec.payload_m,
            "full_scan_kb": spec.full_scan_threshold_kb,
            "segments": spec.segments,
            "acorn": int(spec.acorn),
        }
        rows = []
        search = backend.search if cfg["payload"] else backend.search_ids
        built = backend.spec(location)  # its beam chosen from the catalogue's size unless --ef
        beams = [int(e) if int(e) > 0 else built.hnsw_ef for e in str(cfg["ef"]).split(",")]
        factors = [float(o) or spec.effective_oversampling for o in str(cfg["oversampling"]).split(",")]
        for ef, oversampling, kind in itertools.product(beams, factors, kinds):
            latencies, recalls = [], []
            for i, (query, filters, truth, _) in enumerate(cases[kind]):
                t0 = time.perf_counter()
                found = search(query, k=k, filters=filters, location=location, hnsw_ef=ef,
                               oversampling=oversampling, exact=kind == "new")  # as the service
                elapsed = time.perf_counter() - t0
                if i >= cfg["warmup"]:
                    latencies.append(elapsed * 1000)
                    ids = [h.item_id for h in found] if cfg["payload"] else found[0].tolist()
                    recalls.append(len(truth & set(ids)) / max(len(truth), 1))
            rows.append({
                **common,
                "ef": ef,
                "oversampling": oversampling,
                "payload": cfg["payload"],
                "filter": kind,
                "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                "p99_ms": round(float(np.percentile(latencies, 99)), 3),
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "selectivity": round(float(np.mean([c[3] for c in cases[kind]])), 3),
            })
        backend.close()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            serving = pool.submit(serving_rss_mb, tmp, location, data.queries).result()
    for row in rows:
        row["rss_serving_mb"] = round(serving)
    return rows


def save(results: list[dict[str, Any]], path: Path) -> None:
    """Merge results into the JSON file, replacing rows with the same configuration and filter."""
    old = json.loads(path.read_text()) if path.exists() else []
    fields = ("data", "fit_clusters", "item_queries", "centre", "items", "dims", "quant", "m", "ef_construct",
              "payload_m", "full_scan_kb", "segments", "acorn", "ef", "oversampling", "payload", "filter")
    key = lambda r: tuple(str(r.get(f)) for f in fields)  # noqa: E731
    merged = {key(r): r for r in old} | {key(r): r for r in results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(merged.values(), key=key), indent=2) + "\n")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Recall vs p99 of `stock`-filtered queries, one panel per data set; marker area = serving RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"none": "tab:blue", "int8": "tab:green", "binary": "tab:red", "product": "tab:orange"}
    stock = [r for r in results if r["filter"] == "stock" and "rss_serving_mb" in r]
    kinds = sorted({r["data"] for r in stock})
    fig, axes = plt.subplots(1, len(kinds), figsize=(7 * len(kinds), 6), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for quant, colour in colours.items():
            rows = [r for r in stock if r["quant"] == quant and r["data"] == kind]
            if not rows:
                continue
            ax.scatter([r["p99_ms"] for r in rows], [r["recall_at_10"] for r in rows],
                       s=[max(r["rss_serving_mb"], 1) / 2 for r in rows], c=colour, alpha=0.5,
                       label=quant, edgecolors="k")
            for r in rows:
                size = f" {r['items'] // 1_000_000}M" if r["items"] >= 1_000_000 else ""
                ax.annotate(f"{r['dims']}d{size} ef{r['ef']}", (r["p99_ms"], r["recall_at_10"]),
                            fontsize=6, xytext=(4, 3), textcoords="offset points")
        for mb in (200, 800):  # marker-size key
            ax.scatter([], [], s=mb / 2, c="none", edgecolors="grey", label=f"{mb} MB RSS")
        sizes = ", ".join(f"{n:,}" for n in sorted({r["items"] for r in stock if r["data"] == kind}))
        ax.set_title(f"data={kind}, {sizes} items", fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("top-10 p99 (ms, log): in stock, 20 seen items excluded")
        ax.axhline(0.97, ls="--", c="grey", lw=0.8)
        ax.legend(fontsize=7, labelspacing=1.2, loc="center")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("recall@10 vs exact search on the same filter")
    fig.suptitle("Qdrant Edge index: recall vs p99 latency vs memory (marker area ~ serving RSS)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    cfg = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    if cfg["calibrate"]:
        calibrate(cfg)
        return []
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
