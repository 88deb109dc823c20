"""Stage 4, index: an index version built from the item embeddings, then promoted if every check passed."""

import time

import dagster as dg
import numpy as np

from feature_repo.datasets import Dataset
from index import IndexSpec, build_version
from index.catalogue import item_batch, latest_stock
from index.events import LOG_GAPS, LOG_POSITION, log_gaps, log_position
from index.model_store import default_quantization, prune_versions
from index.quality import ann_recall, disk_bytes
from pipelines.defs.features import online_features
from pipelines.defs.resources import RegistryResource
from pipelines.defs.training import reranker
from pipelines.defs.values import IndexBuild, ItemEmbeddings, ModelVersionRef, query_sample
from towers import evaluate

GROUP = "index"


class IndexConfig(dg.Config):
    """How the version is built and searched (stored with it as its IndexSpec)."""

    # none | int8 | binary | product; None: int8, or none for a model with a popularity prior
    quantization: str | None = None
    hnsw_m: int = IndexSpec.model_fields["hnsw_m"].default
    hnsw_ef_construct: int = IndexSpec.model_fields["hnsw_ef_construct"].default
    hnsw_ef: int | None = IndexSpec.model_fields["hnsw_ef"].default  # None = from the catalogue's size


@dg.asset(group_name=GROUP, kinds={"qdrant"})
def item_index(context: dg.AssetExecutionContext, config: IndexConfig, item_embeddings: ItemEmbeddings,
               raw_tables: Dataset, two_tower_model: ModelVersionRef, evaluation_split: evaluate.Split,
               registry: RegistryResource) -> dg.Output[IndexBuild]:
    """A new, not yet live, index version: HNSW over the embeddings (int8 unless they carry a
    popularity prior), stock/category payload.

    The value names the version, its model version and the versions live when it was built. Its
    metadata says what it costs and gives: dim, compression, bytes per item on disk and recall@10
    as served (its own quantization and beam) against exact search for test-window users, the
    figures `twotower bench tradeoff` compares across sizes.
    """
    started = time.perf_counter()
    ids, vectors = registry.model_store.read_embeddings(item_embeddings.model_version_id)
    catalogue = raw_tables.items.set_index("item_id", drop=False)
    unknown = ~np.isin(ids, catalogue.index)  # catalogue items without a vector are checked later
    if unknown.any():
        raise ValueError(f"{item_embeddings.path}: item_id {ids[unknown][0]} is not in the catalogue")
    batch = item_batch(catalogue.loc[ids].reset_index(drop=True), vectors,
                       latest_stock(raw_tables.stock))
    artifact = registry.model_store.load(two_tower_model.location)
    quantization = config.quantization or default_quantization(artifact)
    spec = IndexSpec(dim=vectors.shape[1], quantization=quantization,  # type: ignore[arg-type]
                     hnsw_m=config.hnsw_m, hnsw_ef_construct=config.hnsw_ef_construct,
                     hnsw_ef=config.hnsw_ef)
    with registry.open() as reg:
        live = reg.live()
        # On promotion the service replays the stock and item writes logged after this position,
        # and those in its gaps when they land.
        version = build_version(batch, registry=reg, spec=spec,
                                model_version_id=item_embeddings.model_version_id,
                                metrics={LOG_POSITION: log_position(raw_tables),
                                         LOG_GAPS: log_gaps(raw_tables)})
        queries = query_sample(artifact, evaluation_split)
        [served] = ann_recall(reg.backend, queries, location=version.location)
    on_disk = disk_bytes(version.location)
    context.log.info("index version %d ready with %d items", version.id, version.item_count)
    value = IndexBuild(index_version_id=version.id, location=version.location,
                       model_version_id=item_embeddings.model_version_id,
                       previous_model_version_id=live.model_version_id if live else None,
                       previous_index_version_id=live.id if live else None)
    return dg.Output(value, metadata={
        "index_version_id": version.id, "location": dg.MetadataValue.path(str(version.location)),
        "dagster/row_count": int(version.item_count or 0), "in_stock": int((batch.stock > 0).sum()),
        "dim": spec.dim, "compression": spec.quantization,
        "bytes_per_item_disk": round(on_disk / max(version.item_count or 0, 1)) if on_disk else "n/a",
        "recall@10_served": round(served.recall, 4),
        **{k: v for k, v in version.metrics.items() if isinstance(v, int | float)},
        "seconds": round(time.perf_counter() - started, 2)})


@dg.asset(group_name=GROUP, deps=[reranker, online_features], kinds={"qdrant"})
def live_index_version(context: dg.AssetExecutionContext, item_index: IndexBuild,
                       registry: RegistryResource) -> dg.MaterializeResult:
    """The new index version made live (one transaction); runs only after every blocking check passed.

    Every check of the assets it is built from must have passed on their latest materialization,
    and each of those must be newer than its inputs' latest, whatever the run selected: run alone,
    it never promotes a version whose checks failed, or were skipped, in an earlier run, nor an
    index built from towers older than the checked ones.
    """
    # The whole graph the job was selected from: the job's own holds only the run's selection.
    graph = context.job_def.asset_layer.asset_graph.source_asset_graph
    built_from = graph.get_ancestor_asset_keys(context.asset_key)
    unchecked = [key.name for key in graph.asset_check_keys
                 if key.asset_key in built_from and not _passed_on_latest(context.instance, key)]
    if unchecked:
        raise dg.Failure(f"index version {item_index.index_version_id}: not promoted, checks "
                         f"failed or not run: {', '.join(sorted(unchecked))}")
    stale = _stale(context.instance, graph, built_from)
    if stale:
        raise dg.Failure(f"index version {item_index.index_version_id}: not promoted, built from "
                         f"inputs older than their latest: {'; '.join(stale)} (materialize them "
                         "again, with what follows them)")
    with registry.open() as reg:
        version = reg.promote(item_index.index_version_id)
    context.log.info("index version %d is live (was %s)", version.id,
                     item_index.previous_index_version_id)
    return dg.MaterializeResult(metadata={
        "index_version_id": version.id, "model_version_id": version.model_version_id,
        "previous_index_version_id": item_index.previous_index_version_id or "none",
        "promoted_at": str(version.promoted_at)})


def _passed_on_latest(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> bool:
    """The check's latest evaluation passed, on its asset's latest materialization."""
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None or record.status.value != "SUCCEEDED" or record.evaluation is None:
        return False
    target = record.evaluation.target_materialization_data
    latest = instance.get_latest_materialization_event(key.asset_key)
    return latest is not None and target is not None and target.run_id == latest.run_id


def _stale(instance: dg.DagsterInstance, graph, keys: set[dg.AssetKey]) -> list[str]:
    """Assets among `keys` whose latest materialization is older than an input's latest: e.g. an
    index built before the towers that were trained (and checked) since."""
    def latest(key: dg.AssetKey) -> float | None:
        event = instance.get_latest_materialization_event(key)
        return None if event is None else event.timestamp

    stale = []
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        built = latest(key)
        newer = [p.to_user_string() for p in sorted(graph.get(key).parent_keys & keys)
                 if built is not None and (latest(p) or 0) > built]
        if newer:
            stale.append(f"{key.to_user_string()} is older than {', '.join(newer)}")
    return stale


class PruneConfig(dg.Config):
    keep: int = 3  # ready or retired index versions kept besides the live one and the rollback target


@dg.asset(group_name=GROUP, deps=[live_index_version], kinds={"qdrant"})
def pruned_versions(context: dg.AssetExecutionContext, config: PruneConfig,
                    registry: RegistryResource) -> dg.MaterializeResult:
    """Old versions deleted after a promotion: their index shards, then the model directories and
    embeddings no index version uses. Never the live version or the rollback target."""
    with registry.open() as reg:
        pruned = prune_versions(reg, registry.model_store, config.keep)
        kept = [v.id for v in reg.versions()]
    context.log.info("pruned %s; kept index versions %s", pruned, kept)
    return dg.MaterializeResult(metadata={
        "deleted_index_versions": str(pruned["index_versions"]),
        "deleted_model_versions": str(pruned["model_versions"]), "kept_index_versions": str(kept)})
