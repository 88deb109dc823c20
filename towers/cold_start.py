"""Cold-start report: how well the towers rank items they never saw in training, from content alone.

A seeded share (10 %) of the interacted items is held out: the two-tower trains (LOO split, its own
Feast store) on the dataset without any of their events, so no item ID, history or target holds
them. Every interaction with a held-out item then becomes a query at its time (user features from
that store, strictly before t) whose candidates are the held-out items only, minus those the user
had already interacted with. The reference is Popularity over the same items, counted point in
time: each item's interactions strictly before the query (what a since-launch popularity list
knows, while the towers know none). `serve` plugs in the retrieval as served (`twotower eval
--cold-start` passes an index built from the held-out items' embeddings); dense otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from feature_repo.datasets import Dataset
from towers.artifact import Artifact
from towers.data import sort_events, unix_micros
from towers.evaluate import (
    TOP_K,
    Queries,
    Recommend,
    Retrieve,
    evaluate,
    loo_split,
    top_k,
    two_tower,
)
from towers.features import feature_store, query_features, with_features
from towers.model import TowerConfig
from towers.train import TrainConfig, fit_split

log = logging.getLogger(__name__)

COLD_FRACTION = 0.1  # a tenth of the catalogue: enough cold items to measure, most still trained on


def cold_items(interactions: pd.DataFrame, fraction: float = COLD_FRACTION, seed: int = 0
               ) -> np.ndarray:
    """A seeded random `fraction` of the items that have interactions, sorted."""
    items = np.unique(interactions["item_id"].to_numpy())
    count = max(1, round(fraction * len(items)))
    return np.sort(np.random.default_rng(seed).choice(items, count, replace=False))


def cold_queries(interactions: pd.DataFrame, cold: np.ndarray) -> Queries:
    """One query per user's first interaction with a cold item, at its time; earlier cold items
    excluded (a repeat of one is no query: no ranking could name an excluded item)."""
    events = sort_events(interactions[interactions["item_id"].isin(cold)])
    items = events["item_id"].to_numpy()
    earlier = events.groupby("user_id").cumcount().to_numpy()  # the user's cold events before it
    first = np.flatnonzero(~events.duplicated(["user_id", "item_id"]).to_numpy())
    frame = events[["user_id", "item_id", "event_timestamp"]].iloc[first].reset_index(drop=True)
    return Queries("cold", frame, [items[i - earlier[i]:i] for i in first],
                   [items[i:i + 1] for i in first])


def popularity_before(interactions: pd.DataFrame, cold: np.ndarray) -> Recommend:
    """Cold items ranked by their interactions strictly before each query's time."""
    events = interactions[interactions["item_id"].isin(cold)]
    micros = unix_micros(events["event_timestamp"])
    times = {i: np.sort(micros[events["item_id"].to_numpy() == i]) for i in cold}

    def recommend(frame: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        at = unix_micros(frame["event_timestamp"])
        counts = np.stack([np.searchsorted(times[i], at, side="left") for i in cold], axis=1)
        return top_k(torch.from_numpy(counts.astype(np.float32)), cold, k, exclude)  # (Q, C)

    return recommend


def report(dataset: Dataset, home: str | Path, *, tower: TowerConfig | None = None,
           train: TrainConfig | None = None, fraction: float = COLD_FRACTION, seed: int = 0,
           serve: Callable[[Artifact, pd.DataFrame], Retrieve] | None = None) -> dict:
    """Train without the cold items, then Recall@100 (and @10, NDCG@10) on their interactions.

    `serve(artifact, cold_items)` returns the retrieval over those items (default: dense).
    """
    tower = tower or TowerConfig()
    cold = cold_items(dataset.interactions, fraction, seed)
    warm = dataclasses.replace(
        dataset, interactions=dataset.interactions[~dataset.interactions["item_id"].isin(cold)])
    store = feature_store(warm, tower.max_len, home)
    split = with_features(loo_split(warm.interactions), store)
    artifact = fit_split(split, dataset.items, store, tower=tower, train=train)
    queries = query_features(store, cold_queries(dataset.interactions, cold))
    catalogue = dataset.items[dataset.items["item_id"].isin(cold)]
    k = min(TOP_K, len(cold))
    log.info("cold start: %d held-out items, %d interactions with them", len(cold),
             len(queries.targets))
    return {"cold_items": len(cold), "interactions": len(queries.targets), "k": k,
            "two-tower": evaluate(two_tower(artifact, catalogue,
                                            serve(artifact, catalogue) if serve else None),
                                  queries, k),
            "popularity": evaluate(popularity_before(dataset.interactions, cold), queries, k),
            "best_epoch": artifact.metrics["best_epoch"], "steps": artifact.metrics["steps"]}
