"""Measures of a new model and index version that gate promotion and feed monitoring.

Pure functions over arrays and an `IndexBackend`, so checks, monitoring assets and tests share them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index import IndexBackend, SearchFilters

EVERYTHING = SearchFilters(in_stock_only=False)  # recall is measured on the graph, not the filter


@dataclass(frozen=True)
class RecallReport:
    hnsw_ef: int | None  # query beam width; None = the version's own
    recall: float  # mean share of the exact top k the ANN search returned
    mean_ms: float  # mean ANN query time
    queries: int


def ann_recall(backend: IndexBackend, queries: np.ndarray, *, location: str | None = None,
               k: int = 10, hnsw_efs: Sequence[int | None] = (None,)) -> list[RecallReport]:
    """Recall@k of the approximate (HNSW, quantized) search against exact search, unfiltered.

    One report per beam width in `hnsw_efs`; the exact top k of each query is searched once.
    """
    if len(queries) == 0:
        raise ValueError("ann_recall: no queries")
    exact = [{h.item_id for h in backend.search(query, k=k, filters=EVERYTHING, location=location,
                                                exact=True)} for query in queries]
    reports = []
    for ef in hnsw_efs:
        hits, seconds = [], 0.0
        for query, truth in zip(queries, exact, strict=True):
            started = time.perf_counter()
            found = backend.search(query, k=k, filters=EVERYTHING, location=location, hnsw_ef=ef)
            seconds += time.perf_counter() - started
            hits.append(len(truth & {h.item_id for h in found}) / max(len(truth), 1))
        reports.append(RecallReport(ef, float(np.mean(hits)), 1000 * seconds / len(queries),
                                    len(queries)))
    return reports


def disk_bytes(location: str) -> int | None:
    """Bytes allocated on disk under a version's directory (sparse files count what they use);
    None when the location is not a local directory (a server's collection)."""
    root = Path(location)
    if not root.is_dir():
        return None
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def unsearchable_items(backend: IndexBackend, ids: np.ndarray, vectors: np.ndarray, *,
                       location: str | None = None, k: int = 10) -> list[int]:
    """Ids not found in the top k of an in-stock filtered search for their own vector."""
    missing = []
    for item_id, vector in zip(ids, vectors, strict=True):
        found = backend.search(vector, k=k, filters=SearchFilters(), location=location)
        if int(item_id) not in {h.item_id for h in found}:
            missing.append(int(item_id))
    return missing


def neighbour_sets(vectors: np.ndarray, rows: np.ndarray, k: int = 10) -> np.ndarray:
    """(R, k) row numbers of each sampled row's k nearest other rows by dot product, exactly."""
    scores = vectors[rows] @ vectors.T  # (R, N)
    scores[np.arange(len(rows)), rows] = -np.inf
    return np.argsort(-scores, axis=1)[:, :k]


def neighbour_overlap(old: np.ndarray, new: np.ndarray, *, k: int = 10, sample: int = 500,
                      seed: int = 0) -> np.ndarray:
    """Per sampled item, the share of its k nearest neighbours in `old` still among them in `new`
    (of all the others, in a catalogue of k items or fewer: 1 when an item has none).

    Row i of `old` and `new` is the same item (two embeddings of one catalogue).
    """
    if old.shape[0] != new.shape[0]:
        raise ValueError(f"neighbour_overlap: {old.shape[0]} old rows, {new.shape[0]} new rows")
    rows = np.random.default_rng(seed).permutation(len(old))[:sample]
    k = min(k, len(old) - 1)  # an item is not its own neighbour
    if k < 1:
        return np.ones(len(rows))
    before, after = neighbour_sets(old, rows, k), neighbour_sets(new, rows, k)
    return np.array([len(set(a) & set(b)) / k for a, b in zip(before, after, strict=True)])


def pair_similarities(vectors: np.ndarray, *, pairs: int = 5000, seed: int = 0) -> np.ndarray:
    """Dot products of random pairs of distinct rows: the spread of the embedding space."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(vectors), pairs), rng.integers(0, len(vectors), pairs)
    keep = a != b
    return np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])
