"""Malformed requests: every one is a 4xx whose message names what is wrong, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from feature_repo.datasets.contract import EARLIEST
from services.schemas import FIRST_EVENT_YEAR, MAX_EXCLUDE_IDS, MAX_K, MAX_SESSION_EVENTS

RECOMMEND = "/v1/recommendations"
MALFORMED = [
    # (method, path, body or raw text, words the message must contain)
    ("POST", RECOMMEND, {}, "user_id"),
    ("POST", RECOMMEND, {"user_id": "alice"}, "user_id"),
    ("POST", RECOMMEND, {"user_id": -1}, "user_id"),
    ("POST", RECOMMEND, {"user_id": 2**63}, "user_id"),
    ("POST", RECOMMEND, {"user_id": 1, "k": 0}, "k"),
    ("POST", RECOMMEND, {"user_id": 1, "k": MAX_K + 1}, "k"),
    ("POST", RECOMMEND, {"user_id": 1, "k": 2.5}, "k"),
    ("POST", RECOMMEND, {"user_id": 1, "k": True}, "k: Value error, must be a number, not a boolean"),
    ("POST", RECOMMEND, {"user_id": True}, "user_id: Value error, must be a number, not a boolean"),
    ("POST", RECOMMEND, {"user_id": 1, "limit": 3}, "limit"),
    ("POST", RECOMMEND, {"user_id": 1, "filters": {"min_price": 9, "max_price": 1}}, "min_price"),
    ("POST", RECOMMEND, {"user_id": 1, "filters": {"categories": []}}, "categories"),
    ("POST", RECOMMEND, {"user_id": 1, "filters": {"min_price": -1}}, "min_price"),
    ("POST", RECOMMEND, {"user_id": 1, "filters": {"exclude_ids": list(range(MAX_EXCLUDE_IDS + 1))}},
     "exclude_ids"),
    ("POST", RECOMMEND, {"user_id": 1, "session": [{"item_id": 1}] * (MAX_SESSION_EVENTS + 1)},
     "session"),
    ("POST", RECOMMEND, {"user_id": 1, "session": [{"item_id": -5}]}, "item_id"),
    ("POST", RECOMMEND, {"user_id": 1, "session": [{"item_id": 1, "ts": "2025-01-01T00:00:00"}]},
     "ts"),
    ("POST", RECOMMEND, "{not json", "json"),
    ("POST", RECOMMEND, [1, 2], "body"),
    ("GET", "/v1/items/abc/similar", None, "item_id"),
    ("GET", "/v1/items/-1/similar", None, "item_id"),
    ("GET", "/v1/items/5/similar?k=0", None, "k"),
    ("PUT", "/v1/items/5/stock", {"quantity": -1}, "quantity"),
    ("PUT", "/v1/items/5/stock", {"quantity": "many"}, "quantity"),
    ("PUT", "/v1/items/5/stock", {"quantity": False}, "quantity: Value error, must be a number"),
    ("PUT", "/v1/items/5", {"title": "lamp", "stock": True}, "stock: Value error, must be a number"),
    ("PUT", "/v1/items/5", {"title": "lamp", "price": True}, "price: Value error, must be a number"),
    ("PUT", "/v1/items/5", {"title": "lamp", "price": -3}, "price"),
    ("PUT", "/v1/items/5", {"categories": ["a"]}, "title"),
    ("POST", "/v1/interactions", {"user_id": 1}, "item_id"),
    ("POST", "/v1/interactions", {"user_id": 1, "item_id": 999_999}, "999999"),
    ("POST", "/v1/interactions", {"user_id": 1, "item_id": 1, "ts": "2200-01-01T00:00:00Z"},
     "ts: Value error, in the future"),
    ("POST", "/v1/interactions", {"user_id": 1, "item_id": 1, "ts": "1989-12-31T23:59:59Z"},
     "ts: Value error, an event before 1990"),
    ("POST", RECOMMEND, {"user_id": 1, "session": [{"item_id": 1, "ts": "2200-01-01T00:00:00Z"}]},
     "in the future"),
    ("DELETE", "/v1/items/5", None, "method"),
    ("GET", "/v1/nothing-here", None, "not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "words"), MALFORMED)
def test_malformed_request_is_a_4xx_with_a_message(service, method, path, body, words):
    headers = {"X-API-Key": service.write_key, "content-type": "application/json"}
    payload = {"content": body} if isinstance(body, str) else {"json": body}
    response = httpx.request(method, service.url + path, headers=headers, **payload)
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower(), detail


def test_extreme_but_valid_requests_are_answered(client):
    top = 2**63 - 1
    answer = client.recommend(top, k=500, filters={
        "categories": [f"c{i}" for i in range(50)], "min_price": 0, "max_price": 1e12,
        "exclude_ids": [top, 0], "in_stock_only": False},
        session=[{"item_id": 1, "ts": "1990-01-01T00:00:00Z"},
                 {"item_id": 2, "ts": datetime.now(UTC).isoformat()},
                 {"item_id": top}])
    assert answer.items and len(answer.items) <= 500
    assert answer.warnings == [f"session item_id {top}: unknown, ignored",
                               f"exclude_ids item_id {top}: unknown, ignored",
                               "exclude_ids item_id 0: unknown, ignored"]
    assert client.similar_items(1, k=500, in_stock_only=False).items


def test_events_start_where_the_data_contract_does():
    assert FIRST_EVENT_YEAR == EARLIEST.year
