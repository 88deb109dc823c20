"""`POST /v1/interactions`: a real-time event, logged, then written to the online store for the next
request."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import IdempotencyKey, KeyFirstRoute, can_write, live_engine
from services.api.errors import documented
from services.engine import Engine
from services.schemas import InteractionRequest, InteractionResponse

router = APIRouter(prefix="/v1/interactions", tags=["interactions"], dependencies=[can_write],
                   route_class=KeyFirstRoute, responses=documented(400, 401, 403, 404, 413, 422, 503))


@router.post("", status_code=201, summary="Record an interaction")
def record_interaction(body: InteractionRequest, key: IdempotencyKey = None,
                       engine: Engine = live_engine) -> InteractionResponse:
    """Durable (in the event log) before it answers; a plain `def`: it waits on the log's fsync."""
    return engine.record_interaction(body.user_id, body.item_id, body.ts, key=key)
