"""The embedded backend: Qdrant Edge shards in-process, one shard directory per index version.

Layout under `EdgeSettings.path`:

    LIVE                 name of the live version directory (replaced atomically)
    items_v7/spec.json   the IndexSpec the version was built with
    items_v7/shard/      the Edge shard (segments, WAL, HNSW graph, payload indexes)
    .serving/PID-START-ID/items_v7/shard/   a serving backend's own copy (`EdgeSettings.own_copies`)

A shard is locked by the process that opens it (its WAL), so one process at a time opens a
version's own shard; builders create new versions and close them before promotion, and serving
processes with `own_copies` each open a copy, so any number of them serve the same version.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import qdrant_edge as qe

from feature_repo.files import atomic_write
from index.base import PAYLOAD_FIELDS, Conditions, IndexBackend, ItemBatch, QueryPlan
from index.config import EdgeSettings, IndexSpec
from index.errors import NoLiveVersionError, UnknownVersionError, VersionStateError
from index.processes import process_alive, process_start

log = logging.getLogger(__name__)

LIVE_FILE = "LIVE"
SPEC_FILE = "spec.json"
SHARD_DIR = "shard"
COPIES_DIR = ".serving"  # serving backends' own copies, a folder per backend: "PID-START-ID"
SEGMENT_MIN_ITEMS = 50_000  # a bulk load is split into IndexSpec.segments graphs of at least this many


def edge_filter(conditions: Conditions | None) -> qe.Filter | None:
    """One graph walk's conditions as an Edge filter."""
    if conditions is None:
        return None
    must = [qe.FieldCondition(key=key, range=qe.RangeFloat(gte=gte, lte=lte))
            for key, gte, lte in conditions.ranges]
    if conditions.categories is not None:
        must.append(qe.FieldCondition(key="categories", match=qe.MatchAny(list(conditions.categories))))
    must_not = [qe.HasIdCondition(set(conditions.excluded))] if conditions.excluded else None
    return qe.Filter(must=must or None, must_not=must_not)  # type: ignore[arg-type]


def edge_vectors(spec: IndexSpec) -> qe.EdgeVectorParams:
    distance = qe.Distance.Dot if spec.distance == "dot" else qe.Distance.Cosine
    return qe.EdgeVectorParams(size=spec.dim, distance=distance)


def edge_config(spec: IndexSpec) -> qe.EdgeConfig:
    """The shard configuration for a spec (vectors, HNSW, quantization, in-RAM payload)."""
    hnsw = qe.HnswIndexConfig(
        m=spec.hnsw_m,
        ef_construct=spec.hnsw_ef_construct,
        full_scan_threshold=spec.full_scan_threshold_kb,
        max_indexing_threads=0,
        payload_m=spec.payload_m,
    )
    return qe.EdgeConfig(
        vectors=edge_vectors(spec),
        hnsw_config=hnsw,
        quantization_config=_quantization(spec),
        payload_memory=qe.Memory.Cached,  # filters read stock/categories on every query
        # Every segment gets its graph at finish(), however small; Edge never optimizes on its own.
        # One more segment than the sealed parts (the appendable one), or optimize() merges them.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=spec.segments + 1),
    )


def _quantization(
    spec: IndexSpec,
) -> qe.ScalarQuantizationConfig | qe.BinaryQuantizationConfig | qe.ProductQuantizationConfig | None:
    memory = qe.Memory.Pinned if spec.quantized_in_ram else None
    if spec.quantization == "int8":
        return qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=spec.scalar_quantile, memory=memory
        )
    if spec.quantization == "binary":
        return qe.BinaryQuantizationConfig(
            query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits, memory=memory
        )
    if spec.quantization == "product":
        ratio = getattr(qe.CompressionRatio, spec.product_compression.upper())
        return qe.ProductQuantizationConfig(compression=ratio, memory=memory)
    return None


PAYLOAD_PARAMS: dict[str, object] = {  # by PAYLOAD_FIELDS kind
    "integer": qe.IntegerIndexParams(lookup=False, range=True, enable_hnsw=False),
    "keyword": qe.KeywordIndexParams(enable_hnsw=True),
    "float": qe.FloatIndexParams(enable_hnsw=False),
}


@functools.lru_cache(maxsize=256)
def _version_path(root: Path, location: str) -> Path:
    """`location` as a directory under `root` (cached: building and hashing a fresh Path cost
    ~20 us of every query)."""
    path = Path(location)
    return path if path.is_absolute() else root / path


class EdgeBackend(IndexBackend):
    """Index versions as Qdrant Edge shard directories; the LIVE file is the live pointer."""

    kind = "edge"

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.root = Path(settings.path).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[Path, qe.EdgeShard] = {}
        self._specs: dict[Path, IndexSpec] = {}
        self._building: set[Path] = set()  # created here, not finished yet: upsert splits bulk loads
        self._lock = threading.RLock()
        self._opening = threading.Lock()  # a shard is opened (and copied) by one thread at a time
        pid = os.getpid()
        self._copies = (self.root / COPIES_DIR /
                        f"{pid}-{process_start(pid) or ''}-{uuid.uuid4().hex[:8]}")
        if settings.own_copies:
            _remove_orphan_copies(self.root / COPIES_DIR)

    # -- locations -------------------------------------------------------------------------
    def location_for(self, version_id: int) -> str:
        return str(self.root / f"{self.settings.prefix}_v{version_id}")

    def _resolve(self, location: str | None) -> Path:
        """The directory of `location` (None = whatever LIVE names now, read on every call).

        A version this backend has opened (its spec is cached) is not looked up on disk again:
        that stat was on every query's path. `drop` and `release` forget the version, so the next
        call checks the disk again.
        """
        if location is None:
            live = self.live_location()
            if live is None:
                raise NoLiveVersionError(f"no live index version under {self.root}")
            location = live
        path = _version_path(self.root, location)
        if path not in self._specs and not (path / SPEC_FILE).is_file():
            raise UnknownVersionError(f"index version {location}: no such version under {self.root}")
        return path

    def exists(self, location: str) -> bool:
        return (Path(location) / SPEC_FILE).is_file()

    # -- build -------------------------------------------------------------------------------
    def create(self, location: str, spec: IndexSpec) -> None:
        path = Path(location)
        if path.exists():
            raise VersionStateError(f"index version {location}: already exists")
        path.mkdir(parents=True)
        (path / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
        shard = qe.EdgeShard.create(str(path / SHARD_DIR), edge_config(spec))
        for field, kind in PAYLOAD_FIELDS.items():
            shard.update(qe.UpdateOperation.create_field_index(field, PAYLOAD_PARAMS[kind]))  # type: ignore[arg-type]
        with self._lock:
            self._shards[path] = shard
            self._specs[path] = spec
            self._building.add(path)
        log.info("created edge index version %s (dim=%d, %s)", path.name, spec.dim, spec.quantization)

    def _write(self, path: Path, spec: IndexSpec, items: ItemBatch, bar: Any) -> None:
        """A bulk load into a version being built is split into `spec.segments` graphs.

        Each part but the last is sealed into its own HNSW segment as soon as it is written
        (`finish` seals the last), so a version gets `segments` graphs that are searched in parallel.
        Parts hold at least `SEGMENT_MIN_ITEMS` items: a small catalogue stays one graph.
        """
        shard = self._shard(path)
        parts = max(1, min(spec.segments, len(items) // SEGMENT_MIN_ITEMS)) if path in self._building else 1
        size = max(1, -(-len(items) // parts))  # ceiling
        for start in range(0, len(items), size):
            if start:
                shard.optimize()  # seal the previous part into its own graph
            for chunk in items.slice(start, start + size).chunks():
                vectors = spec.centred(chunk.vectors).tolist()
                points = [qe.Point(id=int(item_id), vector=vector, payload=chunk.payload(row))
                          for row, (item_id, vector) in enumerate(zip(chunk.ids, vectors, strict=True))]
                shard.update(qe.UpdateOperation.upsert_points(points))
                bar.update(len(chunk))
        log.debug("upserted %d items into %s (%d parts)", len(items), path.name, parts)

    def finish(self, location: str) -> None:
        path = self._resolve(location)
        shard = self._shard(path)
        shard.optimize()  # builds HNSW + quantized vectors over the already-indexed payload
        shard.flush()
        self._building.discard(path)
        info = shard.info()
        spec = self._spec(path)
        if spec.hnsw_ef is None:  # created without a beam: chosen from its size, stored with it
            spec = spec.for_items(info.points_count)
            atomic_write(path / SPEC_FILE, spec.model_dump_json(indent=2))
            with self._lock:
                self._specs[path] = spec
        log.info(
            "built %s: %d points, %d indexed, %d segments",
            path.name,
            info.points_count,
            info.indexed_vectors_count,
            info.segments_count,
        )

    # -- serve -------------------------------------------------------------------------------
    def _version(self, location: str | None) -> tuple[Path, str]:
        path = self._resolve(location)
        return path, path.name

    def _query(self, path: Path, query: list[float], plan: QueryPlan, *,
               with_payload: bool) -> Sequence[Any]:
        quantization = None if plan.rescore is None else qe.QuantizationSearchParams(
            rescore=plan.rescore, oversampling=plan.oversampling)
        params = qe.SearchParams(hnsw_ef=plan.hnsw_ef, exact=plan.exact, quantization=quantization,
                                 acorn=qe.AcornSearchParams(enable=True) if plan.acorn else None)
        prefetches = None
        if len(plan.walks) > 1:  # one graph walk per category, merged by score
            prefetches = [qe.Prefetch(limit=plan.limit, query=qe.Query.Nearest(query),
                                      filter=edge_filter(walk), params=params) for walk in plan.walks]
        request = qe.QueryRequest(
            limit=plan.limit,
            query=qe.Query.Nearest(query),
            prefetches=prefetches,
            filter=edge_filter(plan.walks[0]) if prefetches is None else None,
            with_payload=with_payload,
            params=params,
        )
        return self._shard(path).query(request)

    def _existing(self, path: Path, ids: list[int]) -> set[int]:
        records = self._shard(path).retrieve(cast("list[qe.PointId]", ids), with_payload=False,
                                             with_vector=False)
        return {int(r.id) for r in records}

    def _set_stock(self, path: Path, by_value: Mapping[int, list[int]]) -> None:
        shard = self._shard(path)
        for quantity, group in by_value.items():
            shard.update(qe.UpdateOperation.set_payload(group, {"stock": quantity}))  # type: ignore[arg-type]

    def count(self, *, location: str | None = None) -> int:
        return int(self._shard(self._resolve(location)).info().points_count)

    def stats(self, *, location: str | None = None) -> dict[str, int]:
        info = self._shard(self._resolve(location)).info()
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
        }

    def spec(self, location: str | None = None) -> IndexSpec:
        return self._spec(self._resolve(location))

    # -- versions ------------------------------------------------------------------------------
    def activate(self, location: str) -> None:
        path = self._resolve(location)
        atomic_write(self.root / LIVE_FILE, path.name)  # readers see the old or the new name
        log.info("edge live version is now %s", path.name)

    def live_location(self) -> str | None:
        try:
            name = (self.root / LIVE_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return str(self.root / name) if name else None

    def drop(self, location: str) -> None:
        path = Path(location)
        if self.live_location() == str(path):
            raise VersionStateError(f"index version {path.name}: is live, promote another first")
        with self._lock:
            shard = self._shards.pop(path, None)
            self._specs.pop(path, None)
            self._building.discard(path)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._copies / path.name, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        log.info("dropped edge index version %s", path.name)

    def release(self, location: str) -> None:
        """Close and forget the cached shard of `location`; the live version is kept open."""
        path = _version_path(self.root, location)
        if self.live_location() == str(path):  # e.g. a rollback made it live again: still serving
            return
        with self._lock:
            shard = self._shards.pop(path, None)
            self._specs.pop(path, None)
        if shard is not None:
            shard.flush()  # stock updates written to the old version survive its reopening
            shard.close()
            shutil.rmtree(self._copies / path.name, ignore_errors=True)  # own_copies: replayed anew
            log.debug("released edge index version %s", path.name)

    def close(self) -> None:
        with self._lock:
            shards, self._shards = self._shards, {}
        for shard in shards.values():
            shard.flush()
            shard.close()
        shutil.rmtree(self._copies, ignore_errors=True)

    # -- handles -------------------------------------------------------------------------------
    def _spec(self, path: Path) -> IndexSpec:
        with self._lock:
            if path not in self._specs:
                self._specs[path] = IndexSpec.model_validate_json((path / SPEC_FILE).read_text())
            return self._specs[path]

    def _shard(self, path: Path) -> qe.EdgeShard:
        shard = self._shards.get(path)
        if shard is not None:
            return shard
        # Opened outside `_lock`: copying a large version (own_copies) must not stall the
        # searches of the version being served meanwhile; `_opening` opens one at a time.
        with self._opening:
            if path not in self._shards:
                threads = self.settings.search_threads
                # Settings left out of a load config keep the shard's own (Edge resolves them).
                config = None if threads is None else qe.EdgeConfig(
                    vectors=edge_vectors(self._spec(path)), max_search_threads=threads)
                shard = qe.EdgeShard.load(str(self._shard_dir(path)), config)
                with self._lock:
                    self._shards[path] = shard
            return self._shards[path]

    def _shard_dir(self, path: Path) -> Path:
        """The shard directory this process opens for version `path`: its own, or with
        `own_copies` a fresh copy of it (what was written to an earlier copy is the event log's
        to replay)."""
        if not self.settings.own_copies:
            return path / SHARD_DIR
        copy = self._copies / path.name / SHARD_DIR
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(path / SHARD_DIR, copy)
        log.info("serving edge index version %s from this process's copy", path.name)
        return copy


def _remove_orphan_copies(folder: Path) -> None:
    """Delete the copies of serving processes that are gone (killed before they closed), also
    when a later process, e.g. after a container restart, was given the same pid."""
    for copies in folder.glob("*"):
        pid, start, *_ = [*copies.name.split("-"), ""]
        if pid.isdigit() and not process_alive(int(pid), start or None):
            shutil.rmtree(copies, ignore_errors=True)
            log.info("removed the index copies of ended process %s", pid)
