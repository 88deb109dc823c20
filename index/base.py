"""The index interface every backend implements, plus the item batch it ingests and the hits it returns.

Payload per item (the same on both backends):

- `stock`: integer quantity; `stock >= 1` means in stock (integer index, range only).
- `categories`: list of strings (keyword index; the HNSW graph gets per-category links).
- `price`: float (float index); absent for an item without one, which no price range matches.
- `created_at`: integer epoch seconds (integer index), so range filters need no date parsing.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from index.config import DROPPED_EXCLUSIONS_MAX, IndexSpec, SearchFilters
from index.errors import InvalidItemsError, InvalidQueryError, UnknownItemError

log = logging.getLogger(__name__)

UPSERT_BATCH = 2048  # points per write: big enough to amortise calls, small enough for gRPC limits
MAX_POINT_ID = 2**63 - 1  # ids are non-negative int64 and used as Qdrant point ids directly
# The payload index of each field, by kind; created before the HNSW build so the graph gets
# per-category links. Numeric fields are range-only and get no extra links (stock >= 1 keeps most
# items, so the main graph serves it).
PAYLOAD_FIELDS = {"stock": "integer", "categories": "keyword", "price": "float", "created_at": "integer"}


@dataclass(frozen=True)
class ItemBatch:
    """Item vectors and payload as column arrays (row i describes item `ids[i]`)."""

    ids: np.ndarray  # (N,) int64
    vectors: np.ndarray  # (N, D) float32
    stock: np.ndarray  # (N,) int64
    categories: Sequence[Sequence[str]]  # N lists of category names
    price: np.ndarray  # (N,) float64
    created_at: np.ndarray  # (N,) int64 epoch seconds

    @classmethod
    def from_columns(
        cls,
        *,
        ids: Sequence[int] | np.ndarray,
        vectors: Sequence[Sequence[float]] | np.ndarray,
        stock: Sequence[int] | np.ndarray,
        categories: Sequence[Sequence[str]],
        price: Sequence[float] | np.ndarray,
        created_at: Sequence[int] | np.ndarray,
    ) -> ItemBatch:
        """Build a batch from any array-likes, converting dtypes (not values) on the way."""
        return cls(
            ids=np.asarray(ids),
            vectors=np.asarray(vectors, dtype=np.float32),
            stock=np.asarray(stock),
            categories=categories,
            price=np.asarray(price, dtype=np.float64),
            created_at=np.asarray(created_at),
        )

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def slice(self, start: int, stop: int) -> ItemBatch:
        return ItemBatch(
            ids=self.ids[start:stop],
            vectors=self.vectors[start:stop],
            stock=self.stock[start:stop],
            categories=self.categories[start:stop],
            price=self.price[start:stop],
            created_at=self.created_at[start:stop],
        )

    def chunks(self, size: int = UPSERT_BATCH) -> Iterator[ItemBatch]:
        for start in range(0, len(self), size):
            yield self.slice(start, start + size)

    def payload(self, row: int) -> dict[str, object]:
        """The row's payload; an item without a price (NaN) has none, so price filters skip it."""
        payload: dict[str, object] = {
            "stock": int(self.stock[row]),
            "categories": list(self.categories[row]),
            "created_at": int(self.created_at[row]),
        }
        if not np.isnan(self.price[row]):
            payload["price"] = float(self.price[row])
        return payload

    def validate(self, *, dim: int, version: str) -> None:
        """Raise `InvalidItemsError` naming the first bad row, item id and version."""
        n = len(self)
        where = f"index version {version}"
        if self.ids.ndim != 1 or not np.issubdtype(self.ids.dtype, np.integer):
            raise InvalidItemsError(f"{where}: ids must be a 1-D integer array, got {self.ids.dtype}")
        for name in ("stock", "price", "created_at"):
            column = getattr(self, name)
            if column.shape != (n,):
                raise InvalidItemsError(f"{where}: {name} has shape {column.shape}, expected ({n},)")
        if len(self.categories) != n:
            raise InvalidItemsError(f"{where}: categories has {len(self.categories)} rows, expected {n}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise InvalidItemsError(
                f"{where}: vectors have shape {self.vectors.shape}, expected ({n}, {dim})"
            )
        if self.vectors.shape[1] != dim:
            raise InvalidItemsError(
                f"{where}: vectors have dimension {self.vectors.shape[1]}, the version expects {dim}"
            )
        self._check_rows(_first_bad(self.ids < 0) if n else None, "id is negative", where)
        self._check_rows(_first_bad(self.ids > MAX_POINT_ID) if n else None, "id exceeds int64", where)
        finite = np.isfinite(self.vectors).all(axis=1)
        self._check_rows(_first_bad(~finite), "vector contains NaN or infinite values", where)
        if not np.issubdtype(self.stock.dtype, np.integer):
            raise InvalidItemsError(f"{where}: stock must be integers, got {self.stock.dtype}")
        if not np.issubdtype(self.created_at.dtype, np.integer):
            raise InvalidItemsError(
                f"{where}: created_at must be integer epoch seconds, got {self.created_at.dtype}"
            )
        self._check_rows(_first_bad(np.isinf(self.price)), "price is infinite", where)  # NaN: none
        for row, cats in enumerate(self.categories):
            if isinstance(cats, str) or not all(isinstance(c, str) for c in cats):
                self._check_rows(row, f"categories must be a list of strings, got {cats!r}", where)
        self._check_duplicates(where)

    def _check_rows(self, row: int | None, problem: str, where: str) -> None:
        if row is not None:
            raise InvalidItemsError(f"item_id {int(self.ids[row])} (row {row}) in {where}: {problem}")

    def _check_duplicates(self, where: str) -> None:
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if dup.size:
            first, second = int(order[dup[0]]), int(order[dup[0] + 1])
            raise InvalidItemsError(
                f"item_id {int(self.ids[second])} (rows {first} and {second}) in {where}: duplicate id"
            )


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


@dataclass(frozen=True)
class Hit:
    """One search result: the item, its score and its payload at query time."""

    item_id: int
    score: float
    stock: int
    categories: list[str] = field(default_factory=list)
    price: float | None = None  # None: the item has no price
    created_at: int = 0

    @classmethod
    def from_payload(cls, item_id: int, score: float, payload: Mapping[str, object] | None) -> Hit:
        p = payload or {}
        return cls(
            item_id=int(item_id),
            score=float(score),
            stock=int(p.get("stock", 0)),  # type: ignore[call-overload]
            categories=list(p.get("categories", [])),  # type: ignore[call-overload]
            price=None if p.get("price") is None else float(p["price"]),  # type: ignore[arg-type]
            created_at=int(p.get("created_at", 0)),  # type: ignore[call-overload]
        )


def query_vector(vector: Sequence[float] | np.ndarray, dim: int, version: str) -> list[float]:
    """Check a query vector against the version's dimension and return it as a list."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise InvalidQueryError(f"index version {version}: query has shape {array.shape}, expected ({dim},)")
    if not np.isfinite(array).all():
        raise InvalidQueryError(f"index version {version}: query vector contains NaN or infinite values")
    return array.tolist()  # type: ignore[no-any-return]


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar that stays silent when stderr is not a TTY."""
    return tqdm(total=total, desc=desc, unit="item", disable=not sys.stderr.isatty())


@dataclass(frozen=True)
class Conditions:
    """What every point of one graph walk satisfies, in the leaf terms both clients have."""

    ranges: tuple[tuple[str, float | None, float | None], ...]  # (field, gte, lte)
    categories: tuple[str, ...] | None  # any of these
    excluded: tuple[int, ...]  # point ids

    @classmethod
    def of(cls, filters: SearchFilters) -> Conditions | None:
        """The conditions of `filters`; None when nothing is filtered."""
        ranges: list[tuple[str, float | None, float | None]] = []
        # Stock is an integer range: MatchValue(True) on a boolean matches nothing in qdrant-edge-py 0.9.0.
        if filters.in_stock_only:
            ranges.append(("stock", 1, None))
        if filters.min_price is not None or filters.max_price is not None:
            ranges.append(("price", filters.min_price, filters.max_price))
        if filters.created_after is not None or filters.created_before is not None:
            ranges.append(("created_at", filters.created_after, filters.created_before))
        categories = None if filters.categories is None else tuple(sorted(filters.categories))
        if not ranges and categories is None and not filters.exclude_ids:
            return None
        return cls(tuple(ranges), categories, tuple(sorted(filters.exclude_ids)))


@dataclass(frozen=True)
class QueryPlan:
    """One search, decided once from the call and the version's spec; backends translate it."""

    limit: int  # points asked of the engine: k plus the excluded ids dropped afterwards
    walks: tuple[Conditions | None, ...]  # one filtered graph walk each; several are merged by score
    hnsw_ef: int
    exact: bool
    acorn: bool
    rescore: bool | None  # None: the version is not quantized
    oversampling: float | None

    @classmethod
    def of(cls, spec: IndexSpec, filters: SearchFilters, *, limit: int, hnsw_ef: int | None,
           oversampling: float | None, exact: bool) -> QueryPlan:
        quantized = spec.quantized
        return cls(limit=limit, walks=tuple(Conditions.of(part) for part in filters.split_categories()),
                   hnsw_ef=hnsw_ef or spec.hnsw_ef, exact=exact, acorn=spec.acorn,
                   rescore=spec.effective_rescore if quantized else None,
                   oversampling=(oversampling or spec.effective_oversampling) if quantized else None)


class IndexBackend(ABC):
    """One small interface over Qdrant Edge (in-process) and a Qdrant server.

    A *location* names one index version inside the backend (a shard directory for Edge,
    a collection for the server). `location=None` means the live version. The flows live here;
    a backend resolves versions (`_version`, `_spec`) and speaks its client (`_write`, `_query`,
    `_existing`, `_set_stock`).
    """

    kind: str

    @abstractmethod
    def location_for(self, version_id: int) -> str:
        """Where version `version_id` is (or will be) stored."""

    @abstractmethod
    def create(self, location: str, spec: IndexSpec) -> None:
        """Create an empty version with its payload indexes; fails if it already exists."""

    def upsert(self, items: ItemBatch, *, location: str | None = None) -> None:
        """Validate then write items (insert or replace); no index rebuild on the live version."""
        target, name = self._version(location)
        spec = self._spec(target)
        items.validate(dim=spec.dim, version=name)
        with progress(len(items), f"upsert {name}") as bar:
            self._write(target, spec, items, bar)

    @abstractmethod
    def finish(self, location: str) -> None:
        """Build the HNSW graph (and quantized vectors) after the bulk upsert, then flush."""

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        location: str | None = None,
        hnsw_ef: int | None = None,
        oversampling: float | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Top-k items by score that satisfy `filters` (default: in stock only)."""
        points, offset = self._search(vector, k, filters, location, hnsw_ef, oversampling, exact,
                                      with_payload=True)
        return [Hit.from_payload(p.id, p.score + offset, p.payload) for p in points]

    def search_ids(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        location: str | None = None,
        hnsw_ef: int | None = None,
        oversampling: float | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`search` without the payload: (n,) int64 item ids and (n,) float32 scores, best first.

        For callers that keep item content themselves (the service): skipping the payload roughly
        halves the engine's time and saves building a `Hit` per result.
        """
        points, offset = self._search(vector, k, filters, location, hnsw_ef, oversampling, exact,
                                      with_payload=False)
        return (np.fromiter((p.id for p in points), np.int64, len(points)),
                (np.fromiter((p.score for p in points), np.float64, len(points)) + offset).astype(np.float32))

    def _search(self, vector: Sequence[float] | np.ndarray, k: int, filters: SearchFilters | None,
                location: str | None, hnsw_ef: int | None, oversampling: float | None, exact: bool, *,
                with_payload: bool) -> tuple[list[Any], float]:
        """The engine's top-k points and the offset that turns their scores into dot products with
        the items (`IndexSpec.score_offset`).

        A few excluded ids are not part of the graph walk's filter: the engine is asked for
        `k + len(dropped)` points and they are dropped here (`SearchFilters.without_exclusions`).
        Of more (a user's whole history), the walk filters them only when the nearest
        `k + DROPPED_EXCLUSIONS_MAX` points, asked for first without them, leave fewer than k; what
        those left joins the filtered walk's points.
        """
        kept, dropped = (filters if filters is not None else SearchFilters()).without_exclusions()
        target, spec, name = self._query_target(location)
        query = query_vector(vector, spec.dim, name)

        def nearest(f: SearchFilters, limit: int) -> list[Any]:
            plan = QueryPlan.of(spec, f, limit=limit, hnsw_ef=hnsw_ef, oversampling=oversampling,
                                exact=exact)
            return list(self._query(target, query, plan, with_payload=with_payload))

        found: list[Any] = []
        if kept.exclude_ids:
            loose = nearest(kept.model_copy(update={"exclude_ids": frozenset()}),
                            k + DROPPED_EXCLUSIONS_MAX)
            found = [p for p in loose if p.id not in kept.exclude_ids]
            if len(found) >= k or (exact and len(loose) < k + DROPPED_EXCLUSIONS_MAX):
                return found[:k], spec.score_offset(query)  # (exact: nothing more passes)
        points = [p for p in nearest(kept, k + len(dropped)) if p.id not in dropped]
        if found:  # the walk may miss some of what the loose search found: both, by score
            ids = {p.id for p in points}
            points = sorted([*points, *(p for p in found if p.id not in ids)], key=lambda p: -p.score)
        return points[:k], spec.score_offset(query)

    def set_stock(self, stock: Mapping[int, int], *, location: str | None = None) -> None:
        """Change the stock payload in place (no re-index); visible to the next query.

        An unknown item id refuses the whole update, before anything is written.
        """
        target, name = self._version(location)
        ids = [int(i) for i in stock]
        missing = sorted(set(ids) - self._existing(target, ids))
        if missing:
            raise UnknownItemError(f"index version {name}: no item_id {missing[:10]} (stock update refused)")
        by_value: dict[int, list[int]] = defaultdict(list)  # one payload write per distinct quantity
        for item_id, quantity in stock.items():
            by_value[int(quantity)].append(int(item_id))
        self._set_stock(target, by_value)
        log.debug("set stock of %d items in %s", len(ids), name)

    @abstractmethod
    def _version(self, location: str | None) -> tuple[Any, str]:
        """The handle of an existing version (None = the live one) and its name for messages."""

    @abstractmethod
    def _spec(self, target: Any) -> IndexSpec:
        """The spec of the version `_version` resolved."""

    def _query_target(self, location: str | None) -> tuple[Any, IndexSpec, str]:
        """What `_query` searches, its spec and its name."""
        target, name = self._version(location)
        return target, self._spec(target), name

    @abstractmethod
    def _write(self, target: Any, spec: IndexSpec, items: ItemBatch, bar: tqdm) -> None:
        """Write validated items as `spec` stores them (centred), advancing `bar`."""

    @abstractmethod
    def _query(self, target: Any, query: list[float], plan: QueryPlan, *,
               with_payload: bool) -> Sequence[Any]:
        """The engine's scored points (`.id`, `.score`, `.payload`) for `plan`, best first."""

    @abstractmethod
    def _existing(self, target: Any, ids: list[int]) -> set[int]:
        """Which of `ids` the version holds."""

    @abstractmethod
    def _set_stock(self, target: Any, by_value: Mapping[int, list[int]]) -> None:
        """Set `stock` to each quantity on its item ids."""

    @abstractmethod
    def count(self, *, location: str | None = None) -> int:
        """Number of items in a version."""

    @abstractmethod
    def stats(self, *, location: str | None = None) -> dict[str, int]:
        """Counts for metadata: `points`, `indexed_vectors` (in an HNSW graph), `segments`."""

    @abstractmethod
    def spec(self, location: str | None = None) -> IndexSpec:
        """The spec the version was built with."""

    @abstractmethod
    def exists(self, location: str) -> bool:
        """Whether the version's data exists."""

    @abstractmethod
    def activate(self, location: str) -> None:
        """Point the backend's live pointer (Edge: LIVE file; server: alias) at `location`."""

    @abstractmethod
    def live_location(self) -> str | None:
        """The location the live pointer names, or None."""

    @abstractmethod
    def drop(self, location: str) -> None:
        """Delete a version's data (missing data is not an error)."""

    @abstractmethod
    def release(self, location: str) -> None:
        """Free what an opened non-live version holds; a later search reopens it.

        Edge closes the version's cached shard (its memory maps and WAL lock); the live version
        and a version never opened are left as they are. The server backend holds nothing.
        """

    @abstractmethod
    def close(self) -> None:
        """Release handles and clients."""

    def __enter__(self) -> IndexBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
