"""The request engine: the live version (`live`), its item cache (`item_cache`), and the reads and
writes the API serves (`engine`)."""

from services.engine.engine import STAGES, Engine
from services.engine.errors import KeyConflict, ServiceUnavailable, UnknownItem
from services.engine.item_cache import ItemCache, ItemColumns
from services.engine.live import LiveVersion, Snapshot, load_ranker

__all__ = [
    "STAGES",
    "Engine",
    "ItemCache",
    "ItemColumns",
    "KeyConflict",
    "LiveVersion",
    "ServiceUnavailable",
    "Snapshot",
    "UnknownItem",
    "load_ranker",
]
