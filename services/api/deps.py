"""Request dependencies: the engine, and API-key checks per scope (read, write)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from services.engine import Engine

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="A read key (read endpoints) or a write key (every endpoint).")


# Dependencies are `async def`: they do no I/O, and FastAPI would run a plain `def` in its threadpool.
async def _engine(request: Request) -> Engine:
    return request.app.state.engine


live_engine = Depends(_engine)  # a route's `engine: Engine = live_engine`: the app's one engine


def _known(key: str, keys: list[SecretStr]) -> bool:
    # compare_digest against every key: the time taken says nothing about which key is near
    return any([hmac.compare_digest(key.encode(), k.get_secret_value().encode()) for k in keys])


async def _read(request: Request, key: Annotated[str | None, Security(API_KEY)]) -> None:
    settings = request.app.state.settings
    if key is None or not _known(key, settings.read_keys + settings.write_keys):
        raise HTTPException(401, "missing or unknown API key (send it in the X-API-Key header)",
                            headers={"WWW-Authenticate": "APIKey"})


async def _write(request: Request, key: Annotated[str | None, Security(API_KEY)]) -> None:
    await _read(request, key)
    if not _known(key or "", request.app.state.settings.write_keys):
        raise HTTPException(403, "this API key may only read; this endpoint needs a write key")


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="One per write, reused on its retries: the write is logged and applied once, and "
                "a retry gets the first answer. Without it every call is a new write.")]

can_read = Depends(_read)
can_write = Depends(_write)
