"""`RecommenderClient` (sync) and `AsyncRecommenderClient` over httpx; same methods, same names.

    with RecommenderClient("http://127.0.0.1:8000", api_key="...") as client:
        answer = client.recommend(42, k=10, filters={"categories": ["c3"], "max_price": 50})

Arguments fall back to `TWOTOWER_URL` and `TWOTOWER_API_KEY`. Calls retry on 503 and on connection
failures (exponential backoff with jitter, `Retry-After` honoured); other errors raise at once.
Each write sends an `Idempotency-Key` (new per call unless `idempotency_key` is given) and reuses
it on retries, so a retried write is applied once and answers as the first attempt did.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from services.client._base import BaseClient, Call, Retry, T
from services.schemas import (
    Filters,
    Health,
    InteractionResponse,
    ItemResponse,
    ItemUpsert,
    RecommendationResponse,
    SessionEvent,
    SimilarItemsResponse,
    StockResponse,
    VersionInfo,
)

Session = Iterable[SessionEvent | Mapping[str, Any] | int]


class RecommenderClient(BaseClient):
    """Blocking client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def _send(self, call: Call[T]) -> T:
        for attempt in itertools.count():
            try:
                outcome = self._on_response(call, self._http.request(**call.request()), attempt)
            except httpx.TransportError as error:
                outcome = self._on_error(call, error, attempt)
            if not isinstance(outcome, Retry):
                return outcome
            time.sleep(outcome.delay_s)
        raise AssertionError("unreachable")

    def recommend(self, user_id: int, k: int = 10, *, filters: Filters | Mapping[str, Any] | None = None,
                  session: Session | None = None) -> RecommendationResponse:
        """Top-k items; `session` holds events not yet recorded (item ids or {item_id, ts})."""
        return self._send(self._recommend(user_id, k, filters, session))

    def similar_items(self, item_id: int, k: int = 10, *, in_stock_only: bool = True) -> SimilarItemsResponse:
        return self._send(self._similar_items(item_id, k, in_stock_only))

    def record_interaction(self, user_id: int, item_id: int,
                           ts: datetime | None = None, *,
                           idempotency_key: str | None = None) -> InteractionResponse:
        return self._send(self._record_interaction(user_id, item_id, ts, idempotency_key))

    def set_stock(self, item_id: int, quantity: int, *,
                  idempotency_key: str | None = None) -> StockResponse:
        return self._send(self._set_stock(item_id, quantity, idempotency_key))

    def upsert_item(self, item_id: int, *, title: str, categories: Sequence[str] = (),
                    price: float | None = None, created_at: datetime | None = None,
                    stock: int | None = None, idempotency_key: str | None = None) -> ItemResponse:
        """Add (or replace) an item from its content; it is searchable on return. Without `stock`
        or `created_at`, the item keeps its own (a new item: 0, and now)."""
        item = ItemUpsert(title=title, categories=list(categories), price=price, created_at=created_at,
                          stock=stock)
        return self._send(self._upsert_item(item_id, item, idempotency_key))

    def health(self) -> Health:
        return self._send(self._health())

    def version(self) -> VersionInfo:
        return self._send(self._version())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRecommenderClient(BaseClient):
    """Asyncio client; use as an async context manager or await `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                       timeout=self.timeout)

    async def _send(self, call: Call[T]) -> T:
        for attempt in itertools.count():
            try:
                outcome = self._on_response(call, await self._http.request(**call.request()), attempt)
            except httpx.TransportError as error:
                outcome = self._on_error(call, error, attempt)
            if not isinstance(outcome, Retry):
                return outcome
            await asyncio.sleep(outcome.delay_s)
        raise AssertionError("unreachable")

    async def recommend(self, user_id: int, k: int = 10, *,
                        filters: Filters | Mapping[str, Any] | None = None,
                        session: Session | None = None) -> RecommendationResponse:
        """Top-k items; `session` holds events not yet recorded (item ids or {item_id, ts})."""
        return await self._send(self._recommend(user_id, k, filters, session))

    async def similar_items(self, item_id: int, k: int = 10, *,
                            in_stock_only: bool = True) -> SimilarItemsResponse:
        return await self._send(self._similar_items(item_id, k, in_stock_only))

    async def record_interaction(self, user_id: int, item_id: int,
                                 ts: datetime | None = None, *,
                           idempotency_key: str | None = None) -> InteractionResponse:
        return await self._send(self._record_interaction(user_id, item_id, ts, idempotency_key))

    async def set_stock(self, item_id: int, quantity: int, *,
                        idempotency_key: str | None = None) -> StockResponse:
        return await self._send(self._set_stock(item_id, quantity, idempotency_key))

    async def upsert_item(self, item_id: int, *, title: str, categories: Sequence[str] = (),
                          price: float | None = None, created_at: datetime | None = None,
                          stock: int | None = None, idempotency_key: str | None = None) -> ItemResponse:
        """Add (or replace) an item from its content; it is searchable on return. Without `stock`
        or `created_at`, the item keeps its own (a new item: 0, and now)."""
        item = ItemUpsert(title=title, categories=list(categories), price=price, created_at=created_at,
                          stock=stock)
        return await self._send(self._upsert_item(item_id, item, idempotency_key))

    async def health(self) -> Health:
        return await self._send(self._health())

    async def version(self) -> VersionInfo:
        return await self._send(self._version())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
