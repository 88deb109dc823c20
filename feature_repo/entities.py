"""Feast entities: the user and the item, joined on `user_id` and `item_id`."""

from pathlib import Path

from feast import Entity, ValueType

# Feature tables live beside the definitions; absolute so retrieval works from any directory.
DATA = Path(__file__).resolve().parent / "data"
# The Field tag holding, as JSON, a feature's value when no feature row precedes the lookup time
# (Feast returns null there); fields without it stay null.
WHEN_ABSENT = "when_absent"

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="A shopper or viewer, keyed by the contract's user_id.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="A catalogue item, keyed by the contract's item_id.")
