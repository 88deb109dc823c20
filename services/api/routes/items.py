"""`/v1/items/{item_id}`: similar items (read), stock and content updates (write).

The writes are plain `def`: they wait on the event log, the online store and the index's disk, so
FastAPI runs them in its threadpool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.api.deps import IdempotencyKey, can_read, can_write, live_engine
from services.engine import Engine
from services.schemas import (
    MAX_ID,
    MAX_K,
    ItemResponse,
    ItemUpsert,
    SimilarItemsResponse,
    StockResponse,
    StockUpdate,
)

router = APIRouter(prefix="/v1/items", tags=["items"])
ItemPath = Annotated[int, Path(ge=0, le=MAX_ID, description="Catalogue item id.")]


@router.get("/{item_id}/similar", dependencies=[can_read], summary="Items like this one")
async def similar_items(item_id: ItemPath, engine: Engine = live_engine,
                        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                        in_stock_only: bool = True) -> SimilarItemsResponse:
    """CPU-bound and in memory, like recommendations: it runs on the event loop."""
    return engine.similar(item_id, k=k, in_stock_only=in_stock_only)


@router.put("/{item_id}/stock", dependencies=[can_write], summary="Set an item's stock")
def set_stock(item_id: ItemPath, body: StockUpdate, key: IdempotencyKey = None,
              engine: Engine = live_engine) -> StockResponse:
    """Logged, then set in the online store and the live index payload; the next request sees it."""
    return engine.set_stock(item_id, body.quantity, key=key)


@router.put("/{item_id}", dependencies=[can_write], summary="Add or replace an item from content")
def upsert_item(item_id: ItemPath, body: ItemUpsert, key: IdempotencyKey = None,
                engine: Engine = live_engine) -> ItemResponse:
    """Logged, then embedded with the live item tower (cold start) and searchable at once."""
    return engine.upsert_item(item_id, body, key=key)
