"""Typed configuration for the item index: where it lives, how a version is built, how to filter.

Three models, one job each:

- `IndexSettings` (`EdgeSettings` or `ServerSettings`) says which backend to open and where
  (set once per deployment).
- `IndexSpec` says how one index version is built and searched (stored with the version).
- `SearchFilters` is the filter of one query (stock, categories, price, excluded ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

Quantization = Literal["none", "int8", "binary", "product"]
DistanceName = Literal["dot", "cosine"]
ProductCompression = Literal["x4", "x8", "x16", "x32", "x64"]


class _BackendSettings(BaseModel):
    """What both backends take: where a version lives and how versions are named."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path(".twotower/index")  # edge: shard root; server without url: local-mode dir
    prefix: str = "items"  # name of every version: f"{prefix}_v{version_id}"


class EdgeSettings(_BackendSettings):
    """In-process Qdrant Edge shards under `path`: no server to run."""

    backend: Literal["edge"] = "edge"
    # Threads of each opened shard's search pool. None = one per CPU (Qdrant's default): the
    # fastest single query, but idle pool threads spin. 1 = the segments searched one after another
    # on one thread: ~0.5 ms less CPU per query at 100k items and half the p99 under load
    # (docs/benchmarks.md, "Serving, third pass"); what a service on few cores wants. Edge keeps
    # the size in the shard: later opens without a setting reuse it.
    search_threads: int | None = Field(default=None, ge=1)
    # Serve each version from this backend's own copy of its shard (under path/.serving),
    # dropped when the version is released. Edge locks a shard to the process that opens it, so
    # the service's workers each need one; writes reach the others through the event log.
    own_copies: bool = False


class ServerSettings(_BackendSettings):
    """A Qdrant server or cluster through qdrant-client (or its local mode at `path` without `url`)."""

    backend: Literal["server"] = "server"
    url: str | None = None  # "http://host:6333" or ":memory:"; None = local mode at path
    api_key: str | None = None  # never logged
    alias: str = "items"  # the alias naming the live collection
    timeout_s: int = 60  # request timeout
    indexing_wait_s: float = 1800.0  # how long to wait for the HNSW build to finish
    # Distributed Qdrant (docs/scaling.md); None leaves each to the server's default.
    shard_number: int | None = Field(default=None, ge=1)  # fixed at creation; 2x the nodes leaves room
    replication_factor: int | None = Field(default=None, ge=1)  # copies of each shard; 2 survives a lost node
    write_consistency_factor: int | None = Field(default=None, ge=1)  # replicas acking a write; <= copies

    @model_validator(mode="after")
    def _check_distribution(self) -> ServerSettings:
        copies = self.replication_factor or 1  # Qdrant's default
        if self.write_consistency_factor is not None and self.write_consistency_factor > copies:
            raise ValueError(f"write_consistency_factor={self.write_consistency_factor} is above "
                             f"replication_factor={copies}: writes would wait for replicas that do not exist")
        return self


def _backend_of(value: object) -> object:
    """The union's tag; a mapping without `backend` is the default, Edge."""
    if isinstance(value, Mapping):
        return value.get("backend", "edge")
    return getattr(value, "backend", None)


# Which backend holds the item vectors; switching backend is configuration only.
IndexSettings = Annotated[
    Annotated[EdgeSettings, Tag("edge")] | Annotated[ServerSettings, Tag("server")],
    Discriminator(_backend_of),
]
_INDEX_SETTINGS: TypeAdapter[EdgeSettings | ServerSettings] = TypeAdapter(IndexSettings)


def parse_index_settings(fields: Mapping[str, Any]) -> EdgeSettings | ServerSettings:
    """The backend's settings from plain fields (`backend` picks the class, default edge)."""
    return _INDEX_SETTINGS.validate_python(fields)


class IndexSpec(BaseModel):
    """How one index version is built and searched; persisted next to the version's data."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(gt=0)  # item embedding dimension; every upsert is checked against it
    distance: DistanceName = "dot"  # the towers score with a dot product
    # 4x smaller vectors; recall stays >= 0.97 with rescoring on unit vectors (not with a popularity
    # prior's coordinate: index.model_store.default_quantization)
    quantization: Quantization = "int8"
    product_compression: ProductCompression = "x16"  # only for quantization="product"
    scalar_quantile: float = Field(default=0.99, gt=0.5, le=1.0)  # int8 clipping; 0.99 drops outliers
    hnsw_m: int = Field(default=16, ge=4)  # graph degree: 16 balances recall and build time
    # Build beam: on vectors of well-trained towers, 96 left recall@10 at 1M (ef=512) at 0.961-0.964;
    # 128 gives 0.970-0.976 (a thin margin) and builds 1M x 64 in 148-149 s (96: 124 s;
    # docs/benchmarks.md, 2026-12-06).
    hnsw_ef_construct: int = Field(default=128, ge=8)
    payload_m: int | None = None  # links of the per-category subgraphs; None = hnsw_m
    full_scan_threshold_kb: int = Field(default=1000, ge=0)  # below it a filter scans exactly
    # HNSW graphs per version (Edge: bulk builds of >= 100k items), searched in parallel, one per
    # core. Two smaller graphs find users' items better and faster: at 1M tower-like items 0.988 at
    # ef=384 (p99 1.7 ms) where one graph gave 0.960 at ef=512; at 100k 0.985 vs 0.941 at ef=128.
    segments: int = Field(default=2, ge=1)
    # Query beam. None = chosen from the version's item count when it is built (`for_items`) and
    # stored with it; an explicit value wins.
    hnsw_ef: int | None = Field(default=None, ge=1)
    rescore: bool | None = None  # re-rank with full vectors; None = on iff quantized
    # Candidates rescored with the full vectors, as a multiple of k; None = 2.0 iff quantized. For
    # int8, 1.0 lost nothing at 100k tower items (recall@30 0.9802 vs 0.9803, 0.11 ms faster) but
    # 1.3 points at 1M (0.973 vs 0.986 at ef=512; docs/benchmarks.md, "Serving, third pass").
    oversampling: float | None = Field(default=None, ge=1.0)
    acorn: bool = False  # ACORN filtered search; helps very selective unindexed filters only
    quantized_in_ram: bool = True  # keep quantized vectors pinned in RAM (the point of them)
    # Subtracted from every item vector; dot products shift by a per-query constant, so the ranking
    # is unchanged while the graph walk finds users' items far better (docs/index.md, "HNSW defaults").
    # build_version sets the items' mean for "dot"; None = not centred.
    centre: list[float] | None = None

    @model_validator(mode="after")
    def _check_quantization(self) -> IndexSpec:
        if self.quantization == "product" and self.dim % 2:
            raise ValueError(f"dim={self.dim}: product quantization needs an even dimension")
        if self.centre is not None:
            if len(self.centre) != self.dim:
                raise ValueError(f"centre has {len(self.centre)} values, expected dim={self.dim}")
            if self.distance != "dot":
                raise ValueError(f"centre: only dot products keep their ranking, not {self.distance}")
        return self

    def for_items(self, count: int) -> IndexSpec:
        """This spec with `hnsw_ef` chosen for a version of `count` items (when it is None)."""
        return self if self.hnsw_ef is not None else self.model_copy(update={"hnsw_ef": hnsw_ef_for(count)})

    def centred(self, vectors: np.ndarray) -> np.ndarray:
        """Item vectors as stored: minus `centre` when the version is centred."""
        return vectors if self.centre is None else vectors - self._centre_array.astype(np.float32)

    def score_offset(self, query: Sequence[float]) -> float:
        """What to add to the engine's scores to get `query . item`: `query . centre` (or 0)."""
        return 0.0 if self.centre is None else float(np.dot(query, self._centre_array))

    @cached_property
    def _centre_array(self) -> np.ndarray:
        return np.asarray(self.centre, dtype=np.float64)

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    @property
    def effective_rescore(self) -> bool:
        return self.quantized if self.rescore is None else self.rescore

    @property
    def effective_oversampling(self) -> float | None:
        if not self.quantized:
            return None
        return 2.0 if self.oversampling is None else self.oversampling


# Query beams measured on tower-like items (int8, two graphs, the service's `stock` filter;
# docs/benchmarks.md): 192 gives recall@10 0.98 at 100k (128: 0.967); 1M needs 512 (0.985-0.994
# at p99 1.4-1.7 ms; 192 gave 0.962, 384 0.976-0.988).
MEASURED_EF = ((100_000, 192), (1_000_000, 512))


def hnsw_ef_for(count: int) -> int:
    """The query beam for a version of `count` items: the measured beams, interpolated linearly in
    log(items) vs log(ef); below the smallest measured catalogue its beam, above the largest the
    same slope continued (a walk through a larger graph needs a wider beam for the same recall)."""
    (n0, ef0), (n1, ef1) = MEASURED_EF
    if count <= n0:
        return ef0
    slope = np.log(ef1 / ef0) / np.log(n1 / n0)
    return int(round(ef0 * (count / n0) ** slope))


# Excluded ids dropped from the results; of more, the k + this many nearest are asked for first
# without them, and only when those leave fewer than k do they go into the graph walk's filter.
DROPPED_EXCLUSIONS_MAX = 100


class SearchFilters(BaseModel):
    """Filter of one query; every returned item satisfies all of it.

    `in_stock_only` is a range `stock >= 1` on the integer stock field (booleans are avoided:
    `MatchValue(True)` matches nothing in qdrant-edge-py 0.9.0).
    """

    model_config = ConfigDict(extra="forbid")

    in_stock_only: bool = True
    categories: frozenset[str] | None = None  # keep items with any of these categories
    min_price: float | None = None
    max_price: float | None = None
    created_after: int | None = None  # epoch seconds, inclusive
    created_before: int | None = None  # epoch seconds, inclusive
    exclude_ids: frozenset[int] = frozenset()  # e.g. items the user already saw

    def without_exclusions(self) -> tuple[SearchFilters, frozenset[int]]:
        """This filter minus the excluded ids to drop from the results (when there are few).

        A filtered HNSW walk does not pass through excluded points, and seen items sit right next
        to the user's vector, so excluding them in the walk cuts holes where the walk must go.
        Searching `k + len(dropped)` without them and dropping them afterwards returns the same
        items as an exact search and raised recall@10 from 0.95 to 0.98 at ef=512 on 50k
        tower-like items (docs/benchmarks.md, "Item index on tower-like vectors").
        """
        if not self.exclude_ids or len(self.exclude_ids) > DROPPED_EXCLUSIONS_MAX:
            return self, frozenset()
        return self.model_copy(update={"exclude_ids": frozenset()}), self.exclude_ids

    def split_categories(self) -> list[SearchFilters]:
        """One filter per allowed category (or just this one when at most one is allowed).

        The HNSW graph gets extra links per category, so a walk restricted to one category stays
        connected; a walk restricted to "A or B" can stay stuck in A. Searching each category and
        merging the candidates is what keeps filtered recall high.
        """
        if self.categories is None or len(self.categories) <= 1:
            return [self]
        return [self.model_copy(update={"categories": frozenset([c])}) for c in sorted(self.categories)]

    @model_validator(mode="after")
    def _check_ranges(self) -> SearchFilters:
        if self.min_price is not None and self.max_price is not None:
            if self.min_price > self.max_price:
                raise ValueError(f"min_price={self.min_price} is above max_price={self.max_price}")
        if self.categories is not None and not self.categories:
            raise ValueError("categories is empty: pass None to allow every category")
        return self
