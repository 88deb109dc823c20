"""Everything in the client that does no I/O: settings, requests, retry delays, parsing, errors.

`RecommenderClient` and `AsyncRecommenderClient` differ only in how they send and sleep.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from services.client.errors import APIConnectionError, APITimeoutError, error_for_status
from services.schemas import (
    Filters,
    Health,
    InteractionRequest,
    InteractionResponse,
    ItemResponse,
    ItemUpsert,
    RecommendationRequest,
    RecommendationResponse,
    SessionEvent,
    SimilarItemsResponse,
    StockResponse,
    StockUpdate,
    VersionInfo,
)

log = logging.getLogger("services.client")

ENV_URL = "TWOTOWER_URL"
ENV_API_KEY = "TWOTOWER_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 5.0  # a request takes milliseconds; seconds means the service is stuck
DEFAULT_MAX_RETRIES = 2  # 0 turns retries off
BACKOFF_INITIAL_S = 0.1  # first retry delay, doubled each attempt...
BACKOFF_MAX_S = 2.0  # ...up to this cap, with jitter
RETRY_AFTER_MAX_S = 10.0  # a server's Retry-After is honoured up to this
# The service is up but a dependency is not (yet): 503; or a gateway in front of it cannot reach
# it (502) or had no answer in time (504). Every call is safe to send again: a read changes
# nothing, and every write carries its Idempotency-Key (`write_key`).
RETRY_STATUSES = frozenset({502, 503, 504})
# The request never reached the application: safe to send again, even a write.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
# A read changes nothing, and a write carries its Idempotency-Key (the service applies it once),
# so any failure of the connection is retried: also a kept-alive connection the server dropped
# (reset while sending or reading), which may have carried the request.
READ_RETRY_ERRORS = (*RETRY_ERRORS, httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send and which model the answer parses into."""

    method: str
    path: str
    result: type[T]
    body: BaseModel | None = None
    params: Mapping[str, Any] | None = None
    accept: frozenset[int] = field(default=frozenset({200, 201}))
    key: str | None = None  # a write's Idempotency-Key: one per call, the same on every retry
    read: bool = False  # changes nothing on the server: every connection failure is retried

    def request(self) -> dict[str, Any]:
        """Keyword arguments of `httpx.Client.request` (the body serialised by pydantic's own
        JSON encoder: faster than a dict through the json module)."""
        if self.body is None:
            return {"method": self.method, "url": self.path, "params": self.params}
        headers = {"content-type": "application/json"}
        if self.key is not None:
            headers["Idempotency-Key"] = self.key
        return {"method": self.method, "url": self.path, "params": self.params,
                "content": self.body.model_dump_json(exclude_none=True), "headers": headers}


def write_key(key: str | None) -> str:
    """The caller's idempotency key, or a new one for this call."""
    return key or uuid.uuid4().hex


@dataclass(frozen=True)
class Retry:
    delay_s: float


def backoff(attempt: int, retry_after: str | None = None) -> float:
    """Seconds before retry `attempt` (0-based): exponential with jitter, or the server's wish."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX_S)
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    cap = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**attempt)
    return cap / 2 + random.uniform(0, cap / 2)


def _message(response: httpx.Response) -> tuple[str, object]:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase, response.text
    detail = body.get("detail") if isinstance(body, dict) else None
    return (detail if isinstance(detail, str) else str(detail or body)), body


class BaseClient:
    """Configuration and the I/O-free half of every call."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES,
                 connect_timeout_s: float | None = None) -> None:
        """`timeout_s` bounds each wait on the service; `connect_timeout_s` (default: the same)
        the wait for a connection, so a host that never answers fails fast and is retried."""
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries}: must be >= 0")
        self.base_url = base_url or os.environ.get(ENV_URL, DEFAULT_URL)
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s or timeout_s)
        key = api_key or os.environ.get(ENV_API_KEY)
        self.headers = {"X-API-Key": key} if key else {}

    # -- calls -----------------------------------------------------------------------------------
    @staticmethod
    def _recommend(user_id: int, k: int, filters: Filters | Mapping[str, Any] | None,
                   session: Iterable[SessionEvent | Mapping[str, Any] | int] | None
                   ) -> Call[RecommendationResponse]:
        events = [SessionEvent(item_id=e) if isinstance(e, int) else SessionEvent.model_validate(e)
                  for e in session or []]
        body = RecommendationRequest(user_id=user_id, k=k, session=events,
                                     filters=Filters.model_validate(filters or {}))
        return Call("POST", "/v1/recommendations", RecommendationResponse, body, read=True)

    @staticmethod
    def _similar_items(item_id: int, k: int, in_stock_only: bool) -> Call[SimilarItemsResponse]:
        return Call("GET", f"/v1/items/{int(item_id)}/similar", SimilarItemsResponse,
                    params={"k": k, "in_stock_only": str(in_stock_only).lower()}, read=True)

    @staticmethod
    def _record_interaction(user_id: int, item_id: int, ts: datetime | None,
                            key: str | None) -> Call[InteractionResponse]:
        body = InteractionRequest(user_id=user_id, item_id=item_id, ts=ts)
        return Call("POST", "/v1/interactions", InteractionResponse, body, key=write_key(key))

    @staticmethod
    def _set_stock(item_id: int, quantity: int, key: str | None) -> Call[StockResponse]:
        return Call("PUT", f"/v1/items/{int(item_id)}/stock", StockResponse,
                    StockUpdate(quantity=quantity), key=write_key(key))

    @staticmethod
    def _upsert_item(item_id: int, item: ItemUpsert, key: str | None) -> Call[ItemResponse]:
        return Call("PUT", f"/v1/items/{int(item_id)}", ItemResponse, item, key=write_key(key))

    @staticmethod
    def _health() -> Call[Health]:
        return Call("GET", "/v1/health", Health, accept=frozenset({200, 503}),  # 503 has the reason
                    read=True)

    @staticmethod
    def _version() -> Call[VersionInfo]:
        return Call("GET", "/v1/version", VersionInfo, read=True)

    # -- outcomes ----------------------------------------------------------------------------------
    def _on_response(self, call: Call[T], response: httpx.Response, attempt: int) -> T | Retry:
        """The parsed answer, a retry, or the status error (raised)."""
        log.debug("%s %s -> %d (attempt %d)", call.method, call.path, response.status_code, attempt)
        if response.status_code in call.accept:
            return call.result.model_validate_json(response.content)
        if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
            retry = Retry(backoff(attempt, response.headers.get("retry-after")))
            log.debug("retrying %s %s in %.3fs", call.method, call.path, retry.delay_s)
            return retry
        message, body = _message(response)
        raise error_for_status(response.status_code, message, body=body,
                               request_id=response.headers.get("x-request-id"))

    def _on_error(self, call: Call[T], error: httpx.TransportError, attempt: int) -> Retry:
        """A retry after a connection failure, or the client's error (raised)."""
        retried = READ_RETRY_ERRORS if call.read or call.key is not None else RETRY_ERRORS
        if isinstance(error, retried) and attempt < self.max_retries:
            retry = Retry(backoff(attempt))
            log.debug("%s %s failed (%s); retrying in %.3fs", call.method, call.path,
                      type(error).__name__, retry.delay_s)
            return retry
        where = f"{call.method} {self.base_url}{call.path}"
        if isinstance(error, httpx.ConnectTimeout):
            raise APITimeoutError(f"{where}: no connection within {self.timeout.connect}s") from error
        if isinstance(error, httpx.TimeoutException):
            raise APITimeoutError(f"{where}: no answer within {self.timeout_s}s") from error
        raise APIConnectionError(f"{where}: {type(error).__name__}: {error}") from error
