"""Prometheus metrics of one app: requests by route and status, latency by route and by stage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Sub-millisecond to a second: the service's targets are a few milliseconds.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


PREFIX = "twotower_"  # the service's metrics; Feast keeps its own in the same files


class Metrics:
    """The collectors, in a registry of their own.

    Importing Feast puts every process in prometheus_client's multiprocess mode (values in files
    of a folder), so apps sharing one process also share their values. With `shared`, the folder
    every worker of one server writes (`twotower serve --workers`), `render` sums the values over
    the workers, so whichever worker answers speaks for the whole server.
    """

    def __init__(self, shared: Path | None = None) -> None:
        self.shared = shared
        self.registry = CollectorRegistry()
        self.requests = Counter("twotower_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("twotower_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("twotower_stage_seconds", "Recommendation latency by stage",
                                ["stage"], buckets=BUCKETS, registry=self.registry)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry if self.shared is None else _Workers(self.shared))


class _Workers:
    """The service's metrics summed over the workers' files (not Feast's, kept there too)."""

    def __init__(self, folder: Path) -> None:
        self.files = MultiProcessCollector(None, path=str(folder))

    def collect(self) -> Iterator[Metric]:
        return (m for m in self.files.collect() if m.name.startswith(PREFIX))


class MetricsMiddleware:
    """Counts and times every request by its route template; tags responses with X-Request-ID."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        sent = dict(scope["headers"]).get(b"x-request-id", b"")[:64]
        request_id = sent or uuid.uuid4().hex.encode()

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
