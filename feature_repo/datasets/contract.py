"""The data contract: the four tables the platform ingests, their types and the rules they obey."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = 86_400  # seconds: the one day length every table, tower and check counts in
TIMESTAMP = "datetime64[us, UTC]"  # microseconds: Feast's DuckDB store cannot read nanosecond tz-aware

# Required columns and their dtypes; extra columns are kept as they are.
INTERACTIONS = {"user_id": "int64", "item_id": "int64", "event_timestamp": TIMESTAMP}
ITEMS = {"item_id": "int64", "title": "string", "categories": "object", "price": "float64",
         "created_at": TIMESTAMP}
USERS = {"user_id": "int64"}
STOCK = {"item_id": "int64", "event_timestamp": TIMESTAMP, "quantity": "int64"}
OPTIONAL_INTERACTIONS = {"event_type": "category", "weight": "float64"}  # a few kinds: codes, not strings
# Numbers in a timestamp column count this unit since 1970-01-01 UTC (settable per column).
UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_NANOS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Timestamps outside these years are refused: almost always a number read in the wrong unit.
EARLIEST, LATEST = pd.Timestamp("1990-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC")


class DataError(ValueError):
    """Input that breaks the contract; the message names the file, column and row."""

    def __init__(self, source: str, message: str, *, column: str | None = None,
                 row: int | None = None, rows: int = 1) -> None:
        where = [source] + ([f"column {column!r}"] if column else []) + (
            [f"row {row}"] if row is not None else [])
        more = f" (and {rows - 1:,} more rows)" if rows > 1 else ""
        super().__init__(f"{', '.join(where)}: {message}{more}")
        self.source, self.column, self.row, self.problem = source, column, row, message + more


_problems: ContextVar[list[DataError] | None] = ContextVar("data_problems", default=None)


@contextmanager
def collecting() -> Iterator[list[DataError]]:
    """Within the block, `report` records problems instead of raising them (`twotower data check`).

    Loaders then go on past a bad value (its row is dropped) or a bad table (skipped) and raise
    only where nothing more can be checked.
    """
    token = _problems.set([])
    try:
        yield _problems.get()  # type: ignore[misc]
    finally:
        _problems.reset(token)


def report(error: DataError) -> None:
    """Raise `error`, or record it when inside `collecting()`."""
    problems = _problems.get()
    if problems is None:
        raise error
    if error not in problems:
        problems.append(error)


def has_problems() -> bool:
    """Whether `collecting()` has recorded a problem so far."""
    return bool(_problems.get())


def fingerprint_of(identity: str) -> str:
    """A short, stable hash of a dataset's identity (`Dataset.fingerprint`)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """The contract's tables. Row numbers in errors are 1-based data rows of the named file.

    `identity` names where the data came from (a loader's spec, resolved); a home's fingerprint
    is derived from it, so the same source grown by new events keeps its fingerprint.
    `source_stamp` names which version of the source it read (`feature_repo.datasets.stamp`).
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    stock: pd.DataFrame
    identity: str = ""
    source_stamp: str = ""

    @property
    def fingerprint(self) -> str:
        """A short, stable hash of the dataset's identity (its name when it has none)."""
        return fingerprint_of(self.identity or self.name)

    @property
    def last_event(self) -> pd.Timestamp:
        """The newest instant of either log: the stock log may run on after the last interaction."""
        return pd.Series([self.interactions["event_timestamp"].max(),
                          self.stock["event_timestamp"].max()]).max()

    def validate(self) -> Dataset:
        """Check every rule of docs/data.md and return self, or raise (`report`) DataError."""
        complete = True
        for table, schema in (("interactions", INTERACTIONS), ("items", ITEMS),
                              ("users", USERS), ("stock", STOCK)):
            frame = getattr(self, table)
            source = frame.attrs.get("source", f"{self.name}/{table}")
            if frame.empty and table != "stock":
                report(DataError(source, "no rows"))
            missing = [c for c in schema if c not in frame.columns]
            for column in missing:
                report(DataError(source, "missing", column=column))
            complete = complete and not missing
            check_non_negative(frame, [c for c in ("user_id", "item_id", "quantity") if c in schema])
        if not complete:
            return self
        for frame, column in ((self.items, "item_id"), (self.users, "user_id")):
            _check(frame, frame[column].duplicated(), column, f"duplicate {column} {{value}}")
        known = set(self.items["item_id"].tolist())
        for frame in (self.interactions, self.stock):
            _check(frame, ~frame["item_id"].isin(known), "item_id", "unknown item_id {value}")
        users = set(self.users["user_id"].tolist())
        _check(self.interactions, ~self.interactions["user_id"].isin(users), "user_id",
               "unknown user_id {value}")
        return self


def check_non_negative(frame: pd.DataFrame, columns: list[str]) -> None:
    """Report the first row whose id (or quantity) in `columns` is negative, naming its column."""
    for column in columns:
        if column in frame.columns:
            kind = "ids" if column.endswith("_id") else "quantities"
            bad = (frame[column] < 0).fillna(False).astype(bool)  # a blank is not negative
            _check(frame, bad, column, f"{kind} must be non-negative integers")


def _first_row(frame: pd.DataFrame, mask: pd.Series) -> int:
    """The 1-based data row of the first marked row: its index label when integer (loaders number
    rows from 0 and keep the labels when they drop bad rows), else its position."""
    position = int(np.flatnonzero(mask.to_numpy())[0])
    label = frame.index[position]
    return (int(label) if pd.api.types.is_integer_dtype(frame.index) else position) + 1


def _check(frame: pd.DataFrame, bad: pd.Series, column: str, problem: str,
           values: pd.Series | None = None) -> None:
    """Report the first bad row and how many there are; `{value}` in `problem` is the first bad
    value (of `values`, default the frame's column)."""
    if bad.any():
        first = (frame[column] if values is None else values)[bad].iloc[0]
        first = first.item() if isinstance(first, np.generic) else first  # 7, not np.int64(7)
        report(DataError(frame.attrs.get("source", column), problem.format(value=first),
                         column=column, row=_first_row(frame, bad), rows=int(bad.sum())))


def _frame(values: pd.Series, source: str) -> pd.DataFrame:
    frame = values.to_frame()
    frame.attrs["source"] = source
    return frame


def parse_timestamps(values: pd.Series, *, source: str, column: str, unit: str = "s",
                     any_year: bool = False) -> pd.Series:
    """Parse to tz-aware UTC microseconds; naive values are taken as UTC.

    Numbers (and numeric strings) count `unit`s since 1970-01-01 UTC; other strings are dates.
    A value before 1990 or from 2100 on is refused: numbers always (a wrong unit lands there),
    dates unless `any_year` allows early ones (a film's release). Bad rows are reported, the first
    and their count; under `collecting()` they come back as NaT.
    """
    if unit not in UNITS:
        raise DataError(source, f"unknown timestamp unit {unit!r}; expected one of "
                        f"{', '.join(UNITS)}", column=column)
    frame = _frame(values, source)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    numeric = pd.Series(False, index=values.index)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
        _check(frame, parsed.isna(), column, "missing timestamp")
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        lo, hi = (bound.value / _NANOS[unit] for bound in (EARLIEST, LATEST))
        outside = numbers.notna() & ((numbers < lo) | (numbers >= hi))
        _check(frame, outside, column, f"{{value!r}} read as Unix {UNITS[unit]} is outside "
               f"{EARLIEST.year}-{LATEST.year}; set the column's unit in mapping.json "
               f"({', '.join(UNITS)})", values)
        numeric = numbers.notna() & ~outside
        if numeric.any():
            parsed[numeric] = pd.to_datetime(numbers[numeric], unit=unit, utc=True)
        blank = values.isna() | values.astype(str).str.strip().eq("")
        _check(frame, blank, column, "missing timestamp")
        text = numbers.isna() & ~blank
        if text.any():
            parsed[text] = pd.to_datetime(values[text].astype(str), errors="coerce", utc=True,
                                          format="mixed")
        _check(frame, text & parsed.isna(), column, "cannot parse timestamp {value!r}", values)
    dates = parsed.notna() & ~numeric
    outside = dates & ((parsed >= LATEST) | (not any_year and (parsed < EARLIEST)))
    _check(frame, outside, column, f"{{value!r}} is outside {'' if any_year else EARLIEST.year}-"
           f"{LATEST.year}", values)
    return parsed.mask(outside).astype(TIMESTAMP)


def parse_ints(values: pd.Series, *, source: str, column: str) -> pd.Series:
    """Parse integer ids or quantities, reporting rows that are not integers (<NA> under
    `collecting()`, so the result is Int64 then)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round())
    _check(_frame(values, source), bad, column, "not an integer: {value!r}", values)
    return numeric.mask(bad).astype("Int64") if bad.any() else numeric.astype("int64")


def parse_floats(values: pd.Series, *, source: str, column: str, negative: bool = False
                 ) -> pd.Series:
    """Parse an optional number (a price, an event weight) to float64: a blank cell stays missing,
    anything else must be a finite number, and not below 0 unless `negative`. Bad rows are
    reported, the first and their count; under `collecting()` they come back missing (NaN)."""
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    given = values.notna()
    if not pd.api.types.is_numeric_dtype(values):  # text: a cell of spaces is blank too
        given &= values.astype(str).str.strip().ne("")
    frame = _frame(values, source)
    _check(frame, given & numeric.isna(), column, "not a number: {value!r}", values)
    ok = np.isfinite(numeric) & (negative | (numeric >= 0))
    bad = numeric.notna() & ~ok
    _check(frame, bad, column, f"not a finite number{'' if negative else ' >= 0'}: {{value!r}}",
           values)
    return numeric.mask(bad)


def drop_unparsed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows whose `columns` all parsed (bad ones were reported under `collecting()`), with
    integer columns as int64. Index labels are kept, so later problems still name the file's rows."""
    unparsed = frame[columns].isna().any(axis=1)
    kept = frame[~unparsed] if unparsed.any() else frame  # no copy when every row parsed
    return kept.astype({c: "int64" for c in columns if str(kept[c].dtype) == "Int64"})
