"""The data contract: the four tables the platform ingests, their types and the rules they obey."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

DAY = 86_400  # seconds: the one day length every table, tower and check counts in
TIMESTAMP = "datetime64[us, UTC]"  # microseconds: Feast's DuckDB store cannot read nanosecond tz-aware

# Required columns and their dtypes; extra columns are kept as they are.
INTERACTIONS = {"user_id": "int64", "item_id": "int64", "event_timestamp": TIMESTAMP}
ITEMS = {"item_id": "int64", "title": "string", "categories": "object", "price": "float64",
         "created_at": TIMESTAMP}
USERS = {"user_id": "int64"}
STOCK = {"item_id": "int64", "event_timestamp": TIMESTAMP, "quantity": "int64"}
OPTIONAL_INTERACTIONS = {"event_type": "string", "weight": "float64"}


class DataError(ValueError):
    """Input that breaks the contract; the message names the file, column and row."""

    def __init__(self, source: str, message: str, *, column: str | None = None,
                 row: int | None = None) -> None:
        where = [source] + ([f"column {column!r}"] if column else []) + (
            [f"row {row}"] if row is not None else [])
        super().__init__(f"{', '.join(where)}: {message}")
        self.source, self.column, self.row = source, column, row


@dataclass(frozen=True)
class Dataset:
    """The contract's tables. Row numbers in errors are 1-based data rows of the named file."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    stock: pd.DataFrame

    def validate(self) -> Dataset:
        """Check every rule of docs/data.md and return self, or raise DataError."""
        for table, schema in (("interactions", INTERACTIONS), ("items", ITEMS),
                              ("users", USERS), ("stock", STOCK)):
            frame = getattr(self, table)
            source = frame.attrs.get("source", f"{self.name}/{table}")
            if frame.empty and table != "stock":
                raise DataError(source, "no rows")
            missing = [c for c in schema if c not in frame.columns]
            if missing:
                raise DataError(source, "missing", column=missing[0])
            for column in ("user_id", "item_id"):
                if column in schema and (frame[column] < 0).any():
                    raise DataError(source, "ids must be non-negative integers", column=column,
                                    row=_first_row(frame, frame[column] < 0))
        _check_unique(self.items, "item_id")
        _check_unique(self.users, "user_id")
        known = set(self.items["item_id"].tolist())
        for table in ("interactions", "stock"):
            frame = getattr(self, table)
            unknown = ~frame["item_id"].isin(known)
            if unknown.any():
                row = _first_row(frame, unknown)
                raise DataError(frame.attrs.get("source", table),
                                f"unknown item_id {frame['item_id'][unknown].iloc[0]}",
                                column="item_id", row=row)
        unknown_users = ~self.interactions["user_id"].isin(set(self.users["user_id"].tolist()))
        if unknown_users.any():
            raise DataError(self.interactions.attrs.get("source", "interactions"),
                            f"unknown user_id {self.interactions['user_id'][unknown_users].iloc[0]}",
                            column="user_id", row=_first_row(self.interactions, unknown_users))
        return self


def _first_row(frame: pd.DataFrame, mask: pd.Series) -> int:
    return int(mask.to_numpy().nonzero()[0][0]) + 1


def _check_unique(frame: pd.DataFrame, column: str) -> None:
    duplicated = frame[column].duplicated()
    if duplicated.any():
        raise DataError(frame.attrs.get("source", column), f"duplicate {column} "
                        f"{frame[column][duplicated].iloc[0]}", column=column,
                        row=_first_row(frame, duplicated))


def parse_timestamps(values: pd.Series, *, source: str, column: str,
                     unit: str | None = None) -> pd.Series:
    """Parse to tz-aware UTC microseconds; naive values are taken as UTC. Names the first bad row."""
    if unit is not None:
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna()
        parsed = pd.to_datetime(numeric, unit=unit, utc=True)
    else:
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        bad = parsed.isna()
    if bad.any():
        row = _first_row(values.to_frame(), bad)
        raise DataError(source, f"cannot parse timestamp {values[bad].iloc[0]!r}", column=column,
                        row=row)
    return parsed.astype(TIMESTAMP)


def parse_ints(values: pd.Series, *, source: str, column: str) -> pd.Series:
    """Parse integer ids or quantities; names the first row that is not an integer."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round())
    if bad.any():
        raise DataError(source, f"not an integer: {values[bad].iloc[0]!r}", column=column,
                        row=_first_row(values.to_frame(), bad))
    return numeric.astype("int64")
