"""The item vector index: one interface over Qdrant Edge and a Qdrant server, opened by config."""

from pipelines.index.base import Hit, IndexBackend, ItemBatch
from pipelines.index.builder import build_version
from pipelines.index.config import IndexSettings, IndexSpec, SearchFilters
from pipelines.index.errors import (
    InvalidItemsError,
    InvalidQueryError,
    NoLiveVersionError,
    UnknownItemError,
    UnknownVersionError,
    VectorIndexError,
    VersionStateError,
)
from pipelines.index.factory import open_backend
from pipelines.index.retrieval import index_retrieval

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
    "index_retrieval",
    "open_backend",
]
