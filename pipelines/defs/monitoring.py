"""Monitoring: how the new embeddings differ from the live ones, ANN recall vs speed, service latency.

None of these gate promotion; each shows its numbers and a plot in the UI.
"""

import time

import dagster as dg
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from index.quality import ann_recall, neighbour_overlap, pair_similarities
from pipelines.defs.plots import figure, markdown_image, table
from pipelines.defs.resources import RegistryResource, ServiceResource
from pipelines.defs.values import IndexBuild, ItemEmbeddings, ModelVersionRef, query_sample
from towers import evaluate
from towers.prior import PopularityPrior

GROUP = "monitoring"
EF_SWEEP = (8, 16, 32, 64, 128, 256)  # query-time beam widths of the recall/latency trade-off
LATENCY_METRIC = "twotower_request_seconds"  # the service's request latency histogram (all routes)


@dg.asset(group_name=GROUP, output_required=False, kinds={"numpy"})
def embedding_drift(context: dg.AssetExecutionContext, item_embeddings: ItemEmbeddings,
                    item_index: IndexBuild, registry: RegistryResource):
    """New item embeddings against those of the model that was live when the index was built."""
    previous = item_index.previous_model_version_id
    if previous is None:
        context.log.info("no earlier live model: nothing to compare")
        return
    store = registry.model_store
    with registry.open() as reg:  # the towers' own vectors: without a popularity prior's coordinate
        locations = [reg.get_model(v).location for v in (item_embeddings.model_version_id, previous)]
    new_prior, old_prior = [store.load(at).prior if at else PopularityPrior.off() for at in locations]
    new_ids, new = store.read_embeddings(item_embeddings.model_version_id)
    old_ids, old = store.read_embeddings(previous)
    new, old = new_prior.towers(new), old_prior.towers(old)
    common, new_rows, old_rows = np.intersect1d(new_ids, old_ids, return_indices=True)
    new, old = new[new_rows], old[old_rows]
    overlap = neighbour_overlap(old, new)
    new_norms, old_norms = np.linalg.norm(new, axis=1), np.linalg.norm(old, axis=1)
    new_sims, old_sims = pair_similarities(new), pair_similarities(old)
    fig, (sim_ax, overlap_ax) = figure(9, 3.5, cols=2)
    sim_ax.hist(old_sims, bins=50, alpha=0.6, label=f"live (model {previous})")
    sim_ax.hist(new_sims, bins=50, alpha=0.6, label=f"new (model {item_embeddings.model_version_id})")
    sim_ax.set_xlabel("dot product of random item pairs")
    sim_ax.legend(fontsize=7)
    overlap_ax.hist(overlap, bins=np.linspace(0, 1, 11))
    overlap_ax.set_xlabel("share of an item's 10 nearest neighbours kept")
    overlap_ax.set_ylabel("items")
    yield dg.Output(None, metadata={
        "items_compared": len(common), "neighbours_changed_share": float(np.mean(overlap < 0.5)),
        "neighbour_overlap_mean": float(overlap.mean()),
        "new_norm_mean": float(new_norms.mean()), "live_norm_mean": float(old_norms.mean()),
        "new_pair_similarity_mean": float(new_sims.mean()),
        "live_pair_similarity_mean": float(old_sims.mean()),
        "distributions": markdown_image(fig, "embedding drift")})


@dg.asset(group_name=GROUP, kinds={"qdrant"})
def index_recall(item_index: IndexBuild, two_tower_model: ModelVersionRef,
                 evaluation_split: evaluate.Split, registry: RegistryResource) -> dg.MaterializeResult:
    """ANN recall@10 against exact search on a fixed query sample, across query beam widths."""
    queries = query_sample(registry.model_store.load(two_tower_model.location), evaluation_split)
    with registry.open() as reg:
        served_ef = reg.backend.spec(item_index.location).hnsw_ef
        reports = ann_recall(reg.backend, queries, location=item_index.location,
                             hnsw_efs=sorted({*EF_SWEEP, served_ef}))
    rows = [{"hnsw_ef": r.hnsw_ef, "recall@10": r.recall, "mean_ms": r.mean_ms} for r in reports]
    fig, ax = figure(5, 3.5)
    ax.plot([r["mean_ms"] for r in rows], [r["recall@10"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"ef={r['hnsw_ef']}", (r["mean_ms"], r["recall@10"]), fontsize=7)
    ax.set_xlabel("mean query time (ms)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title(f"index version {item_index.index_version_id}: recall vs speed")
    served = next(r for r in rows if r["hnsw_ef"] == served_ef)
    return dg.MaterializeResult(metadata={
        "index_version_id": item_index.index_version_id, "queries": len(queries),
        "recall@10_as_served": served["recall@10"], "hnsw_ef": served_ef, "sweep": table(rows),
        "tradeoff": markdown_image(fig, "recall vs speed")})


@dg.asset(group_name=GROUP, output_required=False, kinds={"prometheus"})
def service_latency(context: dg.AssetExecutionContext, service: ServiceResource):
    """The latency histogram the running service reports on /metrics (skipped without a service URL)."""
    if service.url is None:
        context.log.info("no service configured (TWOTOWER_SERVICE_URL): nothing to read")
        return
    started = time.perf_counter()
    response = httpx.get(f"{service.url.rstrip('/')}/metrics", timeout=10)
    response.raise_for_status()
    buckets = latency_buckets(response.text)
    if not buckets:
        raise ValueError(f"{service.url}/metrics: no histogram {LATENCY_METRIC!r}")
    name, bounds, counts = buckets
    per_bucket = np.diff([0.0, *counts])
    fig, ax = figure(6, 3.5)
    labels = [f"{b * 1000:g}" if np.isfinite(b) else "inf" for b in bounds]
    ax.bar(range(len(bounds)), per_bucket)
    ax.set_xticks(range(len(bounds)), labels, rotation=60, fontsize=7)
    ax.set_xlabel("latency bucket upper bound (ms)")
    ax.set_ylabel("requests")
    ax.set_title(name)
    total = counts[-1]
    yield dg.Output(None, metadata={
        "histogram": name, "requests": int(total),
        **{f"p{q}_ms_upper_bound": _quantile_bound(bounds, counts, q / 100) * 1000 for q in (50, 95, 99)},
        "seconds": round(time.perf_counter() - started, 2),
        "distribution": markdown_image(fig, "latency")})


def latency_buckets(text: str) -> tuple[str, list[float], list[float]] | None:
    """The request latency histogram in a Prometheus exposition: name, bucket bounds, cumulative counts."""
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or family.name != LATENCY_METRIC:
            continue
        merged: dict[float, float] = {}
        for sample in family.samples:  # summed over label sets (routes, methods)
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                merged[bound] = merged.get(bound, 0.0) + sample.value
        if merged:
            bounds = sorted(merged)
            return family.name, bounds, [merged[b] for b in bounds]
    return None


def _quantile_bound(bounds: list[float], counts: list[float], q: float) -> float:
    """The upper bound of the bucket holding quantile q (cumulative counts)."""
    if counts[-1] == 0:
        return float("nan")
    return bounds[int(np.searchsorted(counts, q * counts[-1]))]
