"""The catalogue as the index ingests it: item content and stock turned into an `ItemBatch`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from index import ItemBatch

ITEM_COLUMNS = ("item_id", "title", "categories", "price", "created_at")


def latest_rows(stock_log: pd.DataFrame) -> pd.DataFrame:
    """Each item's last row of a stock log (item_id, event_timestamp, quantity), by time; of rows
    at the same time, the later one."""
    return stock_log.sort_values("event_timestamp", kind="stable").drop_duplicates("item_id", keep="last")


def latest_stock(stock_log: pd.DataFrame) -> dict[int, int]:
    """The last logged quantity of every item in a stock log (item_id, event_timestamp, quantity)."""
    latest = latest_rows(stock_log)
    return dict(zip(latest["item_id"].astype("int64").tolist(), latest["quantity"].astype("int64").tolist(),
                    strict=True))


def item_batch(items: pd.DataFrame, vectors: np.ndarray, stock: Mapping[int, int]) -> ItemBatch:
    """Item vectors with the payload the filters need; items absent from `stock` have none in stock."""
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"items frame: missing column {missing[0]!r}")
    created = pd.to_datetime(items["created_at"], utc=True)
    return ItemBatch.from_columns(
        ids=items["item_id"].to_numpy(dtype=np.int64), vectors=vectors,
        stock=np.array([int(stock.get(int(i), 0)) for i in items["item_id"]], dtype=np.int64),
        categories=[list(c) for c in items["categories"]],
        price=items["price"].to_numpy(dtype=np.float64),  # NaN: no price, no price filter match
        created_at=(created.astype("datetime64[us, UTC]").astype("int64") // 1_000_000).to_numpy())
