"""The item vector index: one interface over Qdrant Edge and a Qdrant server, opened by config."""

from index.base import Hit, IndexBackend, ItemBatch
from index.builder import build_version
from index.config import (
    EdgeSettings,
    IndexSettings,
    IndexSpec,
    SearchFilters,
    ServerSettings,
    hnsw_ef_for,
    parse_index_settings,
)
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
    "EdgeSettings",
    "Hit",
    "IndexBackend",
    "IndexSettings",
    "IndexSpec",
    "InvalidItemsError",
    "InvalidQueryError",
    "ItemBatch",
    "NoLiveVersionError",
    "SearchFilters",
    "ServerSettings",
    "UnknownItemError",
    "UnknownVersionError",
    "VectorIndexError",
    "VersionStateError",
    "build_version",
    "hnsw_ef_for",
    "open_backend",
    "parse_index_settings",
]
