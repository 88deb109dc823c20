"""Loaders for MovieLens 100K and 1M (https://grouplens.org/datasets/movielens/), read by path.

MovieLens has neither stock nor prices: the stock log is simulated (see `stock.py`) and each film gets
a deterministic pseudo-price, so the whole platform runs on it. Ratings become interactions with
`event_type="rating"` and the rating as `weight`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.datasets.contract import (
    TIMESTAMP,
    DataError,
    Dataset,
    drop_unparsed,
    has_problems,
    parse_ints,
    parse_timestamps,
    report,
)
from feature_repo.datasets.stock import simulate_stock

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
YEAR = re.compile(r"\((\d{4})\)\s*$")


def _read(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(str(path), "file not found")
    frame = pd.read_csv(path, sep=sep, names=names, header=None, dtype=str, encoding="latin-1",
                        engine="python" if len(sep) > 1 else "c", keep_default_na=False)
    if frame.empty:
        raise DataError(str(path), "no rows")
    if frame[names[-1]].isna().any():
        raise DataError(str(path), "too few fields", column=names[-1],
                        row=int(frame[names[-1]].isna().to_numpy().argmax()) + 1)
    frame.attrs["source"] = str(path)
    return frame


def _interactions(raw: pd.DataFrame) -> pd.DataFrame:
    source = raw.attrs["source"]
    frame = pd.DataFrame({
        "user_id": parse_ints(raw["user_id"], source=source, column="user_id"),
        "item_id": parse_ints(raw["item_id"], source=source, column="item_id"),
        "event_timestamp": parse_timestamps(raw["timestamp"], source=source, column="timestamp",
                                            unit="s"),
        "event_type": pd.Series("rating", index=raw.index, dtype="category"),
        "weight": parse_ints(raw["rating"], source=source, column="rating").astype("float64"),
    })
    frame = drop_unparsed(frame, ["user_id", "item_id", "event_timestamp", "weight"])
    frame.attrs["source"] = source
    return frame


def _pseudo_price(item_ids: pd.Series) -> pd.Series:
    """A deterministic price in [1.99, 19.99] per item, for the price filters and features."""
    cents = (item_ids.to_numpy() * 2654435761) % 1801
    return pd.Series(np.round(1.99 + cents / 100.0, 2), index=item_ids.index)


def _finish(name: str, interactions: pd.DataFrame, items: pd.DataFrame,
            users: pd.DataFrame) -> Dataset:
    """Fill what MovieLens lacks (missing dates, prices, stock) and validate."""
    first_seen = interactions.groupby("item_id")["event_timestamp"].min()
    missing = items["created_at"].isna()
    items.loc[missing, "created_at"] = items.loc[missing, "item_id"].map(first_seen)
    items["created_at"] = items["created_at"].astype(TIMESTAMP)
    items["price"] = _pseudo_price(items["item_id"])
    dataset = Dataset(name, interactions, items, users, stock=pd.DataFrame(
        columns=["item_id", "event_timestamp", "quantity"])).validate()
    if has_problems():  # collecting: stop before the simulation
        return dataset
    return replace(dataset, stock=simulate_stock(interactions, items))


def load_100k(path: str | Path) -> Dataset:
    """MovieLens 100K: `u.data` (tab-separated), `u.item` and `u.user` (pipe-separated)."""
    path = Path(path)
    interactions = _interactions(_read(path / "u.data", "\t",
                                       ["user_id", "item_id", "rating", "timestamp"]))
    raw = _read(path / "u.item", "|", ["item_id", "title", "release_date", "video_release", "url",
                                       *GENRES_100K])
    source = raw.attrs["source"]
    flags = raw[GENRES_100K] == "1"
    released = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce", utc=True)
    bad_date = released.isna() & (raw["release_date"] != "")
    if bad_date.any():
        report(DataError(source, f"cannot parse date {raw['release_date'][bad_date].iloc[0]!r}",
                         column="release_date", row=int(bad_date.to_numpy().argmax()) + 1,
                         rows=int(bad_date.sum())))
    items = pd.DataFrame({
        "item_id": parse_ints(raw["item_id"], source=source, column="item_id"),
        "title": raw["title"].astype("string"),
        "categories": [[g for g, on in zip(GENRES_100K, row, strict=True) if on]
                       for row in flags.to_numpy()],
        "created_at": released,
    })
    items = drop_unparsed(items, ["item_id"])
    items.attrs["source"] = source
    raw = _read(path / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip_code"])
    users = pd.DataFrame({
        "user_id": parse_ints(raw["user_id"], source=raw.attrs["source"], column="user_id"),
        "age": parse_ints(raw["age"], source=raw.attrs["source"], column="age"),
        "gender": raw["gender"].astype("string"),
        "occupation": raw["occupation"].astype("string"),
        "zip_code": raw["zip_code"].astype("string"),
    })
    users = drop_unparsed(users, ["user_id", "age"])
    users.attrs["source"] = raw.attrs["source"]
    return _finish("movielens-100k", interactions, items, users)


def load_1m(path: str | Path) -> Dataset:
    """MovieLens 1M: `ratings.dat`, `movies.dat`, `users.dat`, `::`-separated, latin-1."""
    path = Path(path)
    interactions = _interactions(_read(path / "ratings.dat", "::",
                                       ["user_id", "item_id", "rating", "timestamp"]))
    raw = _read(path / "movies.dat", "::", ["item_id", "title", "genres"])
    source = raw.attrs["source"]
    years = raw["title"].str.extract(YEAR)[0]
    items = pd.DataFrame({
        "item_id": parse_ints(raw["item_id"], source=source, column="item_id"),
        "title": raw["title"].astype("string"),
        "categories": [g.split("|") if g else [] for g in raw["genres"]],
        "created_at": pd.to_datetime(years, format="%Y", errors="coerce", utc=True),
    })
    items = drop_unparsed(items, ["item_id"])
    items.attrs["source"] = source
    raw = _read(path / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip_code"])
    source = raw.attrs["source"]
    users = pd.DataFrame({
        "user_id": parse_ints(raw["user_id"], source=source, column="user_id"),
        "age": parse_ints(raw["age"], source=source, column="age"),
        "gender": raw["gender"].astype("string"),
        "occupation": raw["occupation"].astype("string"),
        "zip_code": raw["zip_code"].astype("string"),
    })
    users = drop_unparsed(users, ["user_id", "age"])
    users.attrs["source"] = source
    return _finish("movielens-1m", interactions, items, users)
