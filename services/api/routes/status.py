"""Health (open, for probes), version (read key) and Prometheus metrics (open, for scrapers)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from feature_repo.tables import dataset_record
from services.api.deps import KeyFirstRoute, can_read, live_engine
from services.api.errors import documented
from services.engine import Engine
from services.schemas import Health, VersionInfo

router = APIRouter(tags=["status"], route_class=KeyFirstRoute)


@router.get("/v1/health", summary="Whether the service can answer, and each dependency's state",
            responses={503: {"model": Health, "description": "Requests cannot be answered now; "
                             "`reason` and `dependencies` say why."}})
def health(response: Response, engine: Engine = live_engine) -> Health:
    """200 when `ok` or `degraded` (answering, e.g. without the registry, or with another
    dataset's features), 503 when `unavailable`.

    Plain `def`: the probes wait (each with a timeout) in threads, off the event loop."""
    status = engine.health(features=dataset_record(Path(engine.store.repo_path) / "data"))
    if status.status == "unavailable":
        response.status_code = 503
    return status


@router.get("/v1/version", dependencies=[can_read], summary="The live model and index version",
            responses=documented(401, 503))
async def version(engine: Engine = live_engine) -> VersionInfo:
    """In memory: the loaded snapshot's versions."""
    return engine.version()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

