"""`POST /v1/recommendations`: top-k items for a user, with filters and session events."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.api.deps import KeyFirstRoute, can_read, live_engine
from services.api.errors import documented
from services.api.offload import off_loop
from services.engine import Engine
from services.schemas import RecommendationRequest, RecommendationResponse

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"], dependencies=[can_read],
                   route_class=KeyFirstRoute, responses=documented(400, 401, 413, 422, 503))


@router.post("", summary="Recommend items for a user", response_model=RecommendationResponse)
async def recommend(body: RecommendationRequest, request: Request,
                    engine: Engine = live_engine) -> Response:
    """Unknown session or excluded item ids are ignored and listed in `warnings`."""
    # A worker thread: the online store read blocks. The engine already built a validated
    # response model, so it is serialised once, not validated again.
    answer = await off_loop(engine.recommend, body, waits_on="online store or index",
                            timeout_s=request.app.state.settings.request_timeout_s)
    return Response(answer.model_dump_json(), media_type="application/json")
