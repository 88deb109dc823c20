"""Status endpoints: Prometheus metrics by route and stage, and the OpenAPI operation ids."""

from __future__ import annotations

import http.client
import json
import sqlite3
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import ValidationError

from services.api.config import Settings
from tests.services.conftest import active_user


def test_metrics_count_requests_by_route_and_time_every_stage(service, client):
    client.recommend(2, k=3)
    text = httpx.get(f"{service.url}/metrics").text
    assert 'twotower_requests_total{method="POST",route="/v1/recommendations",status="200"}' in text
    for stage in ("features", "tower", "ann", "rerank"):
        assert f'twotower_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'twotower_request_seconds_bucket{le="0.005",route="/v1/recommendations"}' in text


def test_operation_ids_are_tag_dash_function(service):
    spec = httpx.get(f"{service.url}/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"recommendations-recommend", "items-similar_items", "items-set_stock",
            "items-upsert_item", "interactions-record_interaction", "status-health",
            "status-version", "status-metrics"} == ids


def test_every_response_carries_a_request_id(service):
    response = httpx.get(f"{service.url}/v1/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len(httpx.get(f"{service.url}/v1/health").headers["x-request-id"]) == 32


def test_health_is_degraded_while_the_live_model_and_the_online_features_differ(service, client):
    """A model trained on another dataset than the home's features answers, but says so."""
    from index.home import FINGERPRINT
    from tests.services.conftest import promote_version

    _, index_version = promote_version(service, config={FINGERPRINT: "another-dataset"})
    service.wait_for_index_version(index_version, status="degraded")
    response = httpx.get(f"{service.url}/v1/health")
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert "model version" in response.json()["reason"] and "another dataset" in response.json()["reason"]
    assert client.recommend(2, k=3).items, "a degraded service still answers"
    _, index_version = promote_version(service, config={FINGERPRINT: service.dataset.fingerprint})
    service.wait_for_index_version(index_version)
    assert client.health().status == "ok"


def test_an_unexpected_error_is_a_500_in_the_error_schema_and_the_connection_serves_on(service):
    """A corrupt dataset record (read by every health check) raises an error nothing expects."""
    from feature_repo.tables import DATASET_FILE

    record = service.home / "feature_repo" / "data" / DATASET_FILE
    kept = record.read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(service.url).port, timeout=30)
    try:
        record.write_text("{not json")
        connection.request("GET", "/v1/health")
        failed = connection.getresponse()
        body = json.loads(failed.read())
        socket_used = connection.sock
        record.write_bytes(kept)
        connection.request("GET", "/v1/health")  # on the same connection: it was kept open
        answered = connection.getresponse()
        assert json.loads(answered.read())["status"] == "ok"
        assert connection.sock is socket_used is not None  # not reconnected
    finally:
        record.write_bytes(kept)
        connection.close()
    assert failed.status == 500 and failed.getheader("connection") != "close"
    assert body == {"detail": "internal error; the server's log has its cause", "errors": []}
    assert answered.status == 200


def test_health_is_degraded_while_only_the_registry_cannot_answer(service, client):
    """The registry is needed for promotions only: while a writer holds its database, health
    names it as degraded (200) and recommendations go on."""
    user = active_user(service, 7)
    holder = sqlite3.connect(service.home / "registry.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a real writer holding the file: no reader gets through
    try:
        response = httpx.get(f"{service.url}/v1/health", timeout=60)
        answered = client.recommend(user, k=3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["dependencies"]["registry"]["status"] == "degraded"
    assert body["reason"].startswith("registry: ") and ";" not in body["reason"]
    assert body["dependencies"]["online_store"] == body["dependencies"]["index"] == {"status": "ok",
                                                                                      "reason": None}
    assert answered.items
    assert client.health().status == "ok"


def test_a_metrics_folder_prometheus_client_does_not_write_to_is_refused(monkeypatch, tmp_path):
    """/metrics would sum an empty folder: the setting names the mismatch instead."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "feast"))
    key = "k" * 20
    with pytest.raises(ValidationError, match="metrics_dir=.*PROMETHEUS_MULTIPROC_DIR"):
        Settings(read_keys=key, write_keys=key, data_dir=tmp_path, metrics_dir=tmp_path / "workers")
    shared = Settings(read_keys=key, write_keys=key, data_dir=tmp_path, metrics_dir=tmp_path / "feast")
    assert shared.metrics_dir == tmp_path / "feast"
