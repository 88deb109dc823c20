"""The one way to open an index backend: callers never import a backend module themselves."""

from __future__ import annotations

from index.base import IndexBackend
from index.config import IndexSettings


def open_backend(settings: IndexSettings | None = None) -> IndexBackend:
    """Open the backend named by `settings.backend` (imports only that backend's client)."""
    settings = settings or IndexSettings()
    if settings.backend == "edge":
        from index.edge import EdgeBackend

        return EdgeBackend(settings)
    if settings.backend == "server":
        from index.server import ServerBackend

        return ServerBackend(settings)
    raise ValueError(f"backend={settings.backend!r}: expected 'edge' or 'server'")
