"""A loader for Amazon Reviews (https://amazon-reviews-2023.github.io, and the 2018 release by
McAuley et al.), read by path, gzip or plain.

Reviews, in one of:
- 2018 JSON lines: `reviewerID`, `asin`, `overall`, `unixReviewTime` (Unix seconds);
- 2018 ratings-only CSV without a header: `item,user,rating,timestamp` (Unix seconds);
- 2023 JSON lines: `user_id`, `parent_asin`, `rating`, `timestamp` (Unix milliseconds); items are
  parent ASINs, so the variants of a product are one item.
The catalogue, optional, is the `meta_*` JSON lines file beside them (`asin` or `parent_asin`,
`title`, `category` (2018) or `categories` (2023), `price`, `brand` or `store`). PATH is the reviews
file or a folder holding one reviews file and at most one `meta_*` file.

Users and items get int64 ids in sorted order of their Amazon ids (kept as the items' `asin`
column). Exact duplicate reviews (same user, item and time) are dropped; a user reviewing an item
again later is a second interaction. `kcore=k` then keeps only users and items with at least k
interactions each, repeatedly until both hold. Titles lose HTML tags and entities; prices are read
from text such as "$1,234.56" (a range "$5 - $9" gives its low end); items without metadata get
their ASIN as title. Release times are each item's first review; stock is simulated.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.datasets.contract import (
    STOCK,
    TIMESTAMP,
    DataError,
    Dataset,
    has_problems,
    parse_timestamps,
    report,
)
from feature_repo.datasets.stock import simulate_stock

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".jsonl", ".csv")
FORMATS = {  # review fields -> (user, item, rating, timestamp) and the timestamp unit
    "2018": (("reviewerID", "asin", "overall", "unixReviewTime"), "s"),
    "2023": (("user_id", "parent_asin", "rating", "timestamp"), "ms"),
    "csv": (("user", "item", "rating", "timestamp"), "s"),
}
TAG = re.compile(r"<[^>]*>")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(
        path, encoding="utf-8")


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based row, record) of a JSON lines file; bad lines are skipped, then reported (the
    first and how many)."""
    bad: list[tuple[int, str]] = []
    with _open(path) as lines:
        for row, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((row, exc.msg))
                continue
            yield row, record
    if bad:
        report(DataError(str(path), f"not a JSON record: {bad[0][1]}", row=bad[0][0],
                         rows=len(bad)))


def _kind(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return next((s for s in SUFFIXES if name.endswith(s)), "")


def find_files(path: Path) -> tuple[Path, Path | None]:
    """The reviews file and the metadata file (None when absent) a PATH names."""
    if path.is_file():
        meta = [path.with_name(f"meta_{path.name.split('.')[0]}{s}{z}")
                for s in (".json", ".jsonl") for z in ("", ".gz")]
        return path, next((m for m in meta if m.is_file()), None)
    if not path.is_dir():
        raise DataError(str(path), "file or folder not found")
    files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
    reviews = [p for p in files if not p.name.startswith("meta_")]
    metas = [p for p in files if p.name.startswith("meta_")]
    if len(reviews) != 1 or len(metas) > 1:
        raise DataError(str(path), f"expected one reviews file and at most one meta_* file "
                        f"(.json, .jsonl or .csv, optionally .gz); found {[p.name for p in files]}")
    return reviews[0], (metas[0] if metas else None)


def read_reviews(path: Path) -> tuple[pd.DataFrame, str]:
    """Raw (user, item, rating, timestamp) rows, indexed by data row - 1, and the format."""
    if _kind(path) == ".csv":
        frame = pd.read_csv(path, names=["item", "user", "rating", "timestamp"], header=None,
                            dtype={"item": str, "user": str})
        return frame[["user", "item", "rating", "timestamp"]], "csv"
    rows, values, version = [], [], None
    missing: dict[str, list[int]] = {}  # field -> rows without it
    for row, record in _records(path):
        if version is None:
            version = next((v for v, (fields, _) in FORMATS.items()
                            if v != "csv" and all(f in record for f in fields)), None)
            if version is None:
                raise DataError(str(path), "not Amazon Reviews: expected the fields of 2018 "
                                "(reviewerID, asin, overall, unixReviewTime) or 2023 (user_id, "
                                f"parent_asin, rating, timestamp); found {sorted(record)}", row=row)
        fields = FORMATS[version][0]
        absent = [f for f in fields if record.get(f) is None]
        if absent:
            missing.setdefault(absent[0], []).append(row)
            continue
        rows.append(row - 1)
        values.append([record[f] for f in fields])
    for field, where in missing.items():
        report(DataError(str(path), "missing", column=field, row=where[0], rows=len(where)))
    if version is None:
        raise DataError(str(path), "no rows")
    frame = pd.DataFrame(values, columns=["user", "item", "rating", "timestamp"], index=rows)
    return frame, version


def read_meta(path: Path) -> pd.DataFrame:
    """One row per item id: title, categories, price, brand (first record of an id wins)."""
    records = {}
    for _, record in _records(path):
        item = record.get("parent_asin") or record.get("asin")
        if item and item not in records:
            categories = record.get("categories") or record.get("category") or []
            categories = [categories] if isinstance(categories, str) else categories  # one, not its letters
            records[item] = (clean_title(record.get("title")),
                             list(dict.fromkeys(html.unescape(str(c)).strip() for c in categories
                                                if str(c).strip())),
                             parse_price(record.get("price")),
                             record.get("brand") or record.get("store") or "")
    return pd.DataFrame.from_dict(records, orient="index",
                                  columns=["title", "categories", "price", "brand"])


def clean_title(title: object) -> str:
    """Text without HTML tags or entities, whitespace collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", str(title or ""))).split())


def parse_price(price: object) -> float:
    """A price from a number or text like "$1,234.56" (a range gives its low end); else (also for
    a negative or infinite number) NaN."""
    if isinstance(price, bool):
        return math.nan
    if isinstance(price, int | float):
        return float(price) if 0 <= price < math.inf else math.nan
    found = NUMBER.search(str(price or ""))
    negative = found is not None and re.search(r"-\W*$", str(price)[:found.start()]) is not None
    return float(found.group().replace(",", "")) if found and not negative else math.nan


def k_core(events: pd.DataFrame, k: int) -> pd.DataFrame:
    """The events whose user and item both have at least k of them, repeated until stable."""
    while k > 1:
        users = events["user"].map(events["user"].value_counts())
        items = events["item"].map(events["item"].value_counts())
        keep = (users >= k) & (items >= k)
        if keep.all():
            break
        events = events[keep]
    return events


def load(path: str | Path, *, kcore: int = 0) -> Dataset:
    """Load Amazon Reviews from a reviews file or folder; `kcore` filters as described above."""
    k = kcore
    reviews, meta = find_files(Path(path))
    raw, version = read_reviews(reviews)
    source = str(reviews)
    timestamps = parse_timestamps(raw["timestamp"], source=source, column="timestamp",
                                  unit=FORMATS[version][1])
    ratings = pd.to_numeric(raw["rating"], errors="coerce")
    bad = ratings.isna()
    if bad.any():
        report(DataError(source, f"not a number: {raw['rating'][bad].iloc[0]!r}", column="rating",
                         row=int(raw.index[bad][0]) + 1, rows=int(bad.sum())))
    events = raw.assign(timestamp=timestamps, rating=ratings).dropna(subset=["timestamp", "rating"])
    duplicated = events.duplicated(["user", "item", "timestamp"])
    if duplicated.any():
        log.info("%s: %d exact duplicate reviews dropped", source, int(duplicated.sum()))
    events = k_core(events[~duplicated], k)
    if events.empty:
        raise DataError(source, f"no reviews left{f' after the {k}-core filter' if k > 1 else ''}")
    user_codes, user_ids = pd.factorize(events["user"], sort=True)
    item_codes, asins = pd.factorize(events["item"], sort=True)
    interactions = pd.DataFrame({
        "user_id": user_codes.astype(np.int64), "item_id": item_codes.astype(np.int64),
        "event_timestamp": events["timestamp"].astype(TIMESTAMP).to_numpy(),
        "event_type": pd.Series("rating", index=range(len(events)), dtype="category"),
        "weight": events["rating"].to_numpy(dtype=np.float64)})
    interactions.attrs["source"] = source
    catalogue = read_meta(meta) if meta is not None else pd.DataFrame(
        columns=["title", "categories", "price", "brand"])
    found = catalogue.reindex(asins)
    titles = found["title"].where(found["title"].fillna("") != "", pd.Series(asins, index=asins))
    items = pd.DataFrame({
        "item_id": np.arange(len(asins), dtype=np.int64), "asin": pd.array(asins, dtype="string"),
        "title": pd.array(titles.to_numpy(), dtype="string"),
        "categories": [c if isinstance(c, list) else [] for c in found["categories"]],
        "price": found["price"].to_numpy(dtype=np.float64),
        "brand": pd.array(found["brand"].fillna("").to_numpy(), dtype="string"),
        "created_at": interactions.groupby("item_id")["event_timestamp"].min().to_numpy()})
    items.attrs["source"] = str(meta or reviews)
    users = pd.DataFrame({"user_id": np.arange(len(user_ids), dtype=np.int64)})
    users.attrs["source"] = source
    empty = pd.DataFrame({c: pd.Series(dtype=d) for c, d in STOCK.items()})
    dataset = Dataset(f"amazon-reviews {reviews.name.split('.')[0]}", interactions, items, users,
                      stock=empty).validate()
    if has_problems():  # collecting: stop before the simulation
        return dataset
    return replace(dataset, stock=simulate_stock(interactions, items)).validate()
