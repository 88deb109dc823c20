"""`/v1/items/{item_id}`: similar items (read), stock and content updates (write).

The writes are plain `def`: they wait on the event log, the online store and the index's disk, so
FastAPI runs them in its threadpool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.api.deps import IdempotencyKey, KeyFirstRoute, can_read, can_write, live_engine
from services.api.errors import documented
from services.api.offload import off_loop
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

router = APIRouter(prefix="/v1/items", tags=["items"], route_class=KeyFirstRoute)
ItemPath = Annotated[int, Path(ge=0, le=MAX_ID, description="Catalogue item id.")]


@router.get("/{item_id}/similar", dependencies=[can_read], summary="Items like this one",
            responses=documented(401, 404, 422, 503))
async def similar_items(item_id: ItemPath, request: Request, engine: Engine = live_engine,
                        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                        in_stock_only: bool = True) -> SimilarItemsResponse:
    """An unknown item is a 404 (a new one is read from the online store: a worker thread)."""
    return await off_loop(lambda: engine.similar(item_id, k=k, in_stock_only=in_stock_only),
                          waits_on="online store or index",
                          timeout_s=request.app.state.settings.request_timeout_s)


@router.put("/{item_id}/stock", dependencies=[can_write], summary="Set an item's stock",
            responses=documented(400, 401, 403, 404, 413, 422, 503))
def set_stock(item_id: ItemPath, body: StockUpdate, key: IdempotencyKey = None,
              engine: Engine = live_engine) -> StockResponse:
    """Logged, then set in the online store and the live index payload; the next request sees it.
    An item the live index lacks yet answers `indexed: false`: its quantity reaches the index
    with the item."""
    return engine.set_stock(item_id, body.quantity, key=key)


@router.put("/{item_id}", dependencies=[can_write], summary="Add or replace an item from content",
            responses=documented(400, 401, 403, 413, 422, 503))
def upsert_item(item_id: ItemPath, body: ItemUpsert, key: IdempotencyKey = None,
                engine: Engine = live_engine) -> ItemResponse:
    """Logged, then embedded with the live item tower (cold start) and searchable at once."""
    return engine.upsert_item(item_id, body, key=key)
