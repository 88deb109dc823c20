"""Stock and item writes applied to a version: its index, the online store and its item cache.

A change reaches a version only as a logged event, through `apply`: the service applies each write
right after logging it, and the same function replays the log's stock and item changes into a
version it switches to (those newer than the version's build) and, every poll, the changes other
processes logged. Applying is idempotent (a quantity is set, an item replaced), so a write that
failed half way is completed by its replay.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from index import IndexBackend, UnknownItemError
from index.catalogue import item_batch
from index.events import Event, created_at, effective, sets_stock
from services.engine.errors import ServiceUnavailable, online_call, unavailable
from services.online import ItemFeatures, OnlineFeatures

if TYPE_CHECKING:  # live.py applies the log through this module
    from services.engine.live import Snapshot

log = logging.getLogger(__name__)


def item_frame(item_id: int, item: ItemFeatures) -> pd.DataFrame:
    """The one-row items frame (the catalogue's columns) the item tower and the index read."""
    return pd.DataFrame({"item_id": [item_id], "title": [item.title],
                         "categories": [list(item.categories)],
                         "price": [np.nan if item.price is None else item.price],
                         "created_at": [pd.Timestamp(item.created_at_s, unit="s", tz="UTC")]})


def logged_item(event: Event, created: str | None = None) -> ItemFeatures:
    """The item an `item` event upserted, created at `created` (ISO 8601; default: as the event
    says, else when it was logged)."""
    body = event.body
    created = datetime.fromisoformat(created or effective(event, "created_at"))
    return ItemFeatures(title=body["title"], categories=tuple(body["categories"]),
                        price=body.get("price"), created_at_s=math.floor(created.timestamp()),
                        stock=int(body.get("stock") or 0))


def apply(s: Snapshot, online: OnlineFeatures, backend: IndexBackend, events: list[Event],
          skip: frozenset[int] | set[int] = frozenset(), *, pass_over: bool = False) -> set[int]:
    """Apply logged stock and item events to a version: per item, its last upsert and its last
    quantity (whichever event set it last). The one way a change reaches a version: the service
    applies a write it just logged, the changes logged elsewhere (another process, the pipeline's
    sensors) and those a version switched to has not built in. Events in `skip` were applied
    already. Returns the ids of items the version does not hold (their events change nothing in
    its index). A failing online store or index is a 503 naming it; the item tower failing to
    embed an upsert is an error of its own, raised before the online store or index is written.

    `pass_over` (the replay): an item whose changes fail other than by a dependency (e.g. an
    upsert body the item tower cannot embed) loses its last upsert, passed over with an error in
    the log (it stays in the log), and its other changes are applied again: one bad change must
    not hold back every later one."""
    changes: dict[int, list[Event]] = {}
    for event in sorted(events, key=lambda e: e.seq):
        changes.setdefault(event.body["item_id"], []).append(event)
    missing = set()
    for item_id, ours in changes.items():
        while ours:
            try:
                _apply_item(s, online, backend, item_id, ours, skip)
            except UnknownItemError:
                missing.add(item_id)
            except ServiceUnavailable:
                raise
            except Exception:
                if not pass_over:
                    raise
                bad = [e for e in ours if e.kind == "item"][-1:] or ours  # else (stock alone) all
                log.exception("index version %d: logged changes %s of item %s cannot be applied; "
                              "passed over", s.index_version, [e.seq for e in bad], item_id)
                ours = [e for e in ours if e not in bad]
                continue
            break
    if missing:
        log.warning("index version %d: items %s are not in it; their logged stock is skipped",
                    s.index_version, sorted(missing))
    return missing


def _apply_item(s: Snapshot, online: OnlineFeatures, backend: IndexBackend, item_id: int,
                ours: list[Event], skip: frozenset[int] | set[int]) -> None:
    """One item's changes (in log order) applied: its last upsert and its last quantity."""
    upserts = [e for e in ours if e.kind == "item"]
    stocks = [e for e in ours if e.kind == "stock"]
    upsert, stock = (upserts or [None])[-1], (stocks or [None])[-1]
    # An upsert may leave out the stock (then the last change that set it counts, else the
    # version's own; for a new item, what a stock change before it left online, else 0) and the
    # creation time (then the item keeps its own)
    setters = [e for e in ours if sets_stock(e)]
    last = setters[-1] if setters else None
    known = online_call(s.items.item, item_id) if upsert is not None else None  # as stored
    if last is not None:
        quantity = int(last.body["quantity"] if last is stock else last.body["stock"])
    elif known is not None:
        quantity = known.stock
    else:  # a new item: what a stock change logged before it (applied online alone) left, else 0
        quantity = online_call(online.quantities, [item_id]).get(item_id, 0)
    if upsert is not None and upsert.seq not in skip:
        had = datetime.fromtimestamp(known.created_at_s, UTC).isoformat() \
            if known is not None and known.created_at_s else None  # 0: none stored
        item = logged_item(upsert, created_at(upserts, had))
        counts = online_call(s.items.columns, [item_id]).popularity[0]  # its own (0: new)
        _upsert(s, online, backend, item_id, ItemFeatures(
            item.title, item.categories, item.price, item.created_at_s,
            popularity=tuple(int(c) for c in counts), stock=quantity), upsert.logged_at)
    # The last quantity, unless the upsert applied here carried it: a stock change, or an earlier
    # upsert's stock when the last upsert (leaving the stock out) was applied before it was read
    if last is not None and last.seq not in skip and (
            last is stock or upsert is None or upsert.seq in skip):
        _set_stock(s, online, backend, item_id, quantity, last.logged_at)


def _set_stock(s: Snapshot, online: OnlineFeatures, backend: IndexBackend, item_id: int,
               quantity: int, at: datetime) -> None:
    """Online store first, then the index payload (which refuses unknown items), then the cache."""
    online_call(online.write_stock, item_id, quantity, at)
    _in_index(s, backend.set_stock, {item_id: quantity})
    s.items.set_stock(item_id, quantity)


def _upsert(s: Snapshot, online: OnlineFeatures, backend: IndexBackend, item_id: int,
            item: ItemFeatures, at: datetime) -> None:
    """Content and stock online, then the vector (embedded by the version's item tower) in its
    index: an item is never searchable before its content can be read."""
    frame = item_frame(item_id, item)
    batch = item_batch(frame, s.artifact.embed_items(frame), {item_id: item.stock})  # nothing written yet
    online_call(online.write_item, item_id, item, at)
    online_call(online.write_stock, item_id, item.stock, at)
    _in_index(s, backend.upsert, batch)
    s.items.put(item_id, item)


def _in_index(s: Snapshot, write: Callable[..., None], change: object) -> None:
    """A write to the version's index; its failure (beyond an unknown item) is a 503 naming the
    index version, not the online store written before it."""
    unavailable(f"index version {s.index_version}", lambda: write(change, location=s.index_location),
                keep=(UnknownItemError,))
