"""Small factories for contract tables in tests."""

from __future__ import annotations

import pandas as pd

from feature_repo.datasets import Dataset
from feature_repo.datasets.contract import TIMESTAMP


def utc(values: pd.Series) -> pd.Series:
    """Timestamps as the contract stores them: tz-aware UTC microseconds."""
    return pd.to_datetime(values, utc=True, format="mixed").astype(TIMESTAMP)


def make_dataset(events: list[tuple[int, int, str]], *, items: int = 30, users: int = 10,
                 stock: list[tuple[int, str, int]] | None = None) -> Dataset:
    """A dataset from (user_id, item_id, time) events, items 1..items and users 1..users."""
    interactions = pd.DataFrame(events, columns=["user_id", "item_id", "event_timestamp"])
    interactions["event_timestamp"] = utc(interactions["event_timestamp"])
    item_ids = range(1, items + 1)
    catalogue = pd.DataFrame({
        "item_id": list(item_ids), "title": [f"item {i}" for i in item_ids],
        "categories": [[f"c{i % 3}"] for i in item_ids], "price": [float(i) for i in item_ids],
        "created_at": utc(pd.Series(["2020-01-01"] * items))})
    people = pd.DataFrame({"user_id": list(range(1, users + 1)), "age": [30] * users,
                           "country": ["DE"] * users})
    log = pd.DataFrame(stock or [], columns=["item_id", "event_timestamp", "quantity"])
    log["event_timestamp"] = utc(log["event_timestamp"])
    return Dataset("test", interactions.astype({"user_id": "int64", "item_id": "int64"}),
                   catalogue, people, log.astype({"item_id": "int64", "quantity": "int64"}))
