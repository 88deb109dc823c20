"""The Python client of the recommendation service (httpx; shares `services.schemas`, no FastAPI)."""

from services.client.client import AsyncRecommenderClient, RecommenderClient
from services.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RecommenderError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncRecommenderClient",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RecommenderClient",
    "RecommenderError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
]
