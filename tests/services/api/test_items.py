"""`/v1/items`: stock updates reach the next answer, new items from content, similar items, and the
same writes as the Dagster sensors send them."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from index.catalogue import latest_stock
from index.events import EventLog
from pipelines.defs.resources import DatasetResource, EventLogResource, InboxResource, ServiceResource
from pipelines.defs.sensors import stock_update_job
from services.client import NotFoundError
from tests.services.conftest import LAMP, SHOP, active_user, step_events
from tests.utils.servers import free_port


def test_zero_stock_removes_the_item_from_the_next_answer(service, client):
    user = active_user(service, 10)
    top = client.recommend(user, k=5).items[0].item_id
    try:
        assert client.set_stock(top, 0).quantity == 0
        assert top not in [i.item_id for i in client.recommend(user, k=5).items]
        assert top in [i.item_id for i in client.recommend(
            user, k=5, filters={"in_stock_only": False}).items], "hidden, not deleted"
    finally:
        client.set_stock(top, max(latest_stock(service.dataset.stock).get(top, 1), 1))


def test_new_item_is_embedded_from_content_and_retrievable(service, client):
    added = client.upsert_item(50_000, title="brand new lamp", categories=["lamps-new"],
                               price=12.5, created_at=datetime.now(UTC), stock=3)
    assert added.item_id == 50_000
    answer = client.recommend(active_user(service, 11), k=5, filters={"categories": ["lamps-new"]})
    assert [i.item_id for i in answer.items] == [50_000]
    similar = client.similar_items(50_000, k=5)
    assert len(similar.items) == 5 and 50_000 not in [i.item_id for i in similar.items]


def test_similar_items_exclude_the_item_and_are_ordered(client):
    answer = client.similar_items(5, k=8)
    scores = [i.score for i in answer.items]
    assert len(scores) == 8 and 5 not in [i.item_id for i in answer.items]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("call", [
    lambda c: c.similar_items(999_999),
    lambda c: c.set_stock(999_999, 1),
    lambda c: c.record_interaction(1, 999_999),
])
def test_unknown_item_is_a_404_naming_it(client, call):
    with pytest.raises(NotFoundError, match="item_id 999999"):
        call(client)


def test_sensor_writes_through_service_resource_reach_the_service(service, client):
    """The Dagster sensors' `ServiceResource` speaks the API: its stock change and upserts land."""
    resource = ServiceResource(url=service.url, api_key=service.write_key)
    user = active_user(service, 12)
    top = client.recommend(user, k=5).items[0].item_id
    try:
        resource.set_stock([(top, 0, f"stock-run-1:stock:{top}")])
        logged = EventLog.beside(f"sqlite:///{service.home / 'registry.db'}")
        position = logged.position()
        resource.set_stock([(top, 0, f"stock-run-1:stock:{top}")])  # a re-executed run: the same keys
        assert logged.position() == position, "the retried batch logged nothing new"
        assert logged.get(f"stock-run-1:stock:{top}").dataset == service.dataset.fingerprint
        assert resource.serves(service.dataset.fingerprint), "its writes go through the service"
        assert not resource.serves("0123456789abcdef"), "another dataset's go into the log alone"
        logged.close()
        assert top not in [i.item_id for i in client.recommend(user, k=5).items]
    finally:
        client.set_stock(top, max(latest_stock(service.dataset.stock).get(top, 1), 1))
    # Two unseen items with the same content get the same vector: each is the other's nearest.
    content = {"title": "sensor lamp", "categories": ["lamps-sensor"], "price": 4.0,
               "created_at": datetime.now(UTC).isoformat(), "stock": 2}
    resource.upsert_items([{"item_id": 50_001, **content}, {"item_id": 50_002, **content}],
                          ["items-run-1:item:50001", "items-run-1:item:50002"])
    assert [i.item_id for i in client.similar_items(50_002, k=1).items] == [50_001]
    answer = client.recommend(user, k=5, filters={"categories": ["lamps-sensor"]})
    assert sorted(i.item_id for i in answer.items) == [50_001, 50_002]


def test_a_sensor_write_sent_while_nothing_was_live_waits_for_a_version_and_lands(service):
    """Sent before the first version was live (503s until then): retried under its key until the
    version is live, then logged and applied, not a failed run whose rows wait for a re-execution."""
    item, outcome = service.before_live["sensor_write"]
    assert outcome == [], f"the write failed: {outcome!r}"
    assert indexed(service, f"before-live:stock:{item}")


@pytest.mark.parametrize("kind", ["stock", "items"])
def test_an_inbox_run_whose_writes_fail_past_the_clients_retries_is_retried_and_lands(service, kind):
    """Its client retries nothing here (`max_retries=0`): the service's 503s before the first
    version was live failed the step, which Dagster retried until the version was live, under the
    same write keys; on its own, the failed run's rows would wait for someone to re-execute it."""
    result, instance = service.before_live["sensor_runs"][kind]
    retries = step_events(instance, result.run_id, "STEP_UP_FOR_RETRY")
    assert result.success and retries, "failed while nothing was live, then retried and landed"
    if kind == "stock":
        assert indexed(service, f"before-live-stock:stock:{service.before_live['stock_run_item']}")
    else:
        with service.client() as client:
            assert client.similar_items(LAMP, k=1, in_stock_only=False).items, "its vector is indexed"


def indexed(service, key: str) -> bool:
    """Whether the write logged under `key` was answered as applied to the index."""
    logged = EventLog.beside(f"sqlite:///{service.home / 'registry.db'}")
    try:
        event = logged.get(key)
        return event is not None and event.answer["indexed"] is True
    finally:
        logged.close()


@pytest.mark.parametrize("down, api_key, retried, error", [
    (False, "wrong key", 0, "401"),  # the service's answer: retrying cannot mend it
    (True, "any key", 2, "ConnectError"),  # down for longer than the step's retries
])
def test_a_stock_run_retries_its_step_only_while_the_service_cannot_be_reached(
        service, tmp_path, down, api_key, retried, error):
    url = f"http://127.0.0.1:{free_port()}" if down else service.url
    resources = {"dataset": DatasetResource(spec=SHOP), "inbox": InboxResource(data_dir=str(tmp_path)),
                 "event_log": EventLogResource(data_dir=str(tmp_path)),
                 "service": ServiceResource(url=url, api_key=api_key, max_retries=0,
                                            connect_timeout_s=0.5, step_retries=2,
                                            step_retry_wait_s=0.01)}
    instance = dg.DagsterInstance.ephemeral()
    result = stock_update_job.execute_in_process(
        run_config={"ops": {"push_stock_quantities": {"config": {"quantities": {"1": 1}}}}},
        resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    assert len(step_events(instance, result.run_id, "STEP_UP_FOR_RETRY")) == retried
    failure, = step_events(instance, result.run_id, "STEP_FAILURE")
    assert error in failure.step_failure_data.error.to_string()


def test_sensor_writes_without_their_key_fail_naming_it_not_borrowing_the_clients(service,
                                                                                  monkeypatch):
    monkeypatch.setenv("TWOTOWER_API_KEY", service.read_key)  # an application's key, not theirs
    resource = ServiceResource(url=service.url)
    with pytest.raises(ValueError, match="TWOTOWER_SERVICE_KEY"):
        resource.set_stock([(1, 1, "no-key:stock:1")])


def test_a_sensor_batch_goes_on_past_an_item_the_catalogue_lacks(service, client):
    resource = ServiceResource(url=service.url, api_key=service.write_key)
    user = active_user(service, 13)
    top = client.recommend(user, k=5).items[0].item_id
    written: list[int] = []
    try:
        unknown = resource.set_stock([(999_998, 5, "stock-run-2:stock:999998"),
                                      (top, 0, f"stock-run-2:stock:{top}")], written=written.append)
        assert (unknown, written) == ([999_998], [top])
        assert top not in [i.item_id for i in client.recommend(user, k=5).items]
    finally:
        client.set_stock(top, max(latest_stock(service.dataset.stock).get(top, 1), 1))
