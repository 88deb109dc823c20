"""Writes through the service: logged before they answer, applied once per idempotency key, and
kept across version switches (the logged stock is replayed into the version switched to)."""

from __future__ import annotations

import secrets
from datetime import datetime

import httpx
import pytest

from feature_repo.store import FeatureStoreConfig, open_store
from index import EdgeSettings, open_backend
from index.catalogue import latest_stock
from index.events import EventLog, effective
from index.registry import Registry
from services.client import UnprocessableEntityError
from services.online import OnlineFeatures
from tests.services.conftest import active_user, promote_version


def logged(service, key: str):
    log = EventLog(data_dir=service.home)
    try:
        return log.get(key)
    finally:
        log.close()


def test_a_retried_interaction_is_logged_and_applied_once_and_answers_as_the_first(service, client):
    user = active_user(service, 12)
    item = int(service.dataset.items["item_id"].iloc[3])
    key = secrets.token_hex(8)
    first = client.record_interaction(user, item, idempotency_key=key)
    again = client.record_interaction(user, item, idempotency_key=key)
    assert again == first
    event = logged(service, key)
    assert event is not None and event.kind == "interaction" and event.answer["history_length"] == (
        first.history_length)
    later = client.record_interaction(user, item)  # a new key: a new event
    assert later.history_length == min(first.history_length + 1, 50)


def test_a_retry_after_a_crash_between_the_append_and_the_answer_appends_nothing(service, client):
    """The first attempt logged the write and appended it online, then the process died before
    answering (its answer never stored): the retry under the same key answers and appends nothing."""
    user = active_user(service, 13)
    item = int(service.dataset.items["item_id"].iloc[5])
    online = OnlineFeatures(open_store(FeatureStoreConfig(repo_dir=service.home / "feature_repo")))
    before = online.user(user).event_count
    key = secrets.token_hex(8)
    log = EventLog(data_dir=service.home)
    try:
        event = log.record(key, "interaction", {"user_id": user, "item_id": item, "ts": None})
    finally:
        log.close()
    online.append_interaction(user, item, datetime.fromisoformat(effective(event, "ts")), event.seq)

    answer = client.record_interaction(user, item, idempotency_key=key)

    assert online.user(user).event_count == before + 1
    assert answer.history_length == len(online.user(user).recent_item_ids)
    assert logged(service, key).answer == answer.model_dump(mode="json")


def test_a_key_reused_for_another_write_is_a_422_naming_the_header(service, client):
    item = int(service.dataset.items["item_id"].iloc[4])
    key = secrets.token_hex(8)
    client.set_stock(item, 3, idempotency_key=key)
    with pytest.raises(UnprocessableEntityError, match="Idempotency-Key"):
        client.set_stock(item, 4, idempotency_key=key)
    answer = httpx.put(f"{service.url}/v1/items/{item}/stock", json={"quantity": 3},
                       headers={"X-API-Key": service.write_key, "Idempotency-Key": "x" * 201})
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["detail"]


def _in_stock_neighbours(client, item: int) -> set[int]:
    return {i.item_id for i in client.similar_items(item, k=200, in_stock_only=True).items}


def test_stock_set_through_the_api_stays_set_across_promotion_and_rollback(service, client):
    stock = latest_stock(service.dataset.stock)
    probe, item = [i for i, q in stock.items() if q > 0][:2]
    assert item in _in_stock_neighbours(client, probe)
    client.set_stock(item, 0)
    try:
        before = client.version().index_version
        _, promoted = promote_version(service)  # built from the dataset: the item is in stock there
        service.wait_for_index_version(promoted)
        assert item not in _in_stock_neighbours(client, probe)
        registry = Registry(data_dir=service.home,
                            backend=open_backend(EdgeSettings(path=service.home / "index")))
        registry.rollback()
        registry.backend.close()
        registry.close()
        service.wait_for_index_version(before)
        assert item not in _in_stock_neighbours(client, probe)
    finally:
        client.set_stock(item, stock[item])
