"""The OpenAPI document is the truth: a property-based fuzz of every operation (schemathesis) with a
read key and with a write key finds no 5xx and no answer outside the document, and each error
status the service really answers has the one documented error schema."""

from __future__ import annotations

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.services.conftest import Service

MAX_EXAMPLES = 30  # per operation and key: bounded, so the fuzz takes a minute, not an hour
# "A schema-valid request is accepted" cannot hold for the rules JSON Schema has no words for
# (min_price <= max_price): their 422 is documented and checked like every answer.
CROSS_FIELD_RULES = positive_data_acceptance


def test_fuzzed_requests_get_no_5xx_and_documented_answers(copied_service):
    """Every operation of the document the copy serves (the fuzz writes there, never to the
    shared server), each case sent with a read key and with a write key."""
    schema = schemathesis.openapi.from_url(f"{copied_service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            for key in (copied_service.read_key, copied_service.write_key):
                case.call_and_validate(headers={"X-API-Key": key},
                                       excluded_checks=[CROSS_FIELD_RULES])

        fuzz()


def _document(service: Service) -> dict:
    return httpx.get(f"{service.url}/openapi.json").json()


def _assert_documented(document: dict, method: str, path: str, response: httpx.Response) -> None:
    """The answer's status is documented for the route and its body matches that status' schema."""
    documented = document["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in documented, (response.status_code, sorted(documented))
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    validator.validate(response.json())
    if response.status_code >= 400:
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


ITEM = "/v1/items/{item_id}"
REAL_ERRORS = [
    # (method, route in the document, url, key ("read", "write", None), body: JSON or raw bytes)
    ("POST", "/v1/recommendations", "/v1/recommendations", None, {"user_id": 1}),
    ("POST", "/v1/recommendations", "/v1/recommendations", "read", {"user_id": -1}),
    ("POST", "/v1/recommendations", "/v1/recommendations", "read", b"{not json"),
    ("POST", "/v1/recommendations", "/v1/recommendations", "read", b'{"user_id": "\xff"}'),
    ("POST", "/v1/recommendations", "/v1/recommendations", "read", b"[" * 2_000_000),
    ("GET", ITEM + "/similar", "/v1/items/999999/similar", "read", None),
    ("GET", ITEM + "/similar", "/v1/items/5/similar?k=0", "read", None),
    ("PUT", ITEM + "/stock", "/v1/items/5/stock", "read", {"quantity": 1}),
    ("PUT", ITEM + "/stock", "/v1/items/999999/stock", "write", {"quantity": 1}),
    ("PUT", ITEM, "/v1/items/5", "write", {"title": "x", "created_at": "3000-01-01T00:00:00Z"}),
    ("POST", "/v1/interactions", "/v1/interactions", "write", {"user_id": 1, "item_id": 999999}),
    ("GET", "/v1/version", "/v1/version", "nonsense", None),
]


@pytest.mark.parametrize(("method", "route", "url", "key", "body"), REAL_ERRORS)
def test_real_error_answers_match_the_document(service, method, route, url, key, body):
    keys = {"read": service.read_key, "write": service.write_key, "nonsense": "x" * 20}
    headers = {"X-API-Key": keys[key]} if key else {}
    payload = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.request(method, service.url + url, headers=headers, **payload)
    assert response.status_code >= 400
    _assert_documented(_document(service), method, route, response)


def test_every_error_status_shares_one_schema_and_503_says_when_to_retry(service):
    document = _document(service)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and path != "/v1/health":  # health's 503 is its own report
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
                if status == "503" and path != "/v1/health":
                    assert "Retry-After" in answer["headers"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_document_states_the_bounds_of_ids_and_quantities(service):
    """The fuzz draws from these bounds, and a client generated from the document checks them."""
    schemas = _document(service)["components"]["schemas"]
    integer = {"type": "integer", "minimum": 0}
    assert schemas["RecommendationRequest"]["properties"]["user_id"].items() >= integer.items()
    assert schemas["InteractionRequest"]["properties"]["item_id"].items() >= integer.items()
    assert schemas["StockUpdate"]["properties"]["quantity"].items() >= integer.items()
    assert integer.items() <= schemas["ItemUpsert"]["properties"]["stock"]["anyOf"][0].items()
