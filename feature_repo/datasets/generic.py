"""A loader for any shop's own CSV or Parquet files, renamed to the contract by a column mapping.

The folder holds `interactions`, `items`, optionally `users` and `stock` (each `.csv` or `.parquet`)
and optionally `mapping.json`: `{"items": {"item_id": "sku", ...}, ...}` maps contract columns to
the file's own; a timestamp column may be `{"column": "ts", "unit": "ms"}` (numbers count Unix
seconds unless a unit says otherwise). Without a users table, users are the ids seen in
interactions; without a stock log, stock is simulated as for MovieLens. Items need an id and a
title: no categories means none, no price null, no `created_at` the item's first event.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.datasets.contract import (
    INTERACTIONS,
    ITEMS,
    OPTIONAL_INTERACTIONS,
    STOCK,
    TIMESTAMP,
    USERS,
    DataError,
    Dataset,
    drop_unparsed,
    has_problems,
    parse_floats,
    parse_ints,
    parse_timestamps,
    report,
)
from feature_repo.datasets.stock import simulate_stock

TABLES = {"interactions": INTERACTIONS, "items": ITEMS, "users": USERS, "stock": STOCK}
REQUIRED = ("interactions", "items")
OPTIONAL = {"items": ("categories", "price", "created_at")}  # [], null, the item's first event


def _find(folder: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (folder / f"{table}{suffix}").is_file():
            return folder / f"{table}{suffix}"
    return None


def _columns(source: str, table: str, mapping: object) -> tuple[dict[str, str], dict[str, str]]:
    """A table's mapping as (contract column -> file column, contract column -> timestamp unit)."""
    if not isinstance(mapping, dict):
        raise DataError(source, f"table {table!r}: expected an object of column names")
    names, units = {}, {}
    for ours, theirs in mapping.items():
        if isinstance(theirs, dict):
            if set(theirs) - {"column", "unit"}:
                raise DataError(source, f"{table}.{ours}: expected keys 'column' and 'unit', got "
                                f"{sorted(theirs)}")
            units[ours] = str(theirs.get("unit", "s"))
            theirs = theirs.get("column", ours)
        names[ours] = str(theirs)
    return names, units


def read_table(path: Path, table: str, names: dict[str, str] | None = None,
               units: dict[str, str] | None = None) -> pd.DataFrame:
    """One contract table's file (`table`: interactions, items, users or stock), its columns renamed
    by `names` (contract -> file) and parsed, every bad value a `DataError` naming the file, column
    and row. Timestamp numbers count `units` (default seconds)."""
    source, names, units = str(path), names or {}, units or {}
    try:
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(source, "empty file") from None
    if raw.empty:
        raise DataError(source, "no rows")
    renamed = {theirs: ours for ours, theirs in names.items()}
    raw.columns = [renamed.get(column, column) for column in raw.columns]  # no copy of the rows
    twice = raw.columns[raw.columns.duplicated()]
    if len(twice):
        mapped = names.get(twice[0])
        raise DataError(source, "two columns of this name" + (
            f" once {mapped!r} is mapped to it" if mapped else ""), column=twice[0])
    missing = [DataError(source, "missing" + (f" (mapped from {theirs!r})" if theirs != ours
                                              else ""), column=theirs)
               for ours, theirs in ((c, names.get(c, c)) for c in TABLES[table])
               if ours not in raw.columns and ours not in OPTIONAL.get(table, ())]
    for error in missing:
        report(error)
    if missing:
        raise missing[0]  # nothing more to check in this table
    parsed = []
    optional = OPTIONAL_INTERACTIONS if table == "interactions" else {}
    for column, dtype in {**TABLES[table], **optional}.items():
        if column not in raw.columns:
            continue
        if column.endswith("_id") or column == "quantity":
            raw[column] = parse_ints(raw[column], source=source, column=column)
        elif dtype.startswith("datetime"):
            raw[column] = parse_timestamps(raw[column], source=source, column=column,
                                           unit=units.get(column, "s"),
                                           any_year=column == "created_at")
        elif dtype == "float64":  # price, weight: a blank is missing, so the row stays
            raw[column] = parse_floats(raw[column], source=source, column=column,
                                       negative=column == "weight")  # a rating may be -1
            continue
        else:
            continue
        parsed.append(column)
    raw = drop_unparsed(raw, parsed)
    if "event_type" in raw.columns:
        raw["event_type"] = raw["event_type"].astype("category")
    if table == "items":
        raw["categories"] = [_categories(c) for c in raw.get("categories", [None] * len(raw))]
        raw["title"] = raw["title"].astype("string")
        if "price" not in raw.columns:
            raw["price"] = np.nan
    raw.attrs["source"] = source
    return raw


def _categories(value: object) -> list[str]:
    """A list (Parquet) as it is, `|`-separated text (CSV) split, nothing as []."""
    if isinstance(value, list | np.ndarray):
        return [str(c) for c in value]
    return [] if pd.isna(value) else str(value).split("|")


def load(folder: str | Path) -> Dataset:
    """Load and validate a folder of contract tables."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(str(folder), "folder not found")
    mapping_file = folder / "mapping.json"
    try:
        mapping = json.loads(mapping_file.read_text()) if mapping_file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise DataError(str(mapping_file), f"not JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise DataError(str(mapping_file), f"expected an object of tables, got {type(mapping).__name__}")
    unknown = set(mapping) - set(TABLES)
    if unknown:
        raise DataError(str(mapping_file), f"unknown table {sorted(unknown)[0]!r}")
    tables: dict[str, pd.DataFrame] = {}
    failed: dict[str, DataError] = {}
    for table in TABLES:
        path = _find(folder, table)
        try:
            if path is None:
                if table in REQUIRED:
                    raise DataError(str(folder / f"{table}.csv"), "file not found (.csv or .parquet)")
                continue
            names, units = _columns(str(mapping_file), table, mapping.get(table, {}))
            tables[table] = read_table(path, table, names, units)
        except DataError as error:
            report(error)  # under collecting(): go on with the other tables
            failed[table] = error
    for table in REQUIRED:
        if table in failed:
            raise failed[table]
    items, events = tables["items"], tables["interactions"]
    if "created_at" not in items.columns:  # released at its first event (or the first of all)
        first = events.groupby("item_id")["event_timestamp"].min()
        items["created_at"] = items["item_id"].map(first).fillna(
            events["event_timestamp"].min()).astype(TIMESTAMP)
    if "users" not in tables:
        tables["users"] = pd.DataFrame({"user_id": tables["interactions"]["user_id"].unique()})
    stock = tables.pop("stock", None)
    dataset = Dataset(folder.name, **tables, identity=f"generic:{folder.resolve()}",
                      stock=pd.DataFrame({c: pd.Series(dtype=d) for c, d in STOCK.items()}))
    if stock is None:
        dataset.validate()
        if has_problems():  # collecting: a simulation over bad rows would only add noise
            return dataset
        stock = simulate_stock(dataset.interactions, dataset.items)
    return replace(dataset, stock=stock).validate()
