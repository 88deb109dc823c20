"""Status endpoints: Prometheus metrics by route and stage, and the OpenAPI operation ids."""

from __future__ import annotations

import httpx


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
