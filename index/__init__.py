"""The item vector index: one interface over Qdrant Edge and a Qdrant server, opened by config."""

from index.base import Hit, IndexBackend, ItemBatch
from index.builder import build_version
from index.config import IndexSettings, IndexSpec, SearchFilters
from index.errors import (
    InvalidItemsError,
    InvalidQueryError,
    NoLiveVersionError,
    UnknownItemError,
    UnknownVersionError,
    VectorIndexError,
    VersionStateError,
)
from index.factory import open_backend

__all__ = [
    "Hit",
    "IndexBackend",
    "IndexSettings",
    "IndexSpec",
    "InvalidItemsError",
    "InvalidQueryError",
    "ItemBatch",
    "NoLiveVersionError",
    "SearchFilters",
    "UnknownItemError",
    "UnknownVersionError",
    "VectorIndexError",
    "VersionStateError",
    "build_version",
    "open_backend",
]
