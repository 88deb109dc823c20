"""Columns added after a table's first release: `create_all` creates tables, never columns."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError


def add_column(engine: Engine, table: str, column: str, sql_type: str) -> None:
    """Add `column` to `table` in a database created before it (a no-op once there)."""
    def present() -> bool:
        return any(c["name"] == column for c in inspect(engine).get_columns(table))
    if present():
        return
    try:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
    except DBAPIError:
        if not present():  # else another process opening the database added it first
            raise
