"""Blocking calls off the event loop, each with a deadline: a slow dependency costs a 503, not
the whole server (health and every other endpoint keep answering)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from services.engine import ServiceUnavailable

R = TypeVar("R")


async def off_loop(call: Callable[..., R], *args: object, timeout_s: float, waits_on: str) -> R:
    """`call(*args)` in a worker thread; past `timeout_s` a 503 naming what it `waits_on`.

    The thread cannot be cancelled: it finishes on its own (each dependency has a timeout of
    its own: SQLite's lock wait, Redis's socket timeouts), its answer discarded.
    """
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(functools.partial(call, *args),
                                                  abandon_on_cancel=True)
    except TimeoutError:
        raise ServiceUnavailable(f"{waits_on}: no answer within {timeout_s:g}s") from None
