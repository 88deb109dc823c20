"""Every error status as one schema (`ErrorResponse`): the handlers, and each route's documentation.

Malformed input is a 422 whose `detail` names each bad field (and `errors` lists them); a body
FastAPI cannot decode is a 400; an unknown item is a 404; a dependency that cannot answer (no live
version, index or online store down or slow) is a 503 with the reason and `Retry-After`, and the
next request tries again, so serving resumes when the dependency returns. Any other exception
is a 500 in the same schema, its cause in the server's log (`InternalErrors`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.engine import KeyConflict, ServiceUnavailable, UnknownItem
from services.schemas import ErrorResponse, FieldError

log = logging.getLogger(__name__)

RETRY_AFTER_S = "1"  # a 503 is worth retrying soon: versions load and dependencies restart

_DESCRIPTIONS = {
    400: "The body could not be decoded.",
    401: "Missing or unknown API key.",
    403: "A read key on an endpoint that needs a write key.",
    404: "An item id the catalogue does not hold.",
    413: "The body is larger than the service accepts (TWOTOWER_MAX_BODY_BYTES).",
    422: "Malformed input: `detail` and `errors` name each bad field.",
    503: "A dependency (live version, online store, index) cannot answer now; retry after the "
         "`Retry-After` seconds.",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "APIKey"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}},
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these error statuses."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status],
                     **({"headers": _HEADERS[status]} if status in _HEADERS else {})}
            for status in statuses}


def _error(status: int, detail: str, errors: list[FieldError] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [FieldError(field=_field(e["loc"]), message=e["msg"]) for e in exc.errors()]
    return _error(422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, str(exc), headers={"Retry-After": RETRY_AFTER_S})


async def _unknown(request: Request, exc: Exception) -> JSONResponse:
    return _error(404, str(exc))


async def _key_conflict(request: Request, exc: Exception) -> JSONResponse:
    field = "header.Idempotency-Key"
    return _error(422, f"{field}: {exc}", [FieldError(field=field, message=str(exc))])


def add_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(UnknownItem, _unknown)
    app.add_exception_handler(KeyConflict, _key_conflict)


class InternalErrors:
    """An unexpected exception as a 500 in the error schema, logged with its traceback.

    Starlette answers it too, but then re-raises, and uvicorn closes a connection whose app raised:
    a client's kept-alive connection would be dropped after every 500. Here the exception ends
    with the answer, so the connection serves the next request. An exception after the response
    has started is raised on: closing the connection is the only way to end that response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            log.exception("%s %s: unexpected error", scope["method"], scope["path"])
            await _error(500, "internal error; the server's log has its cause")(scope, receive, send)
