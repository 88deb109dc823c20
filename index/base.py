"""The index interface every backend implements, plus the item batch it ingests and the hits it returns.

Payload per item (the same on both backends):

- `stock`: integer quantity; `stock >= 1` means in stock (integer index, range only).
- `categories`: list of strings (keyword index; the HNSW graph gets per-category links).
- `price`: float (float index).
- `created_at`: integer epoch seconds (integer index), so range filters need no date parsing.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from index.config import IndexSpec, SearchFilters
from index.errors import InvalidItemsError, InvalidQueryError

UPSERT_BATCH = 2048  # points per write: big enough to amortise calls, small enough for gRPC limits
MAX_POINT_ID = 2**63 - 1  # ids are non-negative int64 and used as Qdrant point ids directly


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
        return {
            "stock": int(self.stock[row]),
            "categories": list(self.categories[row]),
            "price": float(self.price[row]),
            "created_at": int(self.created_at[row]),
        }

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
        self._check_rows(_first_bad(~np.isfinite(self.price)), "price is NaN or infinite", where)
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
    price: float = 0.0
    created_at: int = 0

    @classmethod
    def from_payload(cls, item_id: int, score: float, payload: Mapping[str, object] | None) -> Hit:
        p = payload or {}
        return cls(
            item_id=int(item_id),
            score=float(score),
            stock=int(p.get("stock", 0)),  # type: ignore[call-overload]
            categories=list(p.get("categories", [])),  # type: ignore[call-overload]
            price=float(p.get("price", 0.0)),  # type: ignore[arg-type]
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


class IndexBackend(ABC):
    """One small interface over Qdrant Edge (in-process) and a Qdrant server.

    A *location* names one index version inside the backend (a shard directory for Edge,
    a collection for the server). `location=None` means the live version.
    """

    kind: str

    @abstractmethod
    def location_for(self, version_id: int) -> str:
        """Where version `version_id` is (or will be) stored."""

    @abstractmethod
    def create(self, location: str, spec: IndexSpec) -> None:
        """Create an empty version with its payload indexes; fails if it already exists."""

    @abstractmethod
    def upsert(self, items: ItemBatch, *, location: str | None = None) -> None:
        """Validate then write items (insert or replace); no index rebuild on the live version."""

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
        points, offset = self._query_without_exclusions(
            vector, k=k, filters=filters, location=location, hnsw_ef=hnsw_ef,
            oversampling=oversampling, exact=exact, with_payload=True)
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
        points, offset = self._query_without_exclusions(
            vector, k=k, filters=filters, location=location, hnsw_ef=hnsw_ef,
            oversampling=oversampling, exact=exact, with_payload=False)
        return (np.fromiter((p.id for p in points), np.int64, len(points)),
                (np.fromiter((p.score for p in points), np.float64, len(points)) + offset).astype(np.float32))

    def _query_without_exclusions(self, vector: Sequence[float] | np.ndarray, *, k: int,
                                  filters: SearchFilters | None, **options: Any
                                  ) -> tuple[list[Any], float]:
        """`_query` for `k + len(excluded)` points, the few excluded ids dropped afterwards, and
        `_query`'s score offset."""
        kept, dropped = (filters if filters is not None else SearchFilters()).without_exclusions()
        points, offset = self._query(vector, k=k + len(dropped), filters=kept, **options)
        return [p for p in points if p.id not in dropped][:k], offset

    @abstractmethod
    def _query(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        k: int,
        filters: SearchFilters,
        location: str | None,
        hnsw_ef: int | None,
        oversampling: float | None,
        exact: bool,
        with_payload: bool,
    ) -> tuple[Sequence[Any], float]:
        """The engine's scored points (`.id`, `.score`, `.payload`), best first, and the offset
        that turns their scores into dot products with the items (`IndexSpec.score_offset`)."""

    @abstractmethod
    def set_stock(self, stock: Mapping[int, int], *, location: str | None = None) -> None:
        """Change the stock payload in place (no re-index); visible to the next query."""

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
