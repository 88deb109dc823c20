"""The client: both flavours against the running app, retries, backoff and the error factory."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import threading

import pytest
from pydantic import ValidationError

from services.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncRecommenderClient,
    AuthenticationError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RecommenderClient,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from services.client._base import BACKOFF_MAX_S, RETRY_AFTER_MAX_S, backoff
from services.client.errors import error_for_status
from services.schemas import RecommendationRequest, RecommendationResponse
from tests.utils.servers import free_port


def test_async_client_answers_like_the_sync_one(service, client):
    async def run():
        async with AsyncRecommenderClient(service.url, api_key=service.read_key) as aclient:
            return await aclient.recommend(1, k=5), await aclient.version(), await aclient.health()

    answer, version, health = asyncio.run(run())
    assert [i.item_id for i in answer.items] == [i.item_id for i in client.recommend(1, k=5).items]
    assert version == client.version() and health.status == "ok"


class _ImportRecorder:
    """A meta path finder that only records which modules Python searched for."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.searched.append(name)
        return None  # let the real finders answer


def test_async_calls_search_for_no_module_per_request(service):
    """httpcore imports sniffio per request; without it installed every call searched sys.path."""
    recorder = _ImportRecorder()

    async def run():
        async with AsyncRecommenderClient(service.url, api_key=service.read_key) as aclient:
            await aclient.recommend(1, k=5)  # warm: first calls may import lazily
            sys.meta_path.insert(0, recorder)
            try:
                for user_id in (2, 3, 4):
                    await aclient.recommend(user_id, k=5)
            finally:
                sys.meta_path.remove(recorder)

    asyncio.run(run())
    assert recorder.searched == []


def test_settings_fall_back_to_the_environment(service, monkeypatch):
    monkeypatch.setenv("TWOTOWER_URL", service.url)
    monkeypatch.setenv("TWOTOWER_API_KEY", service.read_key)
    with RecommenderClient() as client:
        assert client.version().index_version >= 1
        with pytest.raises(PermissionDeniedError, match="write key") as raised:
            client.set_stock(5, 1)
    assert raised.value.status_code == 403 and raised.value.request_id


def test_connection_failures_are_retried_then_raised(caplog):
    port = free_port()  # nobody listens on it
    caplog.set_level(logging.DEBUG, logger="services.client")
    with RecommenderClient(f"http://127.0.0.1:{port}", max_retries=2) as client:
        with pytest.raises(APIConnectionError, match="ConnectError"):
            client.health()
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_a_host_that_takes_no_connection_fails_after_the_connect_timeout(caplog):
    """A listener whose accept queue is full drops new connections, as a host gone from the network
    does: each attempt waits `connect_timeout_s`, not the whole `timeout_s`, and is retried."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    queued = [socket.create_connection(listener.getsockname())]  # its accept queue, now full
    caplog.set_level(logging.DEBUG, logger="services.client")
    try:
        with RecommenderClient(url, timeout_s=60, connect_timeout_s=0.2, max_retries=1) as client:
            with pytest.raises(APITimeoutError, match=r"no connection within 0\.2s"):
                client.health()
        assert sum("retrying" in r.getMessage() for r in caplog.records) == 1
    finally:
        for sock in (*queued, listener):
            sock.close()


def test_client_errors_are_not_retried(service, caplog):
    caplog.set_level(logging.DEBUG, logger="services.client")
    with RecommenderClient(service.url, api_key="wrong-key-0123456789") as client:
        with pytest.raises(AuthenticationError):
            client.recommend(1)
    assert not any("retrying" in r.getMessage() for r in caplog.records)


def test_backoff_grows_with_jitter_up_to_a_cap_and_honours_retry_after():
    for attempt in range(8):
        cap = min(BACKOFF_MAX_S, 0.1 * 2**attempt)
        assert all(cap / 2 <= backoff(attempt) <= cap for _ in range(50))
    assert backoff(0, "3") == 3.0
    assert backoff(0, "9999") == RETRY_AFTER_MAX_S
    assert backoff(0, "Wed, 21 Oct 2015 07:28:00 GMT") <= 0.1


@pytest.mark.parametrize(("status", "cls"), [
    (401, AuthenticationError), (403, PermissionDeniedError), (404, NotFoundError),
    (422, UnprocessableEntityError), (500, InternalServerError), (503, ServiceUnavailableError),
    (502, ServiceUnavailableError), (504, ServiceUnavailableError),  # from a gateway
    (418, APIStatusError),
])
def test_each_status_maps_to_one_error_carrying_the_server_message(status, cls):
    error = error_for_status(status, "the reason", body={"detail": "the reason"}, request_id="r1")
    assert type(error) is cls and error.message == "the reason" and error.status_code == status
    assert "the reason" in str(error) and "r1" in str(error)


HEALTH = b'{"status": "ok", "reason": null, "ranking": "ranker", "dependencies": {}}'


class _LoopbackServer:
    """A loopback HTTP server of the tests' own, each connection handled by `_answer`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the request
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    @staticmethod
    def _send(conn: socket.socket, status: int, body: bytes, *, close: bool = False) -> None:
        head = "\r\n".join([f"HTTP/1.1 {status} X", "content-type: application/json",
                            f"content-length: {len(body)}", *(["connection: close"] if close else [])])
        conn.sendall(f"{head}\r\n\r\n".encode() + body)

    def close(self) -> None:
        self.sock.close()


class _DroppingServer(_LoopbackServer):
    """Answers the first request of a connection (kept alive) and drops the connection on the
    next: closed after reading it, or reset without reading it."""

    def __init__(self, reset: bool, body: bytes = HEALTH) -> None:
        self.reset, self.body, self.connections = reset, body, 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        self.connections += 1
        self._send(conn, 200, self.body)
        if self.reset and conn.recv(65536, socket.MSG_PEEK):  # the next request, unread:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            conn.recv(65536)


@pytest.mark.parametrize("reset", [False, True])
def test_reads_are_retried_on_a_dropped_kept_alive_connection(reset):
    server = _DroppingServer(reset)
    try:
        with RecommenderClient(server.url, max_retries=1) as client:
            assert client.health().status == "ok"
            assert client.health().status == "ok"  # the first connection is dropped under it
        assert server.connections == 2
    finally:
        server.close()


def test_a_dropped_connection_raises_once_retries_are_spent():
    server = _DroppingServer(reset=True)
    try:
        with RecommenderClient(server.url, max_retries=0) as client:
            client.health()
            with pytest.raises(APIConnectionError, match="ReadError"):
                client.health()
    finally:
        server.close()


class _Gateway(_LoopbackServer):
    """Stands for a proxy in front of the service: answers the first requests with `statuses`
    (502, 504: the service behind it down or slow), then health."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.requests = list(statuses), 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        status = self.statuses[self.requests] if self.requests < len(self.statuses) else 200
        self.requests += 1
        self._send(conn, status, HEALTH if status == 200 else b'{"detail": "upstream unavailable"}',
                   close=True)


def test_a_gateways_502_and_504_are_retried_as_a_503_is():
    """Behind a proxy, a restarting service is a 502 or a 504, not a refused connection."""
    gateway = _Gateway([502, 504])
    try:
        with RecommenderClient(gateway.url, max_retries=2) as client:
            assert client.health().status == "ok"
        assert gateway.requests == 3
    finally:
        gateway.close()
    gateway = _Gateway([502, 504])
    try:
        with RecommenderClient(gateway.url, max_retries=1) as client, \
                pytest.raises(ServiceUnavailableError, match="504: upstream unavailable"):
            client.health()
    finally:
        gateway.close()


def test_an_answer_with_fields_this_client_does_not_know_is_read():
    """A service upgraded before its applications' clients adds fields to its answers."""
    newer = (b'{"status": "ok", "reason": null, "ranking": "ranker", "region": "eu", '
             b'"dependencies": {"index": {"status": "ok", "reason": null, "latency_ms": 2}}}')
    server = _DroppingServer(reset=False, body=newer)
    try:
        with RecommenderClient(server.url, max_retries=0) as client:
            health = client.health()
        assert health.status == "ok" and health.dependencies["index"].status == "ok"
    finally:
        server.close()
    answer = RecommendationResponse.model_validate({
        "model_version": 1, "index_version": 2, "user_id": 3, "ranking": "retrieval",
        "cold_start": False, "explanation": "new", "items": [
            {"item_id": 4, "score": 0.5, "rank": 1, "reasons": {"retrieval_score": 0.5, "why": "x"}}]})
    assert answer.items[0].reasons.retrieval_score == 0.5


def test_a_request_field_the_service_does_not_know_is_refused_by_name():
    with pytest.raises(ValidationError, match=r"(?s)filters\.max_prize.*Extra inputs are not permitted"):
        RecommendationRequest.model_validate({"user_id": 1, "filters": {"max_prize": 9}})
