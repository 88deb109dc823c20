"""The index and registry error tree: one base, then one class per kind of mistake."""

from __future__ import annotations


class VectorIndexError(Exception):
    """Base of every error raised by `index` and `index.registry`."""


class InvalidItemsError(VectorIndexError, ValueError):
    """Items that cannot go into an index version (names the item id, row and version)."""


class UnknownVersionError(VectorIndexError, LookupError):
    """A version id or location that the registry or the backend does not know."""


class VersionStateError(VectorIndexError):
    """An operation not allowed in the version's current status (e.g. promoting a failed build)."""


class NoLiveVersionError(VersionStateError):
    """A search or update on the live version while nothing is live."""


class InvalidQueryError(VectorIndexError, ValueError):
    """A query vector or filter the version cannot answer (wrong dimension, NaN)."""


class UnknownItemError(VectorIndexError, LookupError):
    """An update that names item ids the version does not hold."""
