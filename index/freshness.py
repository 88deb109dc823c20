"""Freshness without retraining: new stock and new items reach the live index and the online store.

Shared by the Dagster sensors and the service (`PUT /v1/items/{id}/stock`, `PUT /v1/items/{id}`).
A Qdrant Edge shard is single-process: when a service runs, it owns the live shard and these
functions run inside it; the sensors then go through the service's client instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from feature_repo.item_features import item_stock_fv
from index import IndexBackend
from index.catalogue import item_batch
from towers.artifact import Artifact

log = logging.getLogger(__name__)


def push_stock(store, backend: IndexBackend, quantities: Mapping[int, int], *, at: datetime) -> None:
    """Write new quantities to the Feast online store and the live index payload.

    The index is written first: it refuses unknown items, so a bad id changes nothing.
    """
    if not quantities:
        return
    if at.tzinfo is None:
        raise ValueError(f"at={at}: must be timezone-aware (UTC)")
    for item_id, quantity in quantities.items():
        if int(quantity) < 0:
            raise ValueError(f"item_id {item_id}: quantity {quantity} is negative")
    backend.set_stock({int(i): int(q) for i, q in quantities.items()})
    rows = pd.DataFrame({"item_id": [int(i) for i in quantities],
                         "quantity": [int(q) for q in quantities.values()],
                         "event_timestamp": pd.Timestamp(at).tz_convert("UTC")})
    rows["event_timestamp"] = rows["event_timestamp"].astype("datetime64[us, UTC]")
    store.write_to_online_store(item_stock_fv.name, rows)
    log.info("pushed stock of %d items", len(rows))


def add_items(store, artifact: Artifact, backend: IndexBackend, items: pd.DataFrame,
              stock: Mapping[int, int], *, at: datetime) -> None:
    """Embed new (or changed) items from their content with the live item tower; upsert them live.

    `items` has the contract's item columns; items absent from `stock` are added out of stock.
    Their quantities then go through `push_stock`, so the online store knows them too.
    """
    if items.empty:
        return
    batch = item_batch(items, artifact.embed_items(items), {})
    backend.upsert(batch)
    push_stock(store, backend, {int(i): int(stock.get(int(i), 0)) for i in batch.ids}, at=at)
    log.info("upserted %d items into the live index version", len(batch))
