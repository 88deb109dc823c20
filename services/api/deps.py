"""Request dependencies: the engine, and API-key checks per scope (read, write).

The key is checked before the body is read (`KeyFirstRoute`), so a caller without a key never
gets its body parsed: `can_read` / `can_write` declare a route's scope (and the OpenAPI security
scheme), and the route class enforces it first thing, then the body size limit (413).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import SecretStr
from starlette.types import Message

from services.engine import Engine

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="A read key (read endpoints) or a write key (every endpoint).")
Scope = Literal["read", "write"]


# Dependencies are `async def`: they do no I/O, and FastAPI would run a plain `def` in its threadpool.
async def _engine(request: Request) -> Engine:
    return request.app.state.engine


live_engine = Depends(_engine)  # a route's `engine: Engine = live_engine`: the app's one engine


async def _read(key: Annotated[str | None, Security(API_KEY)]) -> None:
    """Declares the read scope; `KeyFirstRoute` has checked the key before the body was read."""


async def _write(key: Annotated[str | None, Security(API_KEY)]) -> None:
    """Declares the write scope; `KeyFirstRoute` has checked the key before the body was read."""


can_read = Depends(_read)
can_write = Depends(_write)
_SCOPES: dict[Callable[..., Any], Scope] = {_read: "read", _write: "write"}


def _known(key: str, keys: list[SecretStr]) -> bool:
    # compare_digest against every key: the time taken says nothing about which key is near
    return any([hmac.compare_digest(key.encode(), k.get_secret_value().encode()) for k in keys])


def authorize(request: Request, scope: Scope) -> None:
    """401 without a known key, 403 for a read key where a write key is needed."""
    settings, key = request.app.state.settings, request.headers.get(API_KEY.model.name)
    if key is None or not _known(key, settings.read_keys + settings.write_keys):
        raise HTTPException(401, "missing or unknown API key (send it in the X-API-Key header)",
                            headers={"WWW-Authenticate": "APIKey"})
    if scope == "write" and not _known(key, settings.write_keys):
        raise HTTPException(403, "this API key may only read; this endpoint needs a write key")


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="One per write, reused on its retries: the write is logged and applied once, and "
                "a retry gets the first answer. Without it every call is a new write.")]


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the body is larger than {limit} bytes")


def limit_body(request: Request) -> Request:
    """The request, its body refused (413) above `max_body_bytes`: by its Content-Length at
    once, or, sent in chunks, as soon as the bytes read pass the limit."""
    limit: int = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _too_large(limit)
        return message

    return Request(request.scope, receive)


class KeyFirstRoute(APIRoute):
    """A route that checks its API key scope, then the body's size, before FastAPI reads the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = {_SCOPES[d.call] for d in self.dependant.dependencies if d.call in _SCOPES}
        scope: Scope | None = "write" if "write" in scopes else "read" if scopes else None

        async def key_first(request: Request) -> Response:
            if scope is not None:
                authorize(request, scope)
            return await handler(limit_body(request))

        return key_first
