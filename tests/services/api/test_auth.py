"""API keys: unknown or missing -> 401, a read key on a write endpoint -> 403."""

from __future__ import annotations

import socket

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


def _raw_request(service, head: str) -> bytes:
    """Send only a request's head (no body) on a raw socket; the status line the server answers."""
    port = int(service.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.parametrize("key", [None, "not-a-key-0123456789"])
def test_the_key_is_checked_before_the_body_is_read(service, key):
    """The head announces 5 MB that never come: only an answer without reading them can arrive."""
    line = f"X-API-Key: {key}\r\n" if key else ""
    head = (f"POST /v1/recommendations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: 5000000\r\n{line}\r\n")
    assert _raw_request(service, head) == b"HTTP/1.1 401 Unauthorized"


def test_malformed_json_without_a_key_is_401_not_422(service):
    response = httpx.post(f"{service.url}/v1/recommendations", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 401


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_above_the_limit_is_413(service, chunked):
    body = b'{"user_id": 1, "filters": {"exclude_ids": [' + b"1," * 600_000 + b"1]}}"
    content = iter([body[:500_000], body[500_000:]]) if chunked else body  # no Content-Length
    response = httpx.post(f"{service.url}/v1/recommendations", content=content,
                          headers={"X-API-Key": service.read_key, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"]


def test_a_body_within_the_limit_is_read(service):
    """Just under 1 MB (the default limit) is parsed: its error names the field, not the size."""
    body = b'{"user_id": 1, "filters": {"exclude_ids": [' + b"1," * 400_000 + b"1]}}"
    assert len(body) < 1_000_000
    response = httpx.post(f"{service.url}/v1/recommendations", content=body,
                          headers={"X-API-Key": service.read_key, "content-type": "application/json"})
    assert response.status_code == 422 and "exclude_ids" in response.json()["detail"]
