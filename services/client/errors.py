"""The client's errors: one base, connection and timeout errors, then one status error per code.

`error_for_status` is the single place a status code becomes an error class.
"""

from __future__ import annotations


class RecommenderError(Exception):
    """Base of every error the client raises."""


class APIConnectionError(RecommenderError):
    """The service could not be reached (after the retries)."""


class APITimeoutError(APIConnectionError):
    """The service did not answer within the timeout."""


class APIStatusError(RecommenderError):
    """The service answered with an error status; `message` is the server's own explanation."""

    def __init__(self, message: str, *, status_code: int, body: object, request_id: str | None) -> None:
        super().__init__(f"{status_code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.message, self.status_code, self.body, self.request_id = message, status_code, body, request_id


class BadRequestError(APIStatusError):
    """400"""


class AuthenticationError(APIStatusError):
    """401: missing or unknown API key."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not call this endpoint (e.g. a read key on a write endpoint)."""


class NotFoundError(APIStatusError):
    """404: e.g. an item id the catalogue does not hold."""


class UnprocessableEntityError(APIStatusError):
    """422: malformed input; the message names each bad field."""


class RateLimitError(APIStatusError):
    """429"""


class InternalServerError(APIStatusError):
    """5xx"""


class ServiceUnavailableError(InternalServerError):
    """503: a dependency (live version, index, online store) cannot answer right now; or 502 /
    504 from a gateway in front of the service, which cannot reach it or had no answer in time."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 422: UnprocessableEntityError, 429: RateLimitError,
    502: ServiceUnavailableError, 503: ServiceUnavailableError, 504: ServiceUnavailableError,
}


def error_for_status(status_code: int, message: str, *, body: object,
                     request_id: str | None) -> APIStatusError:
    """The error for a status code (unlisted 5xx -> InternalServerError, other 4xx -> base)."""
    cls = _BY_STATUS.get(status_code) or (InternalServerError if status_code >= 500 else APIStatusError)
    return cls(message, status_code=status_code, body=body, request_id=request_id)
