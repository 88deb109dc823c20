"""Model versions on disk and in the registry: save a trained artifact, register it, publish it.

A model version is one directory: the towers artifact at `location`, the re-ranker, when trained,
in `<location>/ranker/`. Directories are named by creation time, so a rerun never overwrites a
version the registry already points at. `ModelStore` also keeps each version's item embeddings.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.datasets import Dataset
from feature_repo.files import atomic_path
from index import EdgeSettings, IndexSpec, build_version, open_backend
from index.catalogue import item_batch, latest_stock
from index.config import Quantization
from index.home import FINGERPRINT
from index.registry import ModelVersion, Registry, as_utc
from towers.artifact import Artifact

log = logging.getLogger(__name__)

MODEL_NAME = "two-tower"
RANKER_DIR = "ranker"
UNBUILT_MODEL_GRACE = timedelta(days=1)  # a run trains, then builds its index within hours
LOADED_ARTIFACTS = 4  # a run reads the new model and the live one; a few more cover reruns


def ranker_dir(model_location: str | Path) -> Path:
    """Where a model version's re-ranker is saved (it may not exist: not every version has one)."""
    return Path(model_location) / RANKER_DIR


EVALUATED = "evaluated"  # a version's subfolder: the fit its figures and checks come from


def save_model(registry: Registry, artifact: Artifact, models_dir: Path, *,
               config: dict[str, Any] | None = None,
               evaluated: Artifact | None = None) -> ModelVersion:
    """Save the artifact under `models_dir` (with the fit it was `evaluated` by, when it is a refit
    on later events too) and register it with its directory as `location`."""
    location = models_dir.resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if evaluated is not None:
        evaluated.save(location / EVALUATED)
    artifact.save(location)
    metrics = {k: v for k, v in artifact.metrics.items() if k != "history"}
    return registry.register_model(MODEL_NAME, config=config, metrics=metrics, location=str(location))


@lru_cache(maxsize=LOADED_ARTIFACTS)
def _load(location: str) -> Artifact:
    return Artifact.load(location)


@dataclass(frozen=True)
class ModelStore:
    """The model versions under one data directory.

        models/<created>/          the towers of a version (its registry `location`)
        models/<created>/evaluated/   the fit they were evaluated by, when they are its refit
        models/<created>/ranker/   its re-ranker, when trained
        embeddings/model_<id>.parquet   its item embeddings: (item_id, vector) rows
    """

    data_dir: Path

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embeddings_dir(self) -> Path:
        return self.data_dir / "embeddings"

    def save(self, registry: Registry, artifact: Artifact, *, config: dict[str, Any] | None = None,
             evaluated: Artifact | None = None) -> ModelVersion:
        """Save and register the artifact as a new model version (see `save_model`)."""
        return save_model(registry, artifact, self.models_dir, config=config, evaluated=evaluated)

    @staticmethod
    def load(location: str | Path) -> Artifact:
        """The towers at `location`, loaded once per process and shared: callers must not modify it.

        A version's directory is never rewritten (see `save_model`), so the location is the key.
        """
        return _load(str(Path(location).resolve()))

    def evaluated(self, location: str | Path) -> Artifact:
        """The towers a version's figures and checks come from: the fit it was evaluated by (its
        refit on every event is what it serves), or the served towers themselves."""
        first = Path(location) / EVALUATED
        return self.load(first if first.is_dir() else location)

    def embeddings_path(self, model_version_id: int) -> Path:
        return self.embeddings_dir / f"model_{model_version_id}.parquet"

    def write_embeddings(self, model_version_id: int, item_ids: np.ndarray, vectors: np.ndarray) -> Path:
        """Write (item_id, vector) rows atomically: readers see the old file or the complete new one."""
        path = self.embeddings_path(model_version_id)
        table = pa.table({"item_id": pa.array(item_ids, pa.int64()),
                          "vector": pa.FixedSizeListArray.from_arrays(
                              pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    def read_embeddings(self, model_version_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(N,) item ids and (N, D) float32 vectors of a model version's item embeddings."""
        path = self.embeddings_path(model_version_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no item embeddings of model version {model_version_id}")
        table = pq.read_table(path)
        vectors = table["vector"].combine_chunks()
        return (table["item_id"].to_numpy(),
                vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, vectors.type.list_size)
                .astype(np.float32))


def prune_versions(registry: Registry, store: ModelStore, keep: int) -> dict[str, list[int]]:
    """Delete old index versions (`Registry.prune`: never the live one or the rollback target),
    then every model version no index version uses any more: its directory and embeddings.

    Model versions newer than the newest one in use are kept, and so is, for
    `UNBUILT_MODEL_GRACE` after it was registered, an older one no index version was built from
    yet: a run (perhaps one that started before another that finished first) may be building
    from it.
    """
    built = {v.model_version_id for v in registry.versions()}
    indexes = registry.prune(keep)
    used = {v.model_version_id for v in registry.versions()}
    newest = max(used, default=0)
    young = datetime.now(UTC) - UNBUILT_MODEL_GRACE
    models = []
    for model in registry.models():
        if model.id in used or model.id > newest or (
                model.id not in built and as_utc(model.created_at) > young):
            continue
        registry.delete_model(model.id)
        store.embeddings_path(model.id).unlink(missing_ok=True)
        location = Path(model.location).resolve() if model.location else None
        if location is not None and location.parent == store.models_dir.resolve():
            shutil.rmtree(location, ignore_errors=True)
        models.append(model.id)
    log.info("pruned index versions %s and model versions %s", indexes, models)
    return {"index_versions": indexes, "model_versions": models}


def default_quantization(artifact: Artifact) -> Quantization:
    """IndexSpec's default (int8), or none when the vectors carry a popularity prior.

    int8 codes every coordinate in one value range (the query's too, as recall suggests); the
    prior's does not fit beside unit-vector ones (recall@10 0.92 against exact search for
    ml-1m-dev's TEMPORAL test users at weight 0.2, under the 0.97 the pipeline requires;
    docs/towers-notes.md, issue 18, part m).
    """
    return "none" if artifact.prior.extra_dims else IndexSpec.model_fields["quantization"].default


def publish(artifact: Artifact, dataset: Dataset, home: Path, *,
            config: dict | None = None) -> Registry:
    """Save the model (with `dataset`'s fingerprint), build an index version of its item
    embeddings under `home`, make it live.

    Returns the registry, whose `backend` serves the live version; the caller closes it.
    """
    registry = Registry(data_dir=home, backend=open_backend(EdgeSettings(path=home / "index")))
    model = ModelStore(home).save(registry, artifact,
                                  config={FINGERPRINT: dataset.fingerprint, **(config or {})})
    vectors = artifact.embed_items(dataset.items)
    batch = item_batch(dataset.items, vectors, latest_stock(dataset.stock))
    spec = IndexSpec(dim=vectors.shape[1], quantization=default_quantization(artifact))
    version = build_version(batch, registry=registry, spec=spec,
                            model_version_id=model.id, promote=True)
    log.info("index version %s is live with %s items", version.id, version.item_count)
    return registry
