"""A deterministic synthetic shop: users with latent tastes, categorised items, prices, stock, events.

Items belong to categories and carry a popularity weight; users prefer a few categories and browse in
sessions that stay in one category; new items arrive over the year; every purchase takes one unit of
stock and a purchase of a sold-out item does not happen. The same seed gives the same tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.datasets.contract import TIMESTAMP, Dataset
from feature_repo.datasets.stock import simulate_sales

START = pd.Timestamp("2025-01-01", tz="UTC")
SPAN_DAYS = 365
COUNTRIES = ["DE", "FR", "GB", "US", "ES", "IT", "NL", "PL"]


class ShopConfig(BaseModel):
    """Size and shape of the synthetic shop."""

    model_config = ConfigDict(extra="forbid")

    items: int = Field(1_000, ge=10, le=1_000_000)
    users: int = Field(2_000, ge=10, le=10_000_000)
    events: int = Field(50_000, ge=100, le=50_000_000)
    categories: int | None = Field(None, ge=2, description="default: items / 200, in [10, 500]")
    stay_in_category: float = Field(0.6, ge=0, le=1, description="chance a session step stays put")
    new_item_share: float = Field(0.3, ge=0, le=1, description="items released during the year")
    seed: int = 0


PRESETS = {
    "shop-small": ShopConfig(),
    "shop-100k": ShopConfig(items=100_000, users=100_000, events=2_000_000),
    "shop-1m": ShopConfig(items=1_000_000, users=1_000_000, events=12_100_000),  # ~10M served
}


def generate(config: ShopConfig) -> Dataset:
    """Generate the shop's four tables."""
    rng = np.random.default_rng(config.seed)
    n_cat = config.categories or int(np.clip(config.items // 200, 10, 500))
    items = _items(rng, config, n_cat)
    users, taste = _users(rng, config, n_cat)
    interactions = _events(rng, config, items, taste)
    # Purchases of a sold-out item do not happen.
    served, stock = simulate_sales(interactions, items, seed=config.seed)
    interactions = interactions[served].reset_index(drop=True)
    return Dataset("synthetic", interactions, items, users, stock).validate()


def _items(rng: np.random.Generator, config: ShopConfig, n_cat: int) -> pd.DataFrame:
    n = config.items
    category = rng.integers(0, n_cat, size=n)
    second = np.where(rng.random(n) < 0.3, rng.integers(0, n_cat, size=n), category)
    base_price = rng.lognormal(3.0, 0.8, size=n_cat)
    price = np.round(base_price[category] * rng.lognormal(0, 0.3, size=n), 2)
    new = rng.random(n) < config.new_item_share
    released = np.where(new, rng.uniform(0, SPAN_DAYS, size=n), -rng.uniform(0, 365, size=n))
    return pd.DataFrame({
        "item_id": np.arange(1, n + 1, dtype="int64"),
        "title": pd.array([f"item {i} of category {c}" for i, c in enumerate(category, 1)],
                          dtype="string"),
        "categories": [[f"c{a}"] if a == b else [f"c{a}", f"c{b}"]
                       for a, b in zip(category, second, strict=True)],
        "price": price,
        "created_at": (START + pd.to_timedelta(released, unit="D")).astype(TIMESTAMP),
        "popularity": rng.pareto(1.2, size=n) + 1.0,  # sampling only: dropped by _events
        "category": category,
        "released_s": released * 86_400,
    })


def _users(rng: np.random.Generator, config: ShopConfig, n_cat: int) -> tuple[pd.DataFrame, np.ndarray]:
    n = config.users
    taste = rng.dirichlet(np.full(n_cat, 0.05), size=n) if n * n_cat <= 5e7 else None
    if taste is None:  # large shops: three favourite categories per user keep memory bounded
        taste = rng.integers(0, n_cat, size=(n, 3))
    users = pd.DataFrame({
        "user_id": np.arange(1, n + 1, dtype="int64"),
        "age": rng.integers(18, 80, size=n),
        "country": pd.array(rng.choice(COUNTRIES, size=n), dtype="string"),
    })
    return users, taste


def _events(rng: np.random.Generator, config: ShopConfig, items: pd.DataFrame,
            taste: np.ndarray) -> pd.DataFrame:
    n_users, n = config.users, config.events
    activity = rng.lognormal(0, 1.0, size=n_users)
    user_index = rng.choice(n_users, size=n, p=activity / activity.sum())
    user_index.sort(kind="stable")
    # Category: from the user's taste, or the previous event's category (sessions stay in one).
    if taste.dtype.kind == "f":
        cum = taste.cumsum(axis=1)
        cum /= cum[:, -1:]
        category = (cum[user_index] < rng.random((n, 1))).sum(axis=1)
    else:
        category = taste[user_index, rng.integers(0, 3, size=n)]
    stay = rng.random(n) < config.stay_in_category
    stay[np.r_[True, user_index[1:] != user_index[:-1]]] = False
    category = pd.Series(np.where(stay, -1, category)).replace(-1, np.nan).ffill().to_numpy("int64")
    # Item: popularity-weighted within the category.
    item_index = np.empty(n, dtype="int64")
    by_cat = items.groupby("category").indices
    for cat in np.unique(category):
        where = np.flatnonzero(category == cat)
        members = by_cat.get(cat, np.arange(len(items)))
        weight = items["popularity"].to_numpy()[members]
        item_index[where] = members[rng.choice(len(members), size=len(where), p=weight / weight.sum())]
    # Time: sorted within each user, never before the item's release.
    seconds = rng.uniform(0, SPAN_DAYS * 86_400, size=n)
    seconds = seconds[np.lexsort((seconds, user_index))]  # user_index is sorted: blocks per user
    released = items["released_s"].to_numpy()[item_index]
    seconds = np.maximum(seconds, released + rng.uniform(0, 86_400, size=n))
    frame = pd.DataFrame({
        "user_id": user_index + 1,
        "item_id": item_index + 1,
        "event_timestamp": (START + pd.to_timedelta(np.round(seconds), unit="s")).astype(TIMESTAMP),
        "event_type": pd.Categorical(["purchase"]).repeat(n),
        "weight": np.ones(n),
    })
    items.drop(columns=["popularity", "category", "released_s"], inplace=True)
    return frame.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
