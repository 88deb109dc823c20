"""The service's reads and writes of the Feast online store (SQLite or Redis), per user and per item.

`FeatureStore.get_online_features` spends milliseconds of Python per call (registry lookups,
response assembly). A request reads two views of one user, so this module calls the provider's
`online_read` / `online_write_batch` with the feature views resolved once, and converts Feast's
value protos itself. The data is the online store's, whichever store the repository configures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.parquet as pq
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.tables import HISTORY_LENGTH

VIEWS = ("user_profile", "user_history", "item_content", "item_popularity", "item_stock")
READ_CHUNK = 10_000  # keys per read: below SQLite's bound on query parameters


@dataclass(frozen=True)
class UserFeatures:
    """A user's profile and recent history (oldest first); `known` is False without any row."""

    known: bool
    age: int | None = None
    profile_tokens: tuple[str, ...] = ()
    recent_item_ids: tuple[int, ...] = ()
    recent_timestamps: tuple[int, ...] = ()
    event_count: int = 0


@dataclass(frozen=True)
class ItemFeatures:
    """An item's content, trailing popularity (events in the last 1, 7, 30 days) and stock."""

    title: str
    categories: tuple[str, ...]
    price: float | None
    created_at_s: int
    popularity: tuple[int, int, int] = (0, 0, 0)
    stock: int = 0


def _value(proto: ValueProto) -> object:
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(proto, kind)
    return tuple(value.val) if kind.endswith("_list_val") else value


def _key(name: str, entity_id: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=[name], entity_values=[ValueProto(int64_val=int(entity_id))])


class OnlineFeatures:
    """Typed access to the four views the service reads; one lock serialises read-modify-writes."""

    def __init__(self, store) -> None:  # store: feast.FeatureStore
        self._provider = store._get_provider()
        self._config = store.config
        self._views = {name: store.get_feature_view(name) for name in VIEWS}
        self._write_lock = threading.Lock()

    def _read(self, view: str, key: str, ids: list[int]) -> list[dict[str, object] | None]:
        rows: list[dict[str, object] | None] = []
        for start in range(0, len(ids), READ_CHUNK):
            keys = [_key(key, i) for i in ids[start:start + READ_CHUNK]]
            for _, values in self._provider.online_read(self._config, self._views[view], keys):
                rows.append(None if values is None else {n: _value(v) for n, v in values.items()})
        return rows

    def _write(self, view: str, key: str, entity_id: int, values: dict[str, ValueProto],
               at: datetime) -> None:
        self._provider.online_write_batch(self._config, self._views[view],
                                          [(_key(key, entity_id), values, at, at)], None)

    def user(self, user_id: int) -> UserFeatures:
        (profile,) = self._read("user_profile", "user_id", [user_id])
        (history,) = self._read("user_history", "user_id", [user_id])
        if profile is None and history is None:
            return UserFeatures(known=False)
        profile, history = profile or {}, history or {}
        return UserFeatures(known=True, age=profile.get("age"),  # type: ignore[arg-type]
                            profile_tokens=profile.get("profile_tokens") or (),  # type: ignore[arg-type]
                            recent_item_ids=history.get("recent_item_ids") or (),  # type: ignore[arg-type]
                            recent_timestamps=history.get("recent_timestamps") or (),  # type: ignore[arg-type]
                            event_count=history.get("event_count") or 0)  # type: ignore[arg-type]

    def items(self, ids: Iterable[int]) -> dict[int, ItemFeatures]:
        """Content, popularity and stock of the ids the online store knows (unknown ids are left out)."""
        ids = [int(i) for i in ids]
        contents = self._read("item_content", "item_id", ids)
        counts = self._read("item_popularity", "item_id", ids)
        stocks = self._read("item_stock", "item_id", ids)
        found = {}
        for item_id, content, count, stock in zip(ids, contents, counts, stocks, strict=True):
            if content is None:
                continue
            count, stock = count or {}, stock or {}
            found[item_id] = ItemFeatures(
                title=content.get("title") or "", categories=content.get("categories") or (),  # type: ignore[arg-type]
                price=content.get("price"), created_at_s=content.get("created_at_s") or 0,  # type: ignore[arg-type]
                popularity=(count.get("count_1d") or 0, count.get("count_7d") or 0,  # type: ignore[arg-type]
                            count.get("count_30d") or 0),
                stock=stock.get("quantity") or 0)  # type: ignore[arg-type]
        return found

    def catalogue_ids(self) -> list[int]:
        """Every item id of the item_content view's batch source (an online store cannot list keys).

        Empty when the source is not a parquet file; items then load on first use.
        """
        path = getattr(self._views["item_content"].batch_source, "path", None)
        if not path or not str(path).endswith(".parquet"):
            return []
        return pq.read_table(path, columns=["item_id"])["item_id"].to_pylist()

    def append_interaction(self, user_id: int, item_id: int, ts: datetime) -> int:
        """Add an event to the user's online history (last HISTORY_LENGTH kept); returns its length."""
        seconds = int(ts.timestamp())
        with self._write_lock:
            user = self.user(user_id)
            events = sorted([*zip(user.recent_timestamps, user.recent_item_ids, strict=True),
                             (seconds, int(item_id))], key=lambda e: e[0])[-HISTORY_LENGTH:]
            self._write("user_history", "user_id", user_id, {
                "recent_item_ids": ValueProto(int64_list_val=Int64List(val=[i for _, i in events])),
                "recent_timestamps": ValueProto(int64_list_val=Int64List(val=[t for t, _ in events])),
                "event_count": ValueProto(int64_val=user.event_count + 1),
            }, datetime.now(UTC))
        return len(events)

    def write_item(self, item_id: int, item: ItemFeatures) -> None:
        """Write (or replace) an item's content row."""
        values = {
            "title": ValueProto(string_val=item.title),
            "categories": ValueProto(string_list_val=StringList(val=list(item.categories))),
            "created_at_s": ValueProto(int64_val=item.created_at_s),
        }
        if item.price is not None:
            values["price"] = ValueProto(double_val=item.price)
        self._write("item_content", "item_id", item_id, values, datetime.now(UTC))
