"""`twotower versions`: list, promote, roll back and prune the index versions of a data directory.
`twotower retrain` runs the retraining job (which prunes after promoting) in this process.

Promotion and rollback are the registry's own transactions (the previous live version keeps
serving on any failure); a running service picks the new live version up at its next poll.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from index.model_store import ModelStore, prune_versions
from index.registry import IndexVersion, Registry
from pipelines.defs.resources import PipelineSettings, build_resources


@contextmanager
def open_registry(home: Path) -> Iterator[Registry]:
    """The registry of `home` with its index backend, as the pipelines open it (TWOTOWER_* apply)."""
    with build_resources(PipelineSettings(data_dir=home))["registry"].open() as registry:
        yield registry


def describe(version: IndexVersion) -> dict[str, Any]:
    """One version as a JSON-ready row."""
    return {"id": version.id, "status": version.status, "model_version": version.model_version_id,
            "items": version.item_count, "backend": version.backend,
            "created_at": version.created_at.isoformat() if version.created_at else None,
            "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None,
            "location": version.location, "error": version.error}


def list_versions(registry: Registry) -> list[dict[str, Any]]:
    target = registry.rollback_target()
    return [{**describe(v), "rollback_target": target is not None and v.id == target.id}
            for v in registry.versions()]


def promote(registry: Registry, version_id: int) -> dict[str, Any]:
    return describe(registry.promote(version_id))


def rollback(registry: Registry) -> dict[str, Any]:
    return describe(registry.rollback())


def prune(registry: Registry, keep: int, home: Path) -> dict[str, Any]:
    """Old index versions deleted, then the model versions (directories, embeddings) none uses."""
    pruned = prune_versions(registry, ModelStore(home), keep)
    return {"deleted": pruned["index_versions"], "deleted_models": pruned["model_versions"],
            "kept": [v.id for v in registry.versions()]}
