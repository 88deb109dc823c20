"""The engine's failures the API maps to status codes (503, 404 and 422)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


class ServiceUnavailable(RuntimeError):
    """A dependency (live version, index, online store) cannot answer; the message says which."""


class UnknownItem(LookupError):
    """An item id the live catalogue does not hold."""


class KeyConflict(ValueError):
    """An idempotency key already used for a different write."""


def unavailable(what: str, call: Callable[..., R], *args: object,
                keep: tuple[type[Exception], ...] = ()) -> R:
    """`call(*args)`, its failure a 503 naming `what` (the dependency it waits on); errors in
    `keep`, and a 503 that names another dependency, pass unchanged."""
    try:
        return call(*args)
    except (ServiceUnavailable, *keep):
        raise
    except Exception as exc:
        raise ServiceUnavailable(f"{what} unavailable: {exc}") from exc


def online_call(call: Callable[..., R], *args: object) -> R:
    """An online-store read or write; its failure (Redis down, file gone) is a 503 naming it."""
    return unavailable("online store", call, *args)
