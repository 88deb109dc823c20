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
