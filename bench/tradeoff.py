"""Benchmark: the embedding-size trade-off end to end: quality, memory, latency and cost per configuration.

    twotower bench tradeoff --plot=docs/tradeoff.png --json=docs/tradeoff.json
    twotower bench tradeoff --pieces=1     # one missing piece, then the table so far (resumable)

Configurations (every one served through a Qdrant Edge index version, each of `--compressions`):

- `Dd`: the towers trained at dimension D (`--dims`), same schedule and seed;
- `S>pcaK`: the S-d model's vectors projected on the top K principal axes of its items (`--pca`);
- `nestedN@P`: one N-d model trained with nested losses on its prefixes (`TrainConfig.nested_dims`),
  served at the first P coordinates renormalised (`--nested`, `--prefixes`).

Per configuration: NDCG@10 of the test split of each protocol (`--protocols`) as served (the index
with its own quantization and beam, stock filter off, seen items excluded) and its recall@10
against exact search on the same vectors; at `--items` items drawn to match the trained embeddings
(`bench/index.py --data=tower:FILE`): bytes per item on disk and in RAM (what a fresh process adds
by opening the version and querying it), p99 of stock-filtered top-10 search, build time; the
served user tower's latency (ONNX, one user per call) and the training time.

The 1M-item measurements are keyed by (served dimension, compression, source of the fitted
vectors); the source is always the natively trained model of that dimension (first protocol), so a
PCA or prefix configuration shares the measurement of the native model of its served dimension.

The default is the configuration with the fewest RAM bytes per item whose served NDCG@10 (first
protocol) is within `--tolerance` of the best. Each piece (a trained model, one served
configuration, one large-catalogue measurement) is cached under `--cache` by its configuration,
including a hash of the towers' code, so a changed model retrains and an interrupted sweep resumes.
"""

from __future__ import annotations

import hashlib
import json
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS: dict[str, Any] = {
    "data": "movielens-1m:../shared/datasets/ml-1m-dev",
    "protocols": "loo,temporal",  # the first one picks the default
    "dims": "16,32,64,128,256",  # natively trained dimensions
    "compressions": "int8,none,binary,product",  # the index's default first
    "pca": "128:32,128:64,256:32,256:64",  # comma list of SOURCE:TARGET dimensions
    "nested": 128,  # dimension of the model trained with nested losses; 0 = none
    "prefixes": "16,32,64,128",  # its served prefixes (those below `nested` are also its losses)
    "train": "",  # TrainConfig overrides for every model, e.g. "min_steps=20,decay_epochs=2"
    "tower": "",  # TowerConfig overrides besides dim, e.g. "encoder=mean"
    "items": 1_000_000,  # catalogue size of the memory, latency and build measurements
    "queries": 300,  # timed stock-filtered queries there (after 30 untimed)
    "latency_users": 200,  # single-user calls timed on the served user tower
    "threads": 1,  # torch threads for training; one wastes no CPU spinning on a shared machine
    "tolerance": 0.01,  # the default: within this share of the best served NDCG@10
    "cache": ".twotower/bench/tradeoff",
    "pieces": 0,  # compute at most this many missing pieces (0 = all), then report
    "kinds": "model,served,scale",  # which kinds of missing pieces to compute ("" = none: report only)
    "json": "",  # write the table's rows here
    "plot": "",  # draw quality vs bytes per item and latency vs bytes per item here
}


# ---------------------------------------------------------------- what the sweep holds

@dataclass(frozen=True)
class Model:
    protocol: str
    dim: int
    nested: tuple[int, ...] = ()


@dataclass(frozen=True)
class Served:
    """One way of serving a model's vectors: which model, which transform, at which dimension."""

    name: str
    family: str  # native | pca | nested
    dim: int  # the model's dimension
    nested: tuple[int, ...]
    transform: str  # full | pca:K | prefix:P
    served_dim: int

    def model(self, protocol: str) -> Model:
        return Model(protocol, self.dim, self.nested)


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def configurations(cfg: dict[str, Any]) -> list[Served]:
    """Every served configuration of the sweep (before compression)."""
    served = [Served(f"{d}d", "native", d, (), "full", d) for d in _ints(cfg["dims"])]
    for pair in filter(None, str(cfg["pca"]).split(",")):
        source, _, target = pair.partition(":")
        if not target or int(target) >= int(source):
            raise SystemExit(f"--pca={cfg['pca']!r}: {pair!r} is not SOURCE:TARGET with TARGET < SOURCE")
        served.append(Served(f"{source}d>pca{target}", "pca", int(source), (), f"pca:{target}", int(target)))
    if cfg["nested"]:
        n, prefixes = cfg["nested"], _ints(cfg["prefixes"])
        losses = tuple(p for p in prefixes if p < n)
        served += [Served(f"nested{n}@{p}", "nested", n, losses, "full" if p == n else f"prefix:{p}", p)
                   for p in prefixes]
    return served


def towers_code_hash() -> str:
    """Hash of the towers' and the index's source: a changed model or search invalidates its
    cached pieces."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "towers").rglob("*.py"), *(ROOT / "index").rglob("*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _overrides(text: str) -> dict[str, str]:
    pairs = [p.partition("=") for p in filter(None, str(text).split(","))]
    bad = [k for k, sep, _ in pairs if not sep]
    if bad:
        raise SystemExit(f"expected key=value pairs, got {bad[0]!r}")
    return {k.strip(): v for k, _, v in pairs}


def model_configs(cfg: dict[str, Any], model: Model):  # -> (TowerConfig, TrainConfig)
    from towers.config import ConfigError, override
    from towers.model import TowerConfig
    from towers.train import TrainConfig

    try:
        [tower] = override([TowerConfig()], {**_overrides(cfg["tower"]), "dim": model.dim})
        # the towers' own vectors: a popularity prior's coordinate is not a size being traded
        [train] = override([TrainConfig()], {**_overrides(cfg["train"]), "nested_dims": model.nested,
                                             "popularity_prior": "0"})
    except ConfigError as exc:
        raise SystemExit(f"--tower/--train: {exc}") from None
    return tower, train


def _key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def model_key(cfg: dict[str, Any], model: Model, code: str) -> str:
    tower, train = model_configs(cfg, model)
    return "model-" + _key({"data": cfg["data"], "protocol": model.protocol, "tower": tower.model_dump(),
                            "train": train.model_dump(), "code": code})


@dataclass(frozen=True)
class Piece:
    """One cached unit of work: train a model, serve a configuration, or measure at scale."""

    kind: str  # model | served | scale
    key: str
    fields: dict[str, Any]


def plan(cfg: dict[str, Any], code: str | None = None) -> list[Piece]:
    """Every piece of the sweep in the order it runs: the first protocol's models and their served
    configurations, the large-catalogue measurements, then the other protocols."""
    code = code or towers_code_hash()
    protocols = str(cfg["protocols"]).split(",")
    served = configurations(cfg)
    compressions = str(cfg["compressions"]).split(",")
    pieces: list[Piece] = []

    def add(kind: str, key: str, **fields: Any) -> None:
        if key not in {p.key for p in pieces}:
            pieces.append(Piece(kind, key, fields))

    def protocol_pieces(protocol: str) -> None:
        for s in served:
            model = s.model(protocol)
            mkey = model_key(cfg, model, code)
            add("model", mkey, model=model)
            for compression in compressions:
                add("served", "served-" + _key({"model": mkey, "transform": s.transform,
                                                "compression": compression}),
                    model=mkey, protocol=protocol, transform=s.transform, compression=compression)

    protocol_pieces(protocols[0])
    for compression in compressions:  # one compression at every dimension, then the next
        for dim in sorted({s.served_dim for s in served}):
            source = model_key(cfg, Model(protocols[0], dim), code)
            add("model", source, model=Model(protocols[0], dim))
            add("scale", scale_key(cfg, dim, compression, source), source=source, dim=dim,
                compression=compression)
    for protocol in protocols[1:]:
        protocol_pieces(protocol)
    return pieces


def scale_key(cfg: dict[str, Any], dim: int, compression: str, source: str) -> str:
    return "scale-" + _key({"items": cfg["items"], "queries": cfg["queries"], "dim": dim,
                            "compression": compression, "source": source})


# ---------------------------------------------------------------- the pieces

def _ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return flat.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)])


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def train_model(cfg: dict[str, Any], model: Model, npz: Path) -> dict[str, Any]:
    """Train on the protocol's split; save the item and test-user vectors; time the user tower."""
    import torch

    from feature_repo.datasets import load
    from services.encoder import UserEncoder
    from towers import evaluate
    from towers.features import feature_store, with_features
    from towers.train import fit_split

    tower, train = model_configs(cfg, model)
    torch.set_num_threads(cfg["threads"])
    dataset = load(cfg["data"])
    with tempfile.TemporaryDirectory(prefix="bench-tradeoff-") as home:
        store = feature_store(dataset, tower.max_len, home)
        split = with_features(evaluate.make_split(dataset, model.protocol), store)
        started = time.perf_counter()
        artifact = fit_split(split, dataset.items, store, tower=tower, train=train)
        train_s = time.perf_counter() - started
    test = split.test
    items, users = artifact.embed_items(dataset.items), artifact.embed_users(test.frame)
    dense = evaluate.evaluate(evaluate.two_tower(artifact, dataset.items), test, k=10)
    encoder = UserEncoder(artifact)
    torch.set_num_threads(1)  # the service's setting: one user per call
    rows = np.random.default_rng(0).permutation(len(test.frame))[:cfg["latency_users"]]
    latencies = []
    for warmup, row in [(True, r) for r in rows[:20]] + [(False, r) for r in rows]:  # untimed first
        t0 = time.perf_counter()
        encoder(test.frame.iloc[[row]])
        if not warmup:
            latencies.append(1000 * (time.perf_counter() - t0))
    exclude, exclude_at = _ragged(test.exclude)
    targets, targets_at = _ragged(test.targets)
    npz.parent.mkdir(parents=True, exist_ok=True)
    with open(npz.with_suffix(".tmp"), "wb") as f:  # then renamed: a killed run leaves no half file
        np.savez(f, item_ids=dataset.items["item_id"].to_numpy(), item_vectors=items,
                 user_vectors=users, exclude=exclude, exclude_at=exclude_at, targets=targets,
                 targets_at=targets_at,
                 categories=np.array(["|".join(c) for c in dataset.items["categories"]]))
    npz.with_suffix(".tmp").replace(npz)
    return {"train_s": round(train_s, 1), "steps": artifact.metrics.get("steps"),
            "stopped_by": artifact.metrics.get("stopped_by"),
            "dense_ndcg@10": round(dense["ndcg@10"], 4),
            "user_tower_p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "user_tower_p99_ms": round(float(np.percentile(latencies, 99)), 3)}


def transformed(saved: Any, transform: str) -> tuple[np.ndarray, np.ndarray]:
    """(items, users) as served: full, projected on the items' top principal axes, or a prefix."""
    from towers.nested import prefix

    items, users = saved["item_vectors"], saved["user_vectors"]
    kind, _, size = transform.partition(":")
    if kind == "full":
        return items, users
    if kind == "prefix":
        return prefix(items, int(size)), prefix(users, int(size))
    if kind == "pca":  # u.v = u.(v - mean) + u.mean: the second term is the same for every item
        mean = items.mean(axis=0)
        axes = np.linalg.svd(items - mean, full_matrices=False)[2][:int(size)].T  # (D, K)
        return ((items - mean) @ axes).astype(np.float32), (users @ axes).astype(np.float32)
    raise SystemExit(f"unknown transform {transform!r}")


def serve(cfg: dict[str, Any], npz: Path, protocol: str, transform: str, compression: str) -> dict[str, Any]:
    """NDCG@10 of the test queries through an index version of the transformed vectors."""
    import torch

    from feature_repo.datasets import load
    from index import EdgeSettings, IndexSpec, SearchFilters, build_version, open_backend
    from index.catalogue import item_batch, latest_stock
    from index.registry import Registry
    from towers import evaluate

    saved = np.load(npz)
    items, users = transformed(saved, transform)
    ids = saved["item_ids"]
    exclude = _unragged(saved["exclude"], saved["exclude_at"])
    targets = _unragged(saved["targets"], saved["targets_at"])
    dataset = load(cfg["data"])
    if not np.array_equal(dataset.items["item_id"].to_numpy(), ids):
        raise SystemExit(f"{npz}: its items are not {cfg['data']}'s catalogue; delete the cache")
    batch = item_batch(dataset.items, items, latest_stock(dataset.stock))
    spec = IndexSpec(dim=items.shape[1], quantization=compression)  # type: ignore[arg-type]
    ranked = np.full((len(users), 10), -1, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="bench-tradeoff-") as home:
        registry = Registry(data_dir=home, backend=open_backend(EdgeSettings(path=Path(home) / "index")))
        try:
            model = registry.register_model("tradeoff")
            version = build_version(batch, registry=registry, spec=spec, model_version_id=model.id)
            for row, (vector, seen) in enumerate(zip(users, exclude, strict=True)):
                everything_unseen = SearchFilters(in_stock_only=False, exclude_ids=frozenset(seen.tolist()))
                found, _ = registry.backend.search_ids(vector, k=10, filters=everything_unseen,
                                                       location=version.location)
                ranked[row, :len(found)] = found
        finally:
            registry.backend.close()
            registry.close()
    exact = evaluate.top_k(torch.from_numpy(users @ items.T), ids, 10, exclude)  # (U, N) -> (U, 10)
    metrics = evaluate.ranking_metrics(ranked, targets, protocol)
    recall = np.mean([len(set(a) & (truth := set(b) - {evaluate.NO_ITEM})) / max(len(truth), 1)
                      for a, b in zip(ranked, exact, strict=True)])  # of what there is to find
    return {"ndcg@10": round(metrics["ndcg@10"], 4), "recall_vs_exact": round(float(recall), 4),
            "users": metrics["users"]}


def measure_scale(cfg: dict[str, Any], npz: Path, dim: int, compression: str) -> dict[str, Any]:
    """`bench/index.py`'s build and stock-filtered search at `--items` items fitted to the model's."""
    from bench import index as index_bench

    real = len(np.load(npz)["item_ids"])
    icfg = {**index_bench.DEFAULTS, "items": cfg["items"], "data": f"tower:{npz}", "filters": "stock",
            "queries": cfg["queries"], "fit_clusters": max(1, min(1000, real // 10))}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # its own peak RSS
        [row] = pool.submit(index_bench.run_one, icfg, dim, compression).result()
    n = cfg["items"]
    return {"disk_bytes_per_item": round(row["disk_mb"] * 2**20 / n), "ram_bytes_per_item":
            round(row["rss_serving_mb"] * 2**20 / n), "p99_ms": row["p99_ms"], "p50_ms": row["p50_ms"],
            "recall_at_items": row["recall_at_10"], "build_s": row["build_s"],
            "build_cpu_s": row["build_cpu_s"], "rss_peak_mb": row["rss_peak_mb"]}


# ---------------------------------------------------------------- running, caching, reporting

def _cached(cache: Path, key: str) -> dict[str, Any] | None:
    path = cache / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def runnable(piece: Piece, cache: Path, kinds: list[str]) -> bool:
    """Asked for, missing, and its model trained already unless models are asked for too."""
    if piece.kind not in kinds or _cached(cache, piece.key) is not None:
        return False
    needs = {"served": piece.fields.get("model"), "scale": piece.fields.get("source")}.get(piece.kind)
    return needs is None or "model" in kinds or _cached(cache, needs) is not None


def run_piece(cfg: dict[str, Any], cache: Path, piece: Piece) -> dict[str, Any]:
    from feature_repo.files import atomic_write

    started = time.perf_counter()
    fields = piece.fields
    if piece.kind == "model":
        result = train_model(cfg, fields["model"], cache / f"{piece.key}.npz")
        fields = {**fields, "model": vars(fields["model"])}
    elif piece.kind == "served":
        result = serve(cfg, cache / f"{fields['model']}.npz", fields["protocol"], fields["transform"],
                       fields["compression"])
    else:
        result = measure_scale(cfg, cache / f"{fields['source']}.npz", fields["dim"], fields["compression"])
    row = {"kind": piece.kind, **fields, **result, "wall_s": round(time.perf_counter() - started, 1)}
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(cache / f"{piece.key}.json", json.dumps(row, indent=1) + "\n")
    return row


def table(cfg: dict[str, Any], cache: Path, code: str) -> list[dict[str, Any]]:
    """One row per (configuration, compression) with whatever pieces are cached."""
    protocols = str(cfg["protocols"]).split(",")
    rows = []
    for s in configurations(cfg):
        source = model_key(cfg, Model(protocols[0], s.served_dim), code)
        for compression in str(cfg["compressions"]).split(","):
            row: dict[str, Any] = {"config": s.name, "family": s.family, "dim": s.served_dim,
                                   "compression": compression}
            train_s = 0.0
            for protocol in protocols:
                mkey = model_key(cfg, s.model(protocol), code)
                model = _cached(cache, mkey) or {}
                served = _cached(cache, "served-" + _key({"model": mkey, "transform": s.transform,
                                                          "compression": compression})) or {}
                row[f"{protocol}_ndcg@10"] = served.get("ndcg@10")
                row[f"{protocol}_recall_vs_exact"] = served.get("recall_vs_exact")
                train_s += model.get("train_s", 0.0)
                if protocol == protocols[0]:
                    row["user_tower_p50_ms"] = model.get("user_tower_p50_ms")
            row["train_s"] = round(train_s, 1) or None
            scale = _cached(cache, scale_key(cfg, s.served_dim, compression, source)) or {}
            row |= {k: scale.get(k) for k in ("disk_bytes_per_item", "ram_bytes_per_item", "p99_ms",
                                              "build_s", "recall_at_items")}
            row["scale_source"] = f"{s.served_dim}d {protocols[0]} model" if scale else None
            rows.append(row)
    return rows


def choose_default(rows: list[dict[str, Any]], metric: str, tolerance: float) -> dict[str, Any] | None:
    """The row with the fewest RAM bytes per item among those within `tolerance` of the best `metric`
    (rows without the metric take no part); ties go to the better metric. None while a row near
    the best has no bytes measured: the choice is not made yet."""
    known = [r for r in rows if r.get(metric) is not None]
    if not known:
        return None
    best = max(r[metric] for r in known)
    near = [r for r in known if r[metric] >= (1 - tolerance) * best]
    if any(r.get("ram_bytes_per_item") is None for r in near):
        return None
    return min(near, key=lambda r: (r["ram_bytes_per_item"], -r[metric]))


def plot(rows: list[dict[str, Any]], metric: str, default: dict[str, Any] | None, path: Path,
         title: str) -> None:
    """Left: served quality vs RAM bytes per item (marker area ~ p99); right: p99 vs bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"none": "tab:blue", "int8": "tab:green", "binary": "tab:red", "product": "tab:orange"}
    markers = {"native": "o", "pca": "s", "nested": "^"}
    shown = [r for r in rows if r.get(metric) is not None and r.get("ram_bytes_per_item")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    p99s = [r["p99_ms"] for r in shown] or [1.0]
    for r in shown:
        style = {"c": colours.get(r["compression"], "grey"), "marker": markers[r["family"]],
                 "alpha": 0.7, "edgecolors": "k"}
        left.scatter(r["ram_bytes_per_item"], r[metric], s=40 + 400 * r["p99_ms"] / max(p99s), **style)
        right.scatter(r["ram_bytes_per_item"], r["p99_ms"], s=60, **style)
        for ax, y in ((left, r[metric]), (right, r["p99_ms"])):
            ax.annotate(r["config"], (r["ram_bytes_per_item"], y), fontsize=6, xytext=(4, 3),
                        textcoords="offset points")
    if default is not None:
        for ax, y in ((left, default[metric]), (right, default["p99_ms"])):
            ax.scatter(default["ram_bytes_per_item"], y, s=700, marker="*", facecolors="none", edgecolors="k",
                       linewidths=1.5, label=f"default: {default['config']} {default['compression']}")
    for name, colour in colours.items():
        left.scatter([], [], c=colour, label=name)
    for family, marker in markers.items():
        left.scatter([], [], marker=marker, c="none", edgecolors="k", label=family)
    left.set_ylabel(f"{metric.replace('_', ' ')} served (index, stock filter off)")
    left.set_title("quality vs RAM per item (marker area ~ filtered p99)", fontsize=10)
    right.set_ylabel("p99 ms, stock-filtered top-10")
    right.set_title("latency vs RAM per item", fontsize=10)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("RAM bytes per item (serving process, large catalogue)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], protocols: list[str], default: dict[str, Any] | None) -> str:
    """The table as Markdown, with the extrapolated RAM and disk at 10M and 100M items."""
    def cell(value: Any, scale: float = 1.0, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value * scale)

    head = ["config", "compression", *[f"{p.upper()} NDCG@10" for p in protocols], "recall vs exact",
            "disk B/item", "RAM B/item", "p99 ms", "build s", "user tower ms", "train s",
            "RAM 10M GB", "RAM 100M GB", "disk 100M GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        star = " **(default)**" if default is not None and r is default else ""
        lines.append("| " + " | ".join([
            r["config"] + star, r["compression"], *[cell(r[f"{p}_ndcg@10"], fmt="{:.4f}") for p in protocols],
            cell(r[f"{protocols[0]}_recall_vs_exact"], fmt="{:.3f}"),
            cell(r["disk_bytes_per_item"], fmt="{:,.0f}"),
            cell(r["ram_bytes_per_item"], fmt="{:,.0f}"), cell(r["p99_ms"], fmt="{:.2f}"),
            cell(r["build_s"], fmt="{:.0f}"), cell(r["user_tower_p50_ms"], fmt="{:.2f}"),
            cell(r["train_s"], fmt="{:.0f}"), cell(r["ram_bytes_per_item"], 1e7 / 1e9, "{:.1f}"),
            cell(r["ram_bytes_per_item"], 1e8 / 1e9, "{:.1f}"),
            cell(r["disk_bytes_per_item"], 1e8 / 1e9, "{:.0f}")]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    started = time.perf_counter()
    cache, code = Path(cfg["cache"]), towers_code_hash()
    protocols = str(cfg["protocols"]).split(",")
    kinds = str(cfg["kinds"]).split(",")
    pending = [p for p in plan(cfg, code) if runnable(p, cache, kinds)]
    todo = pending[:cfg["pieces"]] if cfg["pieces"] else pending
    for i, piece in enumerate(todo, 1):
        print(f"piece {i}/{len(todo)} ({len(pending)} missing): {piece.kind} {piece.fields}", flush=True)
        row = run_piece(cfg, cache, piece)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    rows = table(cfg, cache, code)
    metric = f"{protocols[0]}_ndcg@10"
    default = choose_default(rows, metric, cfg["tolerance"])
    pieces = [_cached(cache, p.key) for p in plan(cfg, code)]
    sweep_s = sum(p["wall_s"] for p in pieces if p)
    print(markdown(rows, protocols, default))
    if default is None:
        print(f"default=undecided: no {metric} yet, or a row within {cfg['tolerance']:.0%} of the best "
              "lacks its bytes per item")
    else:
        best = max(r[metric] for r in rows if r.get(metric) is not None)
        print(f"default={default['config']} compression={default['compression']} {metric}="
              f"{default[metric]} best={best} ram_bytes_per_item={default['ram_bytes_per_item']} "
              f"(the fewest bytes within {cfg['tolerance']:.0%} of the best)")
    missing = sum(p is None for p in pieces)
    print(f"computed={len(todo)} missing={missing} sweep_wall_s={sweep_s:.0f} "
          f"this_run_s={time.perf_counter() - started:.0f}", flush=True)
    if cfg["json"]:
        Path(cfg["json"]).write_text(json.dumps(rows, indent=1) + "\n")
    if cfg["plot"]:
        done = sum(p is not None for p in pieces)
        plot(rows, metric, default, Path(cfg["plot"]),
             f"{cfg['data'].rpartition('/')[2]}: embedding size and compression "
             f"({done}/{len(pieces)} pieces; bytes and p99 at {cfg['items']:,} fitted items)")
    return {"rows": rows, "default": default, "computed": len(todo), "missing": missing,
            "sweep_wall_s": sweep_s}


if __name__ == "__main__":
    main()
