"""Build one index version end to end: register, create, upsert, build HNSW, mark ready (or failed).

The live version is never touched while building: the new version gets its own shard directory
or collection, and only `Registry.promote` (here when `promote=True`) switches the live pointer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from index.base import IndexBackend, ItemBatch
from index.config import IndexSpec
from index.errors import VersionStateError

if TYPE_CHECKING:  # the registry imports index.errors; avoid a runtime cycle
    from index.registry import IndexVersion, Registry

log = logging.getLogger(__name__)


def build_version(
    items: ItemBatch,
    *,
    registry: Registry,
    spec: IndexSpec,
    model_version_id: int,
    promote: bool = False,
    metrics: dict[str, Any] | None = None,
) -> IndexVersion:
    """Build a new index version from `items` in `registry.backend`; optionally promote it.

    Any error (bad items, a backend failure, Ctrl-C) marks the version `failed` and re-raises;
    a killed process is marked `failed` by the next `Registry` open.
    """
    backend = registry.backend
    if not isinstance(backend, IndexBackend):
        raise TypeError("build_version needs a Registry opened with backend=<an IndexBackend>")
    registry.fail_stale_builds()
    spec = spec.for_items(len(items))  # the query beam, when not given, from the catalogue's size
    version = registry.register_build(model_version_id=model_version_id, config=spec.model_dump(mode="json"))
    location = version.location
    assert location is not None  # the backend always assigns one
    started = time.perf_counter()
    try:
        items.validate(dim=spec.dim, version=f"{version.id} ({location})")
        if spec.centre is None and spec.distance == "dot" and len(items):
            spec = spec.model_copy(update={"centre": items.vectors.mean(axis=0).tolist()})
        backend.create(location, spec)
        backend.upsert(items, location=location)
        backend.finish(location)
        count = backend.count(location=location)
        if count != len(items):
            raise VersionStateError(f"index version {version.id}: holds {count} items, expected {len(items)}")
    except BaseException as exc:
        registry.mark_failed(version.id, f"{type(exc).__name__}: {exc}")
        raise
    build_s = time.perf_counter() - started
    stats = backend.stats(location=location)
    version = registry.mark_ready(
        version.id,
        item_count=count,
        metrics={"build_seconds": round(build_s, 3), **stats, **(metrics or {})},
    )
    log.info("index version %d ready: %d items in %.1fs", version.id, count, build_s)
    return registry.promote(version.id) if promote else version
