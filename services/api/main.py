"""Build the FastAPI app: settings -> engine (Feast store, index backend, registry) -> routers.

    uvicorn --factory services.api.main:create_app     (or `twotower serve`)

Errors: malformed input is a 422 whose `detail` names each bad field; an unknown item is a 404; a
dependency that cannot answer (no live version, index, online store or event log down) is a 503
with the reason, and the next request tries again, so serving resumes when the dependency returns.
A write is in the event log before it answers; an `Idempotency-Key` reused for another write is a
422 naming the header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from feature_repo.store import monotonic_online_store, open_store
from index import open_backend
from index.registry import Registry
from services.api.config import Settings
from services.api.metrics import Metrics, MetricsMiddleware
from services.api.routes import interactions, items, recommendations, status
from services.engine import Engine, KeyConflict, ServiceUnavailable, UnknownItem

RETRY_AFTER_S = "1"  # a 503 is worth retrying soon: versions load and dependencies restart


def open_engine(settings: Settings) -> Engine:
    """The engine over the configured Feast repository, index backend and registry."""
    store = open_store(settings.feature_store())
    configured = store.config.online_store.type
    if configured != settings.online_store:
        raise ValueError(f"online_store={settings.online_store!r}, but the feature repository at "
                         f"{settings.feature_store().repo_dir} uses {configured!r}; render it "
                         "again with `twotower features` or fix TWOTOWER_ONLINE_STORE")
    monotonic_online_store(store)  # a repository applied before the trigger existed gets it now
    return Engine(store=store, backend=open_backend(settings.index_settings()),
                       registry=Registry(settings.registry_url, data_dir=settings.data_dir),
                       log=settings.event_log(), reload_interval_s=settings.reload_interval_s,
                       rerank_candidates=settings.rerank_candidates)


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}"


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


async def _unknown(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _key_conflict(request: Request, exc: Exception) -> JSONResponse:
    field = "header.Idempotency-Key"
    return JSONResponse({"detail": f"{field}: {exc}", "errors": [{"field": field, "message": str(exc)}]},
                        status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; the engine is opened at startup and closed at shutdown."""
    settings = settings or Settings()  # type: ignore[call-arg]  # keys come from the environment
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_engine(settings)
        engine.on_stage.append(metrics.observe_stage)
        engine.start()
        app.state.engine = engine
        try:
            yield
        finally:
            engine.close()
            engine.backend.close()
            engine.registry.close()

    app = FastAPI(title="twotower", summary="Personalised recommendations from a two-tower index",
                  version="1", lifespan=lifespan, generate_unique_id_function=_operation_id)
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(UnknownItem, _unknown)
    app.add_exception_handler(KeyConflict, _key_conflict)
    for module in (recommendations, items, interactions, status):
        app.include_router(module.router)
    return app
