"""Feast entities: the user and the item, joined on `user_id` and `item_id`."""

from datetime import UTC, datetime
from pathlib import Path

from feast import Entity, FileSource, ValueType

# Feature tables live beside the definitions; absolute so retrieval works from any directory.
DATA = Path(__file__).resolve().parent / "data"
if not __package__ and not any(DATA.glob("*.parquet")):  # `feast apply` here, before any tables
    raise SystemExit(f"{DATA}: no feature tables yet. Write a small synthetic shop's with "
                     "`python -m feature_repo.tables` (or `... tables SPEC`), or build a copy "
                     "of this repository with its data: `twotower features --data SPEC`.")
# The Field tag holding, as JSON, a feature's value when no feature row precedes the lookup time
# (Feast returns null there); fields without it stay null.
WHEN_ABSENT = "when_absent"
SOURCE_STAMP = datetime(2025, 1, 1, tzinfo=UTC)  # the registry time of every source (file_source)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="A shopper or viewer, keyed by the contract's user_id.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="A catalogue item, keyed by the contract's item_id.")


def file_source(table: str, description: str, *, daily: bool = False) -> FileSource:
    """The FileSource of one table under DATA (`daily`: its folder of day files), stamped with a
    fixed registry time.

    Feast stamps a source with the time its object is built, and keeps that stamp inside each
    feature view's stored definition; once the view has been materialized (so the registry's copy
    differs from the new one), every `feast apply` would report the view "Updated" for the stamp
    alone. A fixed stamp makes a second apply say "No changes".
    """
    path = DATA / f"{table}.parquet" / "*.parquet" if daily else DATA / f"{table}.parquet"
    source = FileSource(name=f"{table}_source", path=str(path),
                        timestamp_field="event_timestamp", description=description)
    source.created_timestamp = source.last_updated_timestamp = SOURCE_STAMP
    return source
