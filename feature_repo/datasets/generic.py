"""A loader for any shop's own CSV or Parquet files, renamed to the contract by a column mapping.

The folder holds `interactions`, `items`, optionally `users` and `stock` (each `.csv` or `.parquet`)
and optionally `mapping.json`: `{"items": {"item_id": "sku", ...}, ...}` maps contract columns to
the file's own. Without a users table, users are the ids seen in interactions; without a stock log,
stock is simulated as for MovieLens.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from feature_repo.datasets.contract import (
    INTERACTIONS,
    ITEMS,
    STOCK,
    USERS,
    DataError,
    Dataset,
    parse_ints,
    parse_timestamps,
)
from feature_repo.datasets.stock import simulate_stock

TABLES = {"interactions": INTERACTIONS, "items": ITEMS, "users": USERS, "stock": STOCK}


def _find(folder: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (folder / f"{table}{suffix}").is_file():
            return folder / f"{table}{suffix}"
    return None


def _read_table(path: Path, table: str, mapping: dict[str, str]) -> pd.DataFrame:
    source = str(path)
    try:
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(source, "empty file") from None
    if raw.empty:
        raise DataError(source, "no rows")
    raw = raw.rename(columns={theirs: ours for ours, theirs in mapping.items()})
    for column in TABLES[table]:
        if column not in raw.columns:
            theirs = mapping.get(column, column)
            raise DataError(source, "missing" + (f" (mapped from {theirs!r})" if theirs != column
                                                  else ""), column=theirs)
    for column, dtype in TABLES[table].items():
        if column.endswith("_id") or column == "quantity":
            raw[column] = parse_ints(raw[column], source=source, column=column)
        elif dtype.startswith("datetime"):
            raw[column] = parse_timestamps(raw[column], source=source, column=column)
    if table == "items":
        raw["categories"] = [c if isinstance(c, list) else [] if pd.isna(c) else str(c).split("|")
                             for c in raw["categories"]]
        raw["title"] = raw["title"].astype("string")
        raw["price"] = pd.to_numeric(raw["price"], errors="coerce")
    raw.attrs["source"] = source
    return raw


def load(folder: str | Path) -> Dataset:
    """Load and validate a folder of contract tables."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(str(folder), "folder not found")
    mapping_file = folder / "mapping.json"
    mapping = json.loads(mapping_file.read_text()) if mapping_file.is_file() else {}
    unknown = set(mapping) - set(TABLES)
    if unknown:
        raise DataError(str(mapping_file), f"unknown table {sorted(unknown)[0]!r}")
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        path = _find(folder, table)
        if path is None and table in ("interactions", "items"):
            raise DataError(str(folder / f"{table}.csv"), "file not found (.csv or .parquet)")
        if path is not None:
            tables[table] = _read_table(path, table, mapping.get(table, {}))
    if "users" not in tables:
        tables["users"] = pd.DataFrame({"user_id": tables["interactions"]["user_id"].unique()})
    stock = tables.pop("stock", None)
    dataset = Dataset(folder.name, **tables, stock=pd.DataFrame(columns=list(STOCK))).validate()
    if stock is None:
        stock = simulate_stock(dataset.interactions, dataset.items)
    return replace(dataset, stock=stock).validate()
