"""Stage 3, embeddings: the item tower applied to the whole catalogue, one parquet file per model version."""

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.datasets import Dataset
from index.quality import pair_similarities
from pipelines.defs.plots import figure, markdown_image
from pipelines.defs.resources import RegistryResource
from towers.artifact import Artifact

GROUP = "index"


def embeddings_path(embeddings_dir: Path, model_version_id: int) -> Path:
    return embeddings_dir / f"model_{model_version_id}.parquet"


def write_embeddings(path: str | Path, item_ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write (item_id, vector) rows atomically: readers see the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    table = pa.table({"item_id": pa.array(item_ids, pa.int64()),
                      "vector": pa.FixedSizeListArray.from_arrays(
                          pa.array(vectors.ravel(), pa.float32()), dim)})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N,) item ids and (N, D) float32 vectors of an embeddings file."""
    table = pq.read_table(path)
    vectors = table["vector"].combine_chunks()
    dim = vectors.type.list_size
    return (table["item_id"].to_numpy(),
            vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32))


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"})
def item_embeddings(context: dg.AssetExecutionContext, two_tower_model: dict, raw_tables: Dataset,
                    registry: RegistryResource) -> dg.Output[dict]:
    """Every catalogue item embedded by the new item tower (value: model version id and file path)."""
    started = time.perf_counter()
    artifact = Artifact.load(two_tower_model["location"])
    vectors = artifact.embed_items(raw_tables.items)  # (N, D)
    path = embeddings_path(registry.embeddings_dir, two_tower_model["model_version_id"])
    write_embeddings(path, raw_tables.items["item_id"].to_numpy(), vectors)
    norms = np.linalg.norm(vectors, axis=1)
    context.log.info("embedded %d items into %s", len(vectors), path)
    return dg.Output({**two_tower_model, "path": str(path)}, metadata={
        "path": dg.MetadataValue.path(str(path)), "dagster/row_count": len(vectors),
        "dim": int(vectors.shape[1]), "norm_min": float(norms.min()), "norm_max": float(norms.max()),
        "seconds": round(time.perf_counter() - started, 2), "similarities": _similarity_plot(vectors)})


def _similarity_plot(vectors: np.ndarray) -> dg.MetadataValue:
    fig, ax = figure(5, 3)
    ax.hist(pair_similarities(vectors), bins=50)
    ax.set_xlabel("dot product of random item pairs")
    ax.set_ylabel("pairs")
    ax.set_title("spread of the item embeddings")
    return markdown_image(fig, "similarities")
