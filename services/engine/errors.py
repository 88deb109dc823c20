"""The engine's two failures the API maps to status codes (503 and 404)."""

from __future__ import annotations


class ServiceUnavailable(RuntimeError):
    """A dependency (live version, index, online store) cannot answer; the message says which."""


class UnknownItem(LookupError):
    """An item id the live catalogue does not hold."""
