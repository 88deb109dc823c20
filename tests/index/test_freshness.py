"""Freshness without retraining: stock pushes and new items reach the live version directly."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from index import SearchFilters, UnknownItemError
from index.catalogue import latest_stock
from index.freshness import add_items, push_stock
from pipelines.defs.resources import build_resources
from towers.artifact import Artifact


@pytest.fixture
def live(graph):
    """The graph's feature store, registry (with the live backend open) and live towers."""
    resources = build_resources(graph.settings)
    with resources["registry"].open() as registry:
        artifact = Artifact.load(registry.live_model().location)
        yield graph.dataset, resources["feature_store"].open(), registry, artifact


def online_quantity(store, item_id: int) -> int:
    response = store.get_online_features(features=["item_stock:quantity"],
                                         entity_rows=[{"item_id": item_id}])
    return response.to_dict()["quantity"][0]


def test_pushed_zero_stock_hides_the_item_and_reaches_the_online_store(live):
    dataset, store, registry, artifact = live
    in_stock = [i for i, q in latest_stock(dataset.stock).items() if q > 0]
    vector = artifact.embed_items(dataset.items[dataset.items["item_id"] == in_stock[-1]])[0]
    top = registry.backend.search(vector, k=1)[0].item_id
    live_before = registry.live().id

    push_stock(store, registry.backend, {top: 0}, at=datetime.now(UTC))

    assert top not in [h.item_id for h in registry.backend.search(vector, k=50)]
    assert online_quantity(store, top) == 0
    assert registry.live().id == live_before, "no retraining, no new version"


def test_stock_push_for_an_unknown_item_changes_nothing(live):
    dataset, store, registry, _ = live
    known = int(dataset.items["item_id"].iloc[-1])
    before = online_quantity(store, known)
    with pytest.raises(UnknownItemError, match="999999"):
        push_stock(store, registry.backend, {known: before + 5, 999_999: 1}, at=datetime.now(UTC))
    assert online_quantity(store, known) == before


def test_new_item_with_content_only_is_retrievable_by_its_content(live):
    dataset, store, registry, artifact = live
    twin = dataset.items.iloc[[5]]
    new = twin.assign(item_id=int(dataset.items["item_id"].max()) + 2,
                      title=twin["title"] + " (new edition)",
                      created_at=pd.Timestamp.now(tz="UTC").floor("s"))
    count_before = registry.backend.count()

    add_items(store, artifact, registry.backend, new, {int(new["item_id"].iloc[0]): 7},
              at=datetime.now(UTC))

    assert registry.backend.count() == count_before + 1
    vector = artifact.embed_items(new)[0]
    category = frozenset([list(new["categories"].iloc[0])[0]])
    hits = registry.backend.search(vector, k=5, filters=SearchFilters(categories=category))
    assert hits[0].item_id == int(new["item_id"].iloc[0]) and hits[0].stock == 7
    assert np.isclose(hits[0].score, float(vector @ vector), atol=0.05)
    assert online_quantity(store, int(new["item_id"].iloc[0])) == 7


def test_new_items_missing_a_content_column_are_refused(live):
    dataset, store, registry, artifact = live
    new = dataset.items.iloc[[0]].drop(columns=["created_at"]).assign(item_id=10_000)
    with pytest.raises(ValueError, match="created_at"):
        add_items(store, artifact, registry.backend, new, {}, at=datetime.now(UTC))
