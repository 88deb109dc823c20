"""Build the FastAPI app: settings -> engine (Feast store, index backend, registry) -> routers.

    uvicorn --factory services.api.main:create_app     (or `twotower serve`)

Errors: one schema for every error status (`services.api.errors`). The API key is checked before
the body is read (`deps.KeyFirstRoute`); a body above `max_body_bytes` is a 413. A dependency that
cannot answer is a 503 with the reason; any other error is a 500 that keeps the connection open. A
write is in the event log before it answers; an `Idempotency-Key` reused for another write is a
422 naming the header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from feature_repo.store import monotonic_online_store, open_store
from index import open_backend
from index.registry import Registry
from services.api.config import Settings
from services.api.errors import InternalErrors, add_handlers
from services.api.metrics import Metrics, MetricsMiddleware
from services.api.routes import interactions, items, recommendations, status
from services.engine import Engine
from services.feast_provider import limit_waits


def open_engine(settings: Settings) -> Engine:
    """The engine over the configured Feast repository, index backend and registry."""
    store = open_store(settings.feature_store())
    configured = store.config.online_store.type
    if configured != settings.online_store:
        raise ValueError(f"online_store={settings.online_store!r}, but the feature repository at "
                         f"{settings.feature_store().repo_dir} uses {configured!r}; render it "
                         "again with `twotower features` or fix TWOTOWER_ONLINE_STORE")
    limit_waits(store, settings.dependency_timeout_s)
    monotonic_online_store(store)  # a repository applied before the trigger existed gets it now
    backend = open_backend(settings.index_settings())
    return Engine(store=store, backend=backend,
                  registry=Registry(settings.registry_url, data_dir=settings.data_dir, backend=backend,
                                    timeout_s=settings.dependency_timeout_s),
                  log=settings.event_log(), reload_interval_s=settings.reload_interval_s,
                  replay_interval_s=settings.replay_interval_s,
                  popularity_interval_s=settings.popularity_interval_s,
                  rerank_candidates=settings.rerank_candidates,
                  probe_timeout_s=settings.dependency_timeout_s,
                  new_item_slot=settings.new_item_slot)


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; the engine is opened at startup and closed at shutdown."""
    settings = settings or Settings()  # type: ignore[call-arg]  # keys come from the environment
    metrics = Metrics(settings.metrics_dir)

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
    app.add_middleware(InternalErrors)  # inside the metrics: a 500 is counted and tagged
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    add_handlers(app)
    for module in (recommendations, items, interactions, status):
        app.include_router(module.router)
    return app
