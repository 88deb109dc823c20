"""Stage 3, embeddings: the item tower applied to the whole catalogue, one parquet file per model version."""

import time

import dagster as dg
import numpy as np

from feature_repo.datasets import Dataset
from index.quality import pair_similarities
from pipelines.defs.plots import figure, markdown_image
from pipelines.defs.resources import RegistryResource
from pipelines.defs.values import ItemEmbeddings, ModelVersionRef

GROUP = "index"


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"})
def item_embeddings(context: dg.AssetExecutionContext, two_tower_model: ModelVersionRef,
                    raw_tables: Dataset, registry: RegistryResource) -> dg.Output[ItemEmbeddings]:
    """Every catalogue item embedded by the new item tower, written to the model store."""
    started = time.perf_counter()
    store = registry.model_store
    artifact = store.load(two_tower_model.location)
    vectors = artifact.embed_items(raw_tables.items)  # (N, dim): served, the prior's coordinate too
    path = store.write_embeddings(two_tower_model.id, raw_tables.items["item_id"].to_numpy(), vectors)
    towers = artifact.prior.towers(vectors)  # the norms and similarities of the towers' own
    norms = np.linalg.norm(towers, axis=1)
    context.log.info("embedded %d items into %s", len(vectors), path)
    return dg.Output(ItemEmbeddings(two_tower_model.id, path), metadata={
        "path": dg.MetadataValue.path(str(path)), "dagster/row_count": len(vectors),
        "dim": int(vectors.shape[1]), "norm_min": float(norms.min()), "norm_max": float(norms.max()),
        "seconds": round(time.perf_counter() - started, 2), "similarities": _similarity_plot(towers)})


def _similarity_plot(vectors: np.ndarray) -> dg.MetadataValue:
    fig, ax = figure(5, 3)
    ax.hist(pair_similarities(vectors), bins=50)
    ax.set_xlabel("dot product of random item pairs")
    ax.set_ylabel("pairs")
    ax.set_title("spread of the item embeddings")
    return markdown_image(fig, "similarities")
