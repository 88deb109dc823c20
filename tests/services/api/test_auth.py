"""API keys: unknown or missing -> 401, a read key on a write endpoint -> 403."""

from __future__ import annotations

import httpx
import pytest

READS = [("POST", "/v1/recommendations", {"user_id": 1}), ("GET", "/v1/items/5/similar", None),
         ("GET", "/v1/version", None)]
WRITES = [("POST", "/v1/interactions", {"user_id": 1, "item_id": 5}),
          ("PUT", "/v1/items/5/stock", {"quantity": 3}),
          ("PUT", "/v1/items/5", {"title": "x", "stock": 1})]


def _call(service, method: str, path: str, body, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.request(method, service.url + path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
@pytest.mark.parametrize("key", [None, "", "not-a-key-0123456789"])
def test_missing_or_unknown_key_is_401(service, method, path, body, key):
    response = _call(service, method, path, body, key)
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_read_key_cannot_write(service, method, path, body):
    response = _call(service, method, path, body, service.read_key)
    assert response.status_code == 403
    assert "write key" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), READS)
def test_read_and_write_keys_can_read(service, method, path, body):
    for key in (service.read_key, service.write_key):
        assert _call(service, method, path, body, key).status_code == 200


def test_health_and_metrics_need_no_key(service):
    assert httpx.get(f"{service.url}/v1/health").status_code == 200
    assert httpx.get(f"{service.url}/metrics").status_code == 200
