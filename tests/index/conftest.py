"""Fixtures: random catalogues, both index backends, a live version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from index import (
    EdgeSettings,
    IndexBackend,
    IndexSpec,
    ItemBatch,
    ServerSettings,
    build_version,
    open_backend,
)
from index.registry import Registry

CATEGORIES = [f"cat{i}" for i in range(8)]
DIM = 16


def random_items(n: int, *, dim: int = DIM, seed: int = 0, first_id: int = 0) -> ItemBatch:
    """`n` items with clustered unit vectors, ~20% out of stock, ~10% without a price, 1-2
    categories each."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, dim))
    vectors = centers[rng.integers(0, 8, n)] + rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stock = rng.integers(1, 20, n)
    stock[rng.random(n) < 0.2] = 0
    categories = [
        sorted(set(rng.choice(CATEGORIES, size=int(rng.integers(1, 3))).tolist())) for _ in range(n)
    ]
    return ItemBatch.from_columns(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        vectors=vectors,
        stock=stock,
        categories=categories,
        price=np.where(rng.random(n) < 0.1, np.nan, np.round(rng.uniform(1, 100, n), 2)),
        created_at=rng.integers(1_600_000_000, 1_700_000_000, n),
    )


@dataclass
class LiveIndex:
    """A backend with one live version of `items`, and the registry that knows it."""

    backend: IndexBackend
    registry: Registry
    items: ItemBatch
    spec: IndexSpec
    model_version_id: int
    data_dir: Path


def open_live_index(
    backend_name: str, data_dir: Path, items: ItemBatch, spec: IndexSpec | None = None
) -> LiveIndex:
    # The server backend runs qdrant-client's local mode in memory (on disk it fsyncs every point).
    path = data_dir / "index"
    backend = open_backend(EdgeSettings(path=path) if backend_name == "edge"
                           else ServerSettings(path=path, url=":memory:"))
    registry = Registry(data_dir=data_dir, backend=backend)
    model = registry.register_model("towers-test", config={"dim": DIM})
    spec = spec or IndexSpec(dim=items.vectors.shape[1])
    build_version(items, registry=registry, spec=spec, model_version_id=model.id, promote=True)
    return LiveIndex(backend, registry, items, spec, model.id, data_dir)


@pytest.fixture(params=["edge", "server"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_live_index(tmp_path: Path) -> Iterator[Callable[..., LiveIndex]]:
    opened: list[LiveIndex] = []

    def make(backend_name: str, items: ItemBatch, spec: IndexSpec | None = None) -> LiveIndex:
        live = open_live_index(backend_name, tmp_path, items, spec)
        opened.append(live)
        return live

    yield make
    for live in opened:
        live.backend.close()
        live.registry.close()


@pytest.fixture
def live_index(backend_name: str, make_live_index: Callable[..., LiveIndex]) -> LiveIndex:
    return make_live_index(backend_name, random_items(1000))


def exact_top_k(items: ItemBatch, query: np.ndarray, mask: np.ndarray, k: int = 10) -> list[int]:
    """Brute-force top-k item ids by dot product among rows where `mask` is true."""
    scores = items.vectors @ query.astype(np.float32)
    scores[~mask] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(items.ids[i]) for i in order if mask[i]]
