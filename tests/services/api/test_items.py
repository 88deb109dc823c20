"""`/v1/items`: stock updates reach the next answer, new items from content, similar items, and the
same writes as the Dagster sensors send them."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from feature_repo.store import FeatureStoreConfig, open_store
from index.catalogue import latest_stock
from index.events import EventLog
from pipelines.defs.resources import DatasetResource, EventLogResource, InboxResource, ServiceResource
from pipelines.defs.sensors import Writer, read_inbox_file, stock_update_job
from services.client import NotFoundError
from services.online import OnlineFeatures
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
    writes = [(f"stock-run-1:stock:{top}", {"item_id": top, "quantity": 0})]
    try:
        assert list(resource.send("stock", writes)) == [True]
        logged = EventLog.beside(f"sqlite:///{service.home / 'registry.db'}")
        position = logged.position()
        assert list(resource.send("stock", writes)) == [True]  # a re-executed run: the same keys
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
    assert list(resource.send("item", [("items-run-1:item:50001", {"item_id": 50_001, **content}),
                                       ("items-run-1:item:50002", {"item_id": 50_002, **content})])
                ) == [True, True]
    assert [i.item_id for i in client.similar_items(50_002, k=1).items] == [50_001]
    answer = client.recommend(user, k=5, filters={"categories": ["lamps-sensor"]})
    assert sorted(i.item_id for i in answer.items) == [50_001, 50_002]


def test_a_sensor_write_sent_while_nothing_was_live_waits_for_a_version_and_lands(service):
    """Sent before the first version was live (503s until then): retried under its key until the
    version is live, then logged and applied, not a failed run whose rows wait for a re-execution."""
    item, outcome = service.before_live["sensor_write"]
    assert outcome == [True], f"the write failed: {outcome!r}"
    assert indexed(service, f"before-live:stock:{item}")


def test_inbox_runs_the_service_cannot_take_go_into_its_log_and_reach_the_version_it_goes_live_with(
        service):
    """Their client gave up at once (503s before the first version was live): each run logged its
    writes itself, under their keys and the dataset, and succeeded without a retry; the version
    replayed them when it went live. Before, they failed and waited for a re-execution."""
    for name, (result, instance) in service.before_live["sensor_runs"].items():
        assert result.success, name
        assert not step_events(instance, result.run_id, "STEP_UP_FOR_RETRY"), name
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("service unavailable" in m and "into the event log" in m for m in messages), name
    log = EventLog(data_dir=service.home)
    try:
        stock = log.get(f"before-live-stock:stock:{LAMP}")
    finally:
        log.close()
    assert stock.body == {"item_id": LAMP, "quantity": 4}
    assert stock.dataset == service.dataset.fingerprint
    with service.client() as client:
        assert client.similar_items(LAMP, k=1, in_stock_only=False).items, "its vector is indexed"
    online = OnlineFeatures(open_store(FeatureStoreConfig(repo_dir=service.home / "feature_repo")))
    assert online.quantities([LAMP]) == {LAMP: 4}, "the upsert's 3, then the stock run's 4"


def indexed(service, key: str) -> bool:
    """Whether the write logged under `key` was answered as applied to the index."""
    logged = EventLog.beside(f"sqlite:///{service.home / 'registry.db'}")
    try:
        event = logged.get(key)
        return event is not None and event.answer["indexed"] is True
    finally:
        logged.close()


@pytest.mark.parametrize("service_up, log_up, retried, error", [
    (True, True, 0, "401"),  # the service's answer (a wrong key): the log cannot mend it
    (False, False, 2, "OperationalError"),  # the log down for longer than the step's retries
])
def test_a_stock_run_fails_on_a_refusal_and_retries_its_step_only_while_the_log_is_down(
        service, tmp_path, service_up, log_up, retried, error):
    url = service.url if service_up else f"http://127.0.0.1:{free_port()}"
    log_url = None if log_up else f"sqlite:///{tmp_path / 'gone' / 'events.db'}"
    resources = {"dataset": DatasetResource(spec=SHOP), "inbox": InboxResource(data_dir=str(tmp_path)),
                 "event_log": EventLogResource(data_dir=str(tmp_path), url=log_url, step_retries=2,
                                               step_retry_wait_s=0.01),
                 "service": ServiceResource(url=url, api_key="wrong key", max_retries=0,
                                            connect_timeout_s=0.5)}
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
        list(resource.send("stock", [("no-key:stock:1", {"item_id": 1, "quantity": 1})]))


def test_a_sensor_batch_goes_on_past_an_item_the_catalogue_lacks(service, client):
    resource = ServiceResource(url=service.url, api_key=service.write_key)
    user = active_user(service, 13)
    top = client.recommend(user, k=5).items[0].item_id
    try:
        taken = resource.send("stock", [("stock-run-2:stock:999998", {"item_id": 999_998, "quantity": 5}),
                                        (f"stock-run-2:stock:{top}", {"item_id": top, "quantity": 0})])
        assert list(taken) == [False, True]
        assert top not in [i.item_id for i in client.recommend(user, k=5).items]
    finally:
        client.set_stock(top, max(latest_stock(service.dataset.stock).get(top, 1), 1))


def test_a_stock_run_whose_service_is_down_logs_its_rows_and_succeeds(tmp_path):
    """No service answers at its URL: the run logs the rows itself, for the service to replay, and
    is done; before, its step was retried for half an hour and the run then failed."""
    resources = {"dataset": DatasetResource(spec=SHOP), "inbox": InboxResource(data_dir=str(tmp_path)),
                 "event_log": EventLogResource(data_dir=str(tmp_path)),
                 "service": _down()}
    instance = dg.DagsterInstance.ephemeral()
    result = stock_update_job.execute_in_process(
        run_config={"ops": {"push_stock_quantities": {"config": {"quantities": {"7": 3}}}}},
        resources=resources, instance=instance, raise_on_error=False, tags={"dagster/run_key": "down"})
    assert result.success and not step_events(instance, result.run_id, "STEP_UP_FOR_RETRY")
    log = EventLog(data_dir=tmp_path)
    try:
        event = log.get("down:stock:7")
    finally:
        log.close()
    assert (event.kind, event.body) == ("stock", {"item_id": 7, "quantity": 3})
    assert event.dataset == DatasetResource(spec=SHOP).fingerprint


def test_a_write_the_service_logged_but_never_answered_is_not_logged_again_by_the_fallback(
        service, tmp_path):
    """An items file's upsert reached the service's log, but its answer was lost and the service
    went away: the run's fallback logs the same body under the same key, which the log finds
    (no second event, no key conflict), so the item counts as pushed at once."""
    path = tmp_path / "chair.csv"
    path.write_text("item_id,title,categories,price,created_at,stock\n"
                    "60002,Inbox Chair,chairs|oak,19.5,2024-03-01T10:00:00+02:00,2\n")
    key, body = "lost-answer:item:60002", read_inbox_file(path, "items")["upsert"][0]
    assert list(ServiceResource(url=service.url, api_key=service.write_key).send(
        "item", [(key, body)])) == [True]
    log = EventLog(data_dir=service.home)
    try:
        position, written = log.position(), []
        writer = Writer(dg.build_op_context(), _down(), EventLogResource(data_dir=str(service.home)),
                        DatasetResource(spec=SHOP), through_service=True)
        writer.write("item", [(key, body)], written=written.append)
        assert (written, log.position()) == ([60_002], position)
        assert log.get(key).body == body
    finally:
        log.close()


def test_once_the_service_could_not_take_a_write_the_runs_later_writes_go_into_the_log(
        service, tmp_path):
    """Its upserts went into the log: the run's stock writes after them go there too, behind them,
    not to a service that may not have replayed those upserts yet (it would refuse the new item's
    stock, 404, and the stock would be lost)."""
    writer = Writer(dg.build_op_context(), _down(), EventLogResource(data_dir=str(tmp_path)),
                    DatasetResource(spec=SHOP), through_service=True)
    written: list[int] = []
    writer.write("item", [("split:item:60003", {"item_id": 60_003, "title": "Inbox Shelf",
                                                "categories": [], "price": None,
                                                "created_at": None, "stock": None})],
                 written=written.append)
    writer.service = ServiceResource(url=service.url, api_key=service.write_key)  # back up
    unknown = writer.write("stock", [("split:stock:60003", {"item_id": 60_003, "quantity": 5})],
                           written=written.append)
    assert (unknown, written, writer.through_service) == ([], [60_003, 60_003], False)
    log = EventLog(data_dir=tmp_path)
    try:
        assert [log.get(k).kind for k in ("split:item:60003", "split:stock:60003")] == ["item", "stock"]
    finally:
        log.close()


def _down() -> ServiceResource:
    """A service that takes no connection."""
    return ServiceResource(url=f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=0,
                           connect_timeout_s=0.5)
