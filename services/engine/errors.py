"""The engine's failures the API maps to status codes (503, 404 and 422)."""

from __future__ import annotations


class ServiceUnavailable(RuntimeError):
    """A dependency (live version, index, online store) cannot answer; the message says which."""


class UnknownItem(LookupError):
    """An item id the live catalogue does not hold."""


class KeyConflict(ValueError):
    """An idempotency key already used for a different write."""
