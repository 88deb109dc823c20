"""Items as the request path reads them: each item's features, and the re-ranker's inputs as arrays."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from services.online import ItemFeatures, OnlineFeatures
from towers.ranker import Categories

PREFILL_CHUNK = 100_000  # items read from the store and turned into columns at a time
_NO_ITEM = ItemFeatures(title="", categories=(), price=None, created_at_s=0)  # unknown ids read it


@dataclass(frozen=True)
class ItemColumns:
    """The re-ranker's inputs of items, one row each. The numbers share one row-major array, so a
    request gathers its rows in one read (one cache line per item, not one per column)."""

    numbers: np.ndarray  # (n, 6) float64: price (NaN if missing), stock, created_at, popularity x3
    categories: Categories

    @property
    def price(self) -> np.ndarray:
        return self.numbers[:, 0]

    @property
    def stock(self) -> np.ndarray:
        return self.numbers[:, 1]

    @property
    def created_at(self) -> np.ndarray:
        """Unix seconds."""
        return self.numbers[:, 2]

    @property
    def popularity(self) -> np.ndarray:
        """(n, 3) event counts in the last 1/7/30 days."""
        return self.numbers[:, 3:]

    @classmethod
    def of(cls, items: list[ItemFeatures], vocabulary: dict[str, int]) -> ItemColumns:
        """The rows of `items` (new category names are added to `vocabulary`)."""
        numbers = np.array([(f.price, f.stock, f.created_at_s, *f.popularity) for f in items],
                           dtype=np.float64).reshape(len(items), 6)  # None -> NaN
        return cls(numbers, Categories.encode([f.categories for f in items], vocabulary))

    def take(self, rows: np.ndarray) -> ItemColumns:
        return ItemColumns(self.numbers[rows], self.categories.take(rows))

    def split(self, n: int) -> tuple[ItemColumns, ItemColumns]:
        """The first n rows, and the others."""
        first, rest = self.categories.split(n)
        return ItemColumns(self.numbers[:n], first), ItemColumns(self.numbers[n:], rest)

    def concat(self, more: ItemColumns) -> ItemColumns:
        return ItemColumns(np.concatenate((self.numbers, more.numbers)),
                           self.categories.concat(more.categories))


class ItemCache:
    """The re-ranker's inputs of every item, read from the online store once per snapshot.

    Filled with the whole catalogue at load (off the request path); items added later are read
    on first use. Stock then follows the service's writes (`set_stock`, `upsert_item`) and those
    other processes logged, each applied to the cache and the index alike (`services.engine.writes`).
    The index thus returns ids and scores only: reading its payload doubled the search's cost.

    Only arrays are kept, `ItemColumns` (row 0: the empty item, for unknown ids) and a row per id,
    so a request gathers its candidates with a few array reads: a million items add 214 MB of RSS,
    where an `ItemFeatures` object per item as well added 738 MB (docs/benchmarks.md). `known` says
    which ids the catalogue holds; an item's whole features (`item`: title, category names) are
    read from the store.
    Requests read without a lock; writes hold one. New rows go into spare room at the end of the
    arrays (doubled when full, so adding an item costs the same at any catalogue size), published
    as longer columns before the ids that point into them. An upserted item with as many
    categories as before, and stock, change its row in place (a request reading that item just
    then may see some old and some new values of it); other upserts take a new row, the old one
    left unused until the next version load.
    """

    def __init__(self, online: OnlineFeatures, prefill: list[int]) -> None:
        self._online = online
        self._lock = threading.Lock()
        self._row: dict[int, int] = {}  # item id -> row of self._columns
        self._vocabulary: dict[str, int] = {}  # category name -> code
        self._columns = ItemColumns.of([_NO_ITEM], self._vocabulary)  # views of the arrays below
        self._numbers, self._codes = self._columns.numbers, self._columns.categories.codes
        self._offsets = self._columns.categories.offsets  # each with room beyond the views
        self._numbers = _room(self._numbers, 1, len(prefill) + 1)  # the catalogue: no doubling
        self._offsets = _room(self._offsets, 2, len(prefill) + 2)
        self.newest_created_at = 0.0  # unix seconds: the latest creation time of any item it read
        for start in range(0, len(prefill), PREFILL_CHUNK):  # a chunk's objects at a time
            self._add(online.items(prefill[start:start + PREFILL_CHUNK]))

    def __len__(self) -> int:
        return len(self._row)

    def known(self, ids: list[int]) -> set[int]:
        """The ids the catalogue holds; misses are read from the online store and kept."""
        row = self._row
        missing = [i for i in ids if i not in row]
        if missing:
            self._add(self._online.items(missing))
        return {i for i in ids if i in row}

    def item(self, item_id: int) -> ItemFeatures | None:
        """An item's features as the online store holds them now (None: unknown)."""
        return self._online.items([item_id]).get(item_id)

    def columns(self, ids: list[int]) -> ItemColumns:
        """The ids' re-ranker inputs, in order (unknown ids: the empty item); misses as `known`."""
        get = self._row.get
        found = [get(i) for i in ids]
        if None in found:
            self.known(ids)
            found = [get(i, 0) for i in ids]
        # Read after the rows: the columns then hold every row the ids point to.
        return self._columns.take(np.array(found, dtype=np.int64))

    def refresh_popularity(self, stop: threading.Event | None = None) -> None:
        """Read every item's recent popularity again: the online store's materializations move
        it, where stock follows the writes. A chunk's rows change in place under the lock;
        `stop` set ends the refresh between chunks."""
        ids = list(self._row)
        for start in range(0, len(ids), PREFILL_CHUNK):
            if stop is not None and stop.is_set():
                return
            chunk = ids[start:start + PREFILL_CHUNK]
            counts = self._online.popularity(chunk)  # (n, 3)
            with self._lock:
                self._columns.numbers[[self._row[i] for i in chunk], 3:] = counts

    def put(self, item_id: int, item: ItemFeatures) -> None:
        self._add({item_id: item})

    def set_stock(self, item_id: int, quantity: int) -> None:
        with self._lock:
            row = self._row.get(item_id)
            if row is not None:
                self._columns.stock[row] = quantity

    def _add(self, items: dict[int, ItemFeatures]) -> None:
        """Rows for `items`: a known id's own row when its categories fit it, else a new one (the
        id then points to it)."""
        if not items:
            return
        with self._lock:
            added = ItemColumns.of(list(items.values()), self._vocabulary)
            self.newest_created_at = max(self.newest_created_at, float(added.created_at.max()))
            ids, offsets, fresh = list(items), added.categories.offsets, []
            for i, item_id in enumerate(ids):
                row = self._row.get(item_id)
                first, end = offsets[i], offsets[i + 1]
                if row is None or self._offsets[row + 1] - self._offsets[row] != end - first:
                    fresh.append(i)
                    continue
                self._numbers[row] = added.numbers[i]
                self._codes[self._offsets[row]:self._offsets[row + 1]] = added.categories.codes[first:end]
            if fresh:
                n = len(self._columns.numbers)
                self._append(added if len(fresh) == len(ids) else added.take(np.array(fresh)))
                self._row.update(zip([ids[i] for i in fresh], range(n, n + len(fresh)), strict=True))

    def _append(self, more: ItemColumns) -> None:
        """`more`'s rows after the current ones, in the arrays' spare room (doubled when full),
        published as longer columns; readers of the shorter ones are untouched."""
        n, m = len(self._columns.numbers), len(self._columns.categories.codes)
        k, c = len(more.numbers), len(more.categories.codes)
        self._numbers = _room(self._numbers, n, n + k)
        self._offsets = _room(self._offsets, n + 1, n + k + 1)
        self._codes = _room(self._codes, m, m + c)
        self._numbers[n:n + k] = more.numbers
        self._offsets[n + 1:n + k + 1] = more.categories.offsets[1:] + m
        self._codes[m:m + c] = more.categories.codes
        self._columns = ItemColumns(self._numbers[:n + k],
                                    Categories(self._codes[:m + c], self._offsets[:n + k + 1]))


def _room(array: np.ndarray, used: int, needed: int) -> np.ndarray:
    """`array` if it holds `needed` rows, else a copy of its first `used` rows in one twice as
    large (at least `needed`)."""
    if len(array) >= needed:
        return array
    grown = np.empty((max(needed, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown
