"""The one way to open an index backend: callers never import a backend module themselves."""

from __future__ import annotations

from index.base import IndexBackend
from index.config import EdgeSettings, IndexSettings


def open_backend(settings: IndexSettings | None = None) -> IndexBackend:
    """Open the backend `settings` describe (imports only that backend's client); default Edge."""
    settings = settings or EdgeSettings()
    if settings.backend == "edge":
        from index.edge import EdgeBackend

        return EdgeBackend(settings)
    from index.server import ServerBackend

    return ServerBackend(settings)
