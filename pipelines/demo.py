"""The end-to-end job on one machine: features, towers, a live index, and recommendations.

`twotower demo` (and so `make demo`) runs it. Each step calls the library that owns it; the Dagster
assets run the same steps with checks between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.datasets import Dataset, load
from feature_repo.store import FeatureStoreConfig, build_store, materialize, online_user_features
from pipelines.index import IndexSettings, IndexSpec, ItemBatch, SearchFilters, build_version, open_backend
from pipelines.registry import Registry
from towers.artifact import Artifact
from towers.train import TrainConfig, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_id: int
    title: str
    score: float


def catalogue_batch(dataset: Dataset, vectors: np.ndarray) -> ItemBatch:
    """Item vectors with the payload the filters need: latest stock, categories, price, release."""
    items = dataset.items
    latest = dataset.stock.drop_duplicates("item_id", keep="last").set_index("item_id")["quantity"]
    return ItemBatch.from_columns(
        ids=items["item_id"].to_numpy(), vectors=vectors,
        stock=items["item_id"].map(latest).fillna(0).astype("int64").to_numpy(),
        categories=[list(c) for c in items["categories"]],
        price=items["price"].fillna(0.0).to_numpy(),
        created_at=(items["created_at"].astype("int64") // 1_000_000).to_numpy())


def publish(artifact: Artifact, dataset: Dataset, home: Path, *,
            config: dict | None = None) -> Registry:
    """Save the model, build an index version of its item embeddings under `home`, make it live.

    Returns the registry, whose `store` serves the live version; the caller closes it.
    """
    registry = Registry(data_dir=home, store=open_backend(IndexSettings(path=home / "index")))
    model = registry.register_model("two-tower", config=config, metrics=artifact.metrics)
    artifact.save(home / "models" / str(model.id))
    vectors = artifact.embed_items(dataset.items)
    version = build_version(catalogue_batch(dataset, vectors), registry=registry,
                            spec=IndexSpec(dim=vectors.shape[1]), model_version_id=model.id,
                            promote=True)
    log.info("index version %s is live with %s items", version.id, version.item_count)
    return registry


def run_demo(spec: str, home: Path, *, users: int = 3, k: int = 5,
             train_minutes: float = 1.0) -> list[Recommendation]:
    """Build everything under `home` for the dataset `spec` and recommend for a few users."""
    dataset = load(spec)
    log.info("%s: %d interactions, %d items, %d users", dataset.name, len(dataset.interactions),
             len(dataset.items), len(dataset.users))
    store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo"))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())

    artifact = fit(dataset.interactions, dataset.items, dataset.users,
                   train=TrainConfig(max_minutes=train_minutes, epochs=3))
    registry = publish(artifact, dataset, home, config={"data": spec})

    chosen = dataset.interactions["user_id"].value_counts().index[:users].tolist()
    frame = online_user_features(store, chosen)
    frame["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    user_vectors = artifact.embed_users(frame)
    titles = dataset.items.set_index("item_id")["title"]
    answers = []
    for row, vector in zip(frame.itertuples(), user_vectors, strict=True):
        seen = frozenset(int(i) for i in row.recent_item_ids)
        for hit in registry.store.search(vector, k=k, filters=SearchFilters(exclude_ids=seen)):
            answers.append(Recommendation(row.user_id, hit.item_id, str(titles[hit.item_id]),
                                          hit.score))
    registry.close()
    return answers
