"""The service's reads and writes of the Feast online store (SQLite or Redis), per user and per item.

View names and the values of absent features come from the Feast definitions; the rows come through
`services.feast_provider` (the provider, without `get_online_features`' per-call overhead).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from feast.protos.feast.types.Value_pb2 import Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.item_features import item_content_fv, item_popularity_fv, item_stock_fv
from feature_repo.store import when_absent
from feature_repo.tables import AFTER, HISTORY_LENGTH, history_length
from feature_repo.user_features import user_history_fv, user_profile_fv, user_seen_fv
from services.feast_provider import ProviderAccess, Row
from services.online_rows import OnlineRows

log = logging.getLogger(__name__)

PROFILE, HISTORY, SEEN = user_profile_fv.name, user_history_fv.name, user_seen_fv.name
CONTENT, POPULARITY, STOCK = item_content_fv.name, item_popularity_fv.name, item_stock_fv.name
POPULARITY_COUNTS = ("count_1d", "count_7d", "count_30d")  # ItemFeatures.popularity, in order


@dataclass(frozen=True)
class UserFeatures:
    """A user's profile, recent history (oldest first) and every item seen (ascending); `known` is
    False without any row."""

    known: bool
    age: int | None = None
    profile_tokens: tuple[str, ...] = ()
    recent_item_ids: tuple[int, ...] = ()
    recent_timestamps: tuple[int, ...] = ()
    event_count: int = 0
    seen_item_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ItemFeatures:
    """An item's content, trailing popularity (events in the last 1, 7, 30 days) and stock."""

    title: str
    categories: tuple[str, ...]
    price: float | None
    created_at_s: int
    popularity: tuple[int, int, int] = (0, 0, 0)
    stock: int = 0


class OnlineFeatures:
    """Typed access to the views the service reads and writes; each write is atomic per key
    (`OnlineRows`) and stamped as the offline tables stamp it (just after its event)."""

    def __init__(self, store) -> None:  # store: feast.FeatureStore
        self._store = store
        # The smallest step past a stored stamp that the store keeps: Feast's SQLite store keeps
        # whole seconds, Redis the microsecond
        self._past = timedelta(seconds=1) if store.config.online_store.type == "sqlite" else AFTER
        absent = {name: value.as_py() for name, value in when_absent().items()}
        self._absent = {name: tuple(v) if isinstance(v, list) else v for name, v in absent.items()}
        self._resolve_views()
        self.read_history_length()

    def _resolve_views(self) -> None:
        """The views read and written, resolved once. A repository applied before `user_seen`
        existed: the recent items stand in for the seen ones until it is applied again (as the
        pipeline's feature_repository asset does), checked again at each version load."""
        has_seen = SEEN in {view.name for view in self._store.list_feature_views()}
        views = (PROFILE, HISTORY, *((SEEN,) if has_seen else ()), CONTENT, POPULARITY, STOCK)
        rows = ProviderAccess(self._store, views)
        self._rows, self._rows_writer = rows, OnlineRows(self._store, rows.views)
        self._has_seen = has_seen  # last: a request that sees it finds the view resolved
        if not self._has_seen:
            log.warning("the online store has no %r view: recommendations leave out only the recent "
                        "items until the feature repository is applied and loaded", SEEN)

    def read_history_length(self) -> None:
        """Keep as many events per appended history as the offline history rows hold (read again
        whenever a version loads: the tables may have been written since), and look for the
        `user_seen` view again while it is missing."""
        content = self._content_file()
        self.history_length = history_length(content.parent) if content else HISTORY_LENGTH
        if not self._has_seen:
            self._resolve_views()

    def _read(self, view: str, key: str, ids: list[int]) -> list[Row | None]:
        """Rows with absent features filled as the definitions say (a missing row stays None)."""
        absent = self._absent
        return [None if row is None else {n: absent.get(n) if v is None else v for n, v in row.items()}
                for row in self._rows.read(view, key, ids)]

    def _filled(self, row: Row | None) -> Row:
        """A row, or the definitions' absent values when there is none."""
        return self._absent if row is None else row

    def user(self, user_id: int) -> UserFeatures:
        (profile,) = self._read(PROFILE, "user_id", [user_id])
        (history,) = self._read(HISTORY, "user_id", [user_id])
        # A history that holds every event holds every item seen: no third read.
        whole = history is None or history["event_count"] <= len(history["recent_item_ids"] or ())
        (seen,) = [None] if whole or not self._has_seen else self._read(SEEN, "user_id", [user_id])
        if profile is None and history is None:  # (no history: no seen row is read either)
            return UserFeatures(known=False)
        profile, history = profile or {}, self._filled(history)
        seen_ids = (tuple(sorted(set(history["recent_item_ids"])))  # type: ignore[arg-type]
                    if seen is None else seen["seen_item_ids"])  # stored ascending
        return UserFeatures(known=True, age=profile.get("age"),  # type: ignore[arg-type]
                            profile_tokens=profile.get("profile_tokens") or (),  # type: ignore[arg-type]
                            recent_item_ids=history["recent_item_ids"],  # type: ignore[arg-type]
                            recent_timestamps=history["recent_timestamps"],  # type: ignore[arg-type]
                            event_count=history["event_count"],  # type: ignore[arg-type]
                            seen_item_ids=seen_ids)  # type: ignore[arg-type]

    def items(self, ids: Iterable[int]) -> dict[int, ItemFeatures]:
        """Content, popularity and stock of the ids the online store knows (unknown ids are left out)."""
        ids = [int(i) for i in ids]
        contents = self._read(CONTENT, "item_id", ids)
        counts = self._read(POPULARITY, "item_id", ids)
        stocks = self.quantities(ids)
        found = {}
        for item_id, content, count in zip(ids, contents, counts, strict=True):
            if content is None:
                continue
            count = self._filled(count)
            found[item_id] = ItemFeatures(
                title=content.get("title") or "", categories=content.get("categories") or (),  # type: ignore[arg-type]
                price=content.get("price"), created_at_s=content.get("created_at_s") or 0,  # type: ignore[arg-type]
                popularity=tuple(count[c] for c in POPULARITY_COUNTS),  # type: ignore[arg-type]
                stock=stocks.get(item_id, 0))  # no stock row: none in stock
        return found

    def quantities(self, ids: Iterable[int]) -> dict[int, int]:
        """The stored quantity of the ids that have one, content or not (a logged stock change
        may reach the store before its item's first upsert)."""
        ids = [int(i) for i in ids]
        return {i: int(row.get("quantity") or 0)
                for i, row in zip(ids, self._read(STOCK, "item_id", ids), strict=True) if row is not None}

    def popularity(self, ids: list[int]) -> np.ndarray:
        """(n, 3) events of each item in the last 1, 7 and 30 days (the absent values if none)."""
        rows = [self._filled(row) for row in self._read(POPULARITY, "item_id", ids)]
        return np.array([[r[c] for c in POPULARITY_COUNTS] for r in rows],
                        dtype=np.float64).reshape(len(ids), len(POPULARITY_COUNTS))

    def catalogue_ids(self) -> list[int]:
        """Every item id of the item_content view's batch source (an online store cannot list keys).

        Empty when the source is not a parquet file; items then load on first use.
        """
        content = self._content_file()
        return [] if content is None else pq.read_table(
            content, columns=["item_id"])["item_id"].to_pylist()

    def _content_file(self) -> Path | None:
        """The item content table (beside the other feature tables); None: its source is not a
        parquet file."""
        path = getattr(self._rows.views[CONTENT].batch_source, "path", None)
        return Path(path) if path and str(path).endswith(".parquet") else None

    def append_interaction(self, user_id: int, item_id: int, ts: datetime, write_id: int) -> int:
        """Add an event to the user's online history (the last `history_length` kept) and to the
        items they have seen, each atomically and once per `write_id` (its event log seq: a retry
        of an appended write appends nothing); returns the history's length. Each row is stamped
        just after its newest event and past its stamp before, as the store keeps stamps: a load
        of tables written before the event was logged (their row at the old stamp, without it)
        never replaces it."""
        seconds, length = int(ts.timestamp()), 0

        def append(row: Row | None, stamp: datetime | None):
            nonlocal length
            row = {n: self._absent.get(n) if v is None else v for n, v in self._filled(row).items()}
            events = sorted([*zip(row["recent_timestamps"], row["recent_item_ids"], strict=True),  # type: ignore[call-overload]
                             (seconds, int(item_id))], key=lambda e: e[0])[-self.history_length:]
            length = len(events)
            at = ts + AFTER if stamp is None else max(stamp + self._past, ts + AFTER)
            return {"recent_item_ids": ValueProto(int64_list_val=Int64List(val=[i for _, i in events])),
                    "recent_timestamps": ValueProto(int64_list_val=Int64List(val=[t for t, _ in events])),
                    "event_count": ValueProto(int64_val=int(row["event_count"]) + 1)}, at  # type: ignore[call-overload]

        def see(row: Row | None, stamp: datetime | None):
            before = tuple((row or {}).get("seen_item_ids") or ())  # type: ignore[arg-type]
            if int(item_id) in before:
                return None  # seen already: nothing to write
            seen = sorted({*before, int(item_id)})
            at = ts + AFTER if stamp is None else max(stamp + self._past, ts + AFTER)
            return {"seen_item_ids": ValueProto(int64_list_val=Int64List(val=seen))}, at

        if self._has_seen:
            self._rows_writer.update(SEEN, "user_id", user_id, see, write_id=write_id)
        if not self._rows_writer.update(HISTORY, "user_id", user_id, append, write_id=write_id):
            return len(self.user(user_id).recent_item_ids)  # appended before: the history as it is
        return length

    def write_item(self, item_id: int, item: ItemFeatures, at: datetime) -> bool:
        """Write (or replace) an item's content row as of `at`; False if a newer one is stored."""
        values = {
            "title": ValueProto(string_val=item.title),
            "categories": ValueProto(string_list_val=StringList(val=list(item.categories))),
            "created_at_s": ValueProto(int64_val=item.created_at_s),
            # no price: an empty value, so a price stored before does not stay
            "price": ValueProto() if item.price is None else ValueProto(double_val=item.price),
        }
        return self._rows_writer.update(CONTENT, "item_id", item_id, lambda row, ts: (values, at))

    def write_stock(self, item_id: int, quantity: int, at: datetime) -> bool:
        """Set an item's quantity as of `at` (stamped just after it, as the stock table is); False
        if a newer quantity is stored."""
        values = {"quantity": ValueProto(int64_val=int(quantity))}
        return self._rows_writer.update(STOCK, "item_id", item_id, lambda row, ts: (values, at + AFTER))
