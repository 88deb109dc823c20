"""Retrieval through an index version, in the shape `towers.evaluate` plugs in: evaluation as served."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from index.base import IndexBackend
from index.config import SearchFilters

MISSING = -1  # fills a row when the index returns fewer than k items


def index_retrieval(backend: IndexBackend, *, location: str | None = None,
                    in_stock_only: bool = False
                    ) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
    """`retrieve(user_vectors, k, exclude) -> (U, k) ids` answered by the index, one query per user."""

    def retrieve(user_vectors: np.ndarray, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        ranked = np.full((len(user_vectors), k), MISSING, dtype=np.int64)  # (U, k)
        for row, (vector, seen) in enumerate(zip(user_vectors, exclude, strict=True)):
            filters = SearchFilters(in_stock_only=in_stock_only,
                                    exclude_ids=frozenset(int(i) for i in seen))
            ids = [hit.item_id for hit in backend.search(vector, k=k, filters=filters,
                                                         location=location)]
            ranked[row, :len(ids)] = ids
        return ranked

    return retrieve
