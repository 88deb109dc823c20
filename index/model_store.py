"""Model versions on disk and in the registry: save a trained artifact, register it, publish it.

A model version is one directory: the towers artifact at `location`, the re-ranker,
when trained, in `<location>/ranker/`. Directories are named by creation time, so a rerun never
overwrites a version the registry already points at.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feature_repo.datasets import Dataset
from index import EdgeSettings, IndexSpec, build_version, open_backend
from index.catalogue import item_batch, latest_stock
from index.registry import ModelVersion, Registry
from towers.artifact import Artifact

log = logging.getLogger(__name__)

MODEL_NAME = "two-tower"
RANKER_DIR = "ranker"  # a model version's re-ranker, when trained, lives in <location>/ranker/


def ranker_dir(model_location: str | Path) -> Path:
    """Where a model version's re-ranker is saved (it may not exist: not every version has one)."""
    return Path(model_location) / RANKER_DIR


def save_model(registry: Registry, artifact: Artifact, models_dir: Path, *,
               config: dict[str, Any] | None = None) -> ModelVersion:
    """Save the artifact under `models_dir` and register it with its directory as `location`."""
    location = models_dir.resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    artifact.save(location)
    metrics = {k: v for k, v in artifact.metrics.items() if k != "history"}
    return registry.register_model(MODEL_NAME, config=config, metrics=metrics, location=str(location))


def publish(artifact: Artifact, dataset: Dataset, home: Path, *,
            config: dict | None = None) -> Registry:
    """Save the model, build an index version of its item embeddings under `home`, make it live.

    Returns the registry, whose `store` serves the live version; the caller closes it.
    """
    registry = Registry(data_dir=home, backend=open_backend(EdgeSettings(path=home / "index")))
    model = save_model(registry, artifact, home / "models", config=config)
    vectors = artifact.embed_items(dataset.items)
    batch = item_batch(dataset.items, vectors, latest_stock(dataset.stock))
    version = build_version(batch, registry=registry, spec=IndexSpec(dim=vectors.shape[1]),
                            model_version_id=model.id, promote=True)
    log.info("index version %s is live with %s items", version.id, version.item_count)
    return registry
