"""The server backend: a Qdrant server or cluster via qdrant-client, one collection per version.

The collection alias `ServerSettings.alias` names the live version, so every reader of the alias
switches at once when a version is promoted. The version's `IndexSpec` is stored as collection
metadata. With `url=None` the same code runs against qdrant-client's local mode at
`ServerSettings.path` (exact search, no HNSW or quantization: for tests and laptops only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient, models

from index.base import PAYLOAD_FIELDS, Conditions, IndexBackend, ItemBatch, QueryPlan
from index.config import IndexSpec, ServerSettings
from index.errors import NoLiveVersionError, UnknownVersionError, VersionStateError

log = logging.getLogger(__name__)

SPEC_KEY = "twotower_index_spec"
INDEXING_THRESHOLD_KB = 10_000  # Qdrant's default; 0 (set during the bulk load) defers HNSW
POLL_S = 0.5
LIVE_SPEC_TTL_S = 1.0  # how long a search trusts its cached copy of the live version's spec

PayloadSchema = models.KeywordIndexParams | models.IntegerIndexParams | models.FloatIndexParams
PAYLOAD_SCHEMAS: dict[str, PayloadSchema] = {
    "integer": models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER, lookup=False, range=True),
    "keyword": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD),
    "float": models.FloatIndexParams(type=models.FloatIndexType.FLOAT),
}  # by PAYLOAD_FIELDS kind


def server_filter(conditions: Conditions | None) -> models.Filter | None:
    """One graph walk's conditions as a qdrant-client filter."""
    if conditions is None:
        return None
    must: list[models.Condition] = [models.FieldCondition(key=key, range=models.Range(gte=gte, lte=lte))
                                    for key, gte, lte in conditions.ranges]
    if conditions.categories is not None:
        any_of = models.MatchAny(any=list(conditions.categories))
        must.append(models.FieldCondition(key="categories", match=any_of))
    must_not: list[models.Condition] | None = None
    if conditions.excluded:
        must_not = [models.HasIdCondition(has_id=list(conditions.excluded))]
    return models.Filter(must=must or None, must_not=must_not)


def _quantization(spec: IndexSpec) -> models.QuantizationConfig | None:
    if spec.quantization == "int8":
        scalar = models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=spec.scalar_quantile, always_ram=spec.quantized_in_ram
        )
        return models.ScalarQuantization(scalar=scalar)
    if spec.quantization == "binary":
        binary = models.BinaryQuantizationConfig(
            always_ram=spec.quantized_in_ram,
            query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR8BITS,
        )
        return models.BinaryQuantization(binary=binary)
    if spec.quantization == "product":
        product = models.ProductQuantizationConfig(
            compression=models.CompressionRatio(spec.product_compression), always_ram=spec.quantized_in_ram
        )
        return models.ProductQuantization(product=product)
    return None


class ServerBackend(IndexBackend):
    """Index versions as Qdrant collections; a collection alias is the live pointer."""

    kind = "server"

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        if settings.url is None:  # local mode persists every point with an fsync: slow writes
            settings.path.mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=str(settings.path))
        elif settings.url == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            self.client = QdrantClient(url=settings.url, api_key=settings.api_key, timeout=settings.timeout_s)
        self._specs: dict[str, IndexSpec] = {}
        self._live_spec: tuple[float, IndexSpec] | None = None

    def location_for(self, version_id: int) -> str:
        return f"{self.settings.prefix}_v{version_id}"

    def _resolve(self, location: str | None) -> str:
        if location is None:
            location = self.live_location()
            if location is None:
                raise NoLiveVersionError(f"no live index version: alias {self.settings.alias!r} is not set")
        if not self.client.collection_exists(location):
            raise UnknownVersionError(f"index version {location}: no such collection")
        return location

    def exists(self, location: str) -> bool:
        return self.client.collection_exists(location)

    def create(self, location: str, spec: IndexSpec) -> None:
        if self.client.collection_exists(location):
            raise VersionStateError(f"index version {location}: already exists")
        distance = models.Distance.DOT if spec.distance == "dot" else models.Distance.COSINE
        # Quantized searches read the originals only to rescore `oversampling x k` candidates, so
        # they stay memory-mapped; the payload is read only for returned hits (filters use the
        # payload indexes, which stay in RAM). docs/scaling.md sizes RAM on that basis.
        self.client.create_collection(
            location,
            vectors_config=models.VectorParams(size=spec.dim, distance=distance, on_disk=spec.quantized),
            shard_number=self.settings.shard_number,
            replication_factor=self.settings.replication_factor,
            write_consistency_factor=self.settings.write_consistency_factor,
            on_disk_payload=True,
            hnsw_config=models.HnswConfigDiff(
                m=spec.hnsw_m,
                ef_construct=spec.hnsw_ef_construct,
                full_scan_threshold=spec.full_scan_threshold_kb,
                payload_m=spec.payload_m,
            ),
            quantization_config=_quantization(spec),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0),  # defer HNSW
            metadata={SPEC_KEY: spec.model_dump(mode="json")},
        )
        for field, kind in PAYLOAD_FIELDS.items():
            self.client.create_payload_index(location, field, field_schema=PAYLOAD_SCHEMAS[kind], wait=True)
        self._specs[location] = spec
        log.info("created collection %s (dim=%d, %s)", location, spec.dim, spec.quantization)

    def _write(self, name: str, spec: IndexSpec, items: ItemBatch, bar: Any) -> None:
        for chunk in items.chunks():
            batch = models.Batch(
                ids=[int(i) for i in chunk.ids],
                vectors=spec.centred(chunk.vectors).tolist(),
                payloads=[chunk.payload(row) for row in range(len(chunk))],
            )
            self.client.upsert(name, points=batch, wait=True)
            bar.update(len(chunk))

    def finish(self, location: str) -> None:
        name = self._resolve(location)
        self.client.update_collection(
            name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=INDEXING_THRESHOLD_KB)
        )
        deadline = time.monotonic() + self.settings.indexing_wait_s
        while (info := self.client.get_collection(name)).status != models.CollectionStatus.GREEN:
            if info.status == models.CollectionStatus.RED:
                raise VersionStateError(f"index version {name}: collection is red while indexing")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"index version {name}: HNSW build exceeded {self.settings.indexing_wait_s}s"
                )
            time.sleep(POLL_S)
        log.info("built %s: %s points, %s indexed", name, info.points_count, info.indexed_vectors_count)

    def _version(self, location: str | None) -> tuple[str, str]:
        name = self._resolve(location)
        return name, name

    def _spec(self, name: str) -> IndexSpec:
        return self.spec(name)

    def _query_target(self, location: str | None) -> tuple[str, IndexSpec, str]:
        if location is None:  # the alias itself, so a promotion elsewhere is seen at once
            return self.settings.alias, self._cached_live_spec(), self.settings.alias
        return super()._query_target(location)

    def _query(self, name: str, query: list[float], plan: QueryPlan, *,
               with_payload: bool) -> Sequence[Any]:
        quantization = None if plan.rescore is None else models.QuantizationSearchParams(
            rescore=plan.rescore, oversampling=plan.oversampling)
        params = models.SearchParams(hnsw_ef=plan.hnsw_ef, exact=plan.exact, quantization=quantization,
                                     acorn=models.AcornSearchParams(enable=True) if plan.acorn else None)
        prefetch = None
        if len(plan.walks) > 1:  # one graph walk per category, merged by score
            prefetch = [models.Prefetch(query=query, filter=server_filter(w), params=params, limit=plan.limit)
                        for w in plan.walks]
        return self.client.query_points(
            name,
            query=query,
            prefetch=prefetch,
            query_filter=server_filter(plan.walks[0]) if prefetch is None else None,
            search_params=params,
            limit=plan.limit,
            with_payload=with_payload,
        ).points

    def _existing(self, name: str, ids: list[int]) -> set[int]:
        return {int(r.id) for r in self.client.retrieve(name, ids, with_payload=False)}

    def _set_stock(self, name: str, by_value: Mapping[int, list[int]]) -> None:
        operations = [
            models.SetPayloadOperation(set_payload=models.SetPayload(payload={"stock": q}, points=group))  # type: ignore[arg-type]
            for q, group in by_value.items()
        ]
        self.client.batch_update_points(name, operations, wait=True)

    def count(self, *, location: str | None = None) -> int:
        return int(self.client.count(self._resolve(location), exact=True).count)

    def stats(self, *, location: str | None = None) -> dict[str, int]:
        info = self.client.get_collection(self._resolve(location))
        return {
            "points": info.points_count or 0,
            "indexed_vectors": info.indexed_vectors_count or 0,
            "segments": info.segments_count,
        }

    def spec(self, location: str | None = None) -> IndexSpec:
        name = self._resolve(location)
        spec = self._specs.get(name) if location is not None else None  # the alias may have moved
        if spec is None:  # read (again): not cached, or released meanwhile
            metadata = self.client.get_collection(name).config.metadata or {}
            if SPEC_KEY not in metadata:
                raise UnknownVersionError(f"index version {name}: collection has no {SPEC_KEY} metadata")
            spec = self._specs[name] = IndexSpec.model_validate(metadata[SPEC_KEY])
        return spec

    def _cached_live_spec(self) -> IndexSpec:
        # Saves three round trips per query; the data itself is always read through the alias.
        now = time.monotonic()
        if self._live_spec is None or now - self._live_spec[0] > LIVE_SPEC_TTL_S:
            self._live_spec = (now, self.spec(None))
        return self._live_spec[1]

    def activate(self, location: str) -> None:
        name = self._resolve(location)
        alias = self.settings.alias
        operations: list[models.AliasOperations] = []
        if self.live_location() is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        create = models.CreateAlias(collection_name=name, alias_name=alias)
        operations.append(models.CreateAliasOperation(create_alias=create))
        self.client.update_collection_aliases(change_aliases_operations=operations)  # one atomic change
        self._live_spec = None
        log.info("alias %s now names %s", alias, name)

    def live_location(self) -> str | None:
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.settings.alias:
                return alias.collection_name
        return None

    def drop(self, location: str) -> None:
        if self.live_location() == location:
            raise VersionStateError(f"index version {location}: is live, promote another first")
        self.client.delete_collection(location)
        self._specs.pop(location, None)
        log.info("dropped collection %s", location)

    def release(self, location: str) -> None:
        """Forget the settings read of `location` (the server holds the collection; this client
        holds no handle to it): a version loaded again reads them again."""
        self._specs.pop(location, None)

    def close(self) -> None:
        self.client.close()
