"""The daily run: a new day in the event log extends the features alone, checked, and reaches the
online store without moving any value back."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from feature_repo.datasets import load
from feature_repo.store import ONLINE_SERVICE
from index.events import Event, EventLog, with_events
from pipelines.defs import features
from pipelines.defs.checks import training_examples_have_no_leakage
from pipelines.defs.features import TRAINING_EXAMPLES
from pipelines.defs.resources import PipelineSettings, RawTablesStore, build_resources
from pipelines.defs.schedules import daily_features_job, online_features_job
from pipelines.local import instance_for, materialize_graph

SHOP = "synthetic:items=60,users=40,events=1500,seed=3"
FEATURES = ["raw_tables", "feature_tables", "feature_repository", "training_examples", "online_features"]


def metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    """A full features run, then a day of logged events (same-instant ties included) and the
    daily job over it."""
    home = tmp_path_factory.mktemp("daily")
    settings = PipelineSettings(data_dir=home, data=SHOP)
    with instance_for(home) as instance:
        first = materialize_graph(settings, instance=instance, selection=FEATURES)
        base = first.output_for_node("raw_tables")
        day = max(base.interactions["event_timestamp"].max(),
                  base.stock["event_timestamp"].max()).floor("D") + pd.Timedelta(days=1)
        at = {hour: (day + pd.Timedelta(hours=hour)).isoformat() for hour in (10, 11, 12)}
        new = [(1, 5, at[10]), (1, 6, at[10]), (2, 5, at[10]), (3, 7, at[11]), (1, 8, at[12])]
        log = EventLog(data_dir=home)
        for n, (user, item, ts) in enumerate(new):
            log.record(f"day-{n}", "interaction", {"user_id": user, "item_id": item, "ts": ts})
        log.close()
        end = (day + pd.Timedelta(days=1)).isoformat()
        result = materialize_graph(settings, instance=instance, selection=daily_features_job.selection,
                                   run_config={"ops": {"online_features": {"config": {
                                       "incremental": True, "end": end}}}})
        yield settings, instance, base, result, day


def test_the_daily_run_extends_the_last_runs_raw_tables_exactly_like_a_fresh_load_and_the_log(daily):
    settings, _, _, result, _ = daily
    raw = metadata(result, "raw_tables")
    assert raw["extended_last_run"] and raw["logged_events_read"] == 5
    log = EventLog(data_dir=settings.data_dir)
    fresh = with_events(load(SHOP), log.read())
    log.close()
    extended = result.output_for_node("raw_tables")
    for table in ("interactions", "items", "users", "stock"):
        pd.testing.assert_frame_equal(getattr(extended, table), getattr(fresh, table))


def test_raw_tables_load_the_dataset_again_when_its_files_change_or_the_log_is_replaced(tmp_path):
    shop, folder, home = load(SHOP), tmp_path / "shop", tmp_path / "home"
    folder.mkdir()
    for table in ("interactions", "items", "users", "stock"):
        getattr(shop, table).to_parquet(folder / f"{table}.parquet")
    settings = PipelineSettings(data_dir=home, data=f"generic:{folder}")

    def run():
        with instance_for(home) as instance:
            result = materialize_graph(settings, instance=instance, selection=["raw_tables"])
        return metadata(result, "raw_tables"), result.output_for_node("raw_tables")

    def log_one(key: str) -> None:
        log = EventLog(data_dir=home)
        log.record(key, "interaction", {"user_id": 1, "item_id": 2, "ts": "2030-01-01T00:00:00+00:00"})
        log.close()

    def stored_files() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (home / "raw").glob("*.pkl")}

    assert not run()[0]["extended_last_run"]
    before = stored_files()
    log_one("a")
    meta, data = run()
    assert meta["extended_last_run"] and meta["logged_events_read"] == 1
    assert len(data.interactions) == len(shop.interactions) + 1
    after = stored_files()  # only the table that grew was written again
    assert [n for n in after if n not in before] == [n for n in after if n.startswith("interactions")]
    assert {n: t for n, t in after.items() if n in before} == {
        n: t for n, t in before.items() if not n.startswith("interactions")}
    stored = RawTablesStore(data_dir=str(home)).stored()
    for table in ("interactions", "items", "users", "stock"):
        pd.testing.assert_frame_equal(getattr(stored, table), getattr(data, table))
        assert getattr(stored, table).attrs == getattr(data, table).attrs
    extra = shop.interactions.iloc[:1].assign(event_timestamp=pd.Timestamp("2029-06-01", tz="UTC"))
    pd.concat([shop.interactions, extra]).to_parquet(folder / "interactions.parquet")
    meta, data = run()  # the file changed: loaded again, the whole log on top
    assert not meta["extended_last_run"] and meta["logged_events_read"] == 1
    assert len(data.interactions) == len(shop.interactions) + 2
    (home / "events.db").unlink()  # a new, empty log: its old event is not kept from the last run
    meta, data = run()
    assert not meta["extended_last_run"] and len(data.interactions) == len(shop.interactions) + 1
    log_one("x")
    assert run()[0]["extended_last_run"]
    (home / "events.db").unlink()  # another log already past the stored position: not extended
    log_one("b")
    log_one("c")
    meta, data = run()
    assert not meta["extended_last_run"] and meta["logged_events_read"] == 2
    assert len(data.interactions) == len(shop.interactions) + 3  # the file's extra row, b and c
    (home / "raw" / stored_files().popitem()[0]).write_bytes(b"torn")  # an unreadable table file
    meta, again = run()
    assert not meta["extended_last_run"]
    pd.testing.assert_frame_equal(again.interactions, data.interactions)


def test_stock_logged_ahead_of_its_item_reaches_the_tables_however_many_writes_come_between(
        tmp_path, monkeypatch):
    """A feed's quantity for an item the catalogue lacks yet is left out of the tables; when the
    item arrives (its upsert leaving the stock out), an extending run gives it that quantity, as a
    fresh load of the same log does, even with more writes in between than a run re-reads."""
    monkeypatch.setattr(features, "LATE_COMMITS", 3)  # the margin re-read below the position
    settings, fingerprint = PipelineSettings(data_dir=tmp_path, data=SHOP), load(SHOP).fingerprint
    new = 900

    def run():
        with instance_for(tmp_path) as instance:
            result = materialize_graph(settings, instance=instance, selection=["raw_tables"])
        data = result.output_for_node("raw_tables")
        return metadata(result, "raw_tables"), data.stock[data.stock["item_id"] == new]

    log = EventLog(data_dir=tmp_path)
    log.record("ahead", "stock", {"item_id": new, "quantity": 7}, dataset=fingerprint)
    for n in range(5):
        log.record(f"i{n}", "interaction", {"user_id": 1, "item_id": 1, "ts": None}, dataset=fingerprint)
    assert run()[1].empty  # the item is not in the catalogue yet
    log.record("lamp", "item", {"item_id": new, "title": "lamp", "categories": [], "price": None,
                                "created_at": None, "stock": None}, dataset=fingerprint)
    meta, extended = run()
    assert meta["extended_last_run"] and meta["logged_events_read"] == 2  # the lamp, its stock
    assert extended["quantity"].tolist() == [7, 7] and extended["log_seq"].tolist() == [1, 7]
    fresh = with_events(load(SHOP), log.read())
    log.close()
    pd.testing.assert_frame_equal(extended, fresh.stock[fresh.stock["item_id"] == new])


def test_a_full_load_reaches_the_stock_changes_after_the_last_interaction(tmp_path):
    shop, folder = load(SHOP), tmp_path / "shop"
    folder.mkdir()
    after = shop.interactions["event_timestamp"].max() + pd.Timedelta(days=2)
    late = pd.DataFrame({"item_id": [1, 2, 3], "event_timestamp": [after] * 3, "quantity": [0, 5, 9]})
    for table in ("interactions", "items", "users"):
        getattr(shop, table).to_parquet(folder / f"{table}.parquet")
    pd.concat([shop.stock, late.astype(shop.stock.dtypes.to_dict())]).to_parquet(folder / "stock.parquet")
    settings = PipelineSettings(data_dir=tmp_path / "home", data=f"generic:{folder}")
    with instance_for(settings.data_dir) as instance:
        materialize_graph(settings, instance=instance, selection=FEATURES)
    store = build_resources(settings)["feature_store"].open()
    online = store.get_online_features(features=["item_stock:quantity"],
                                       entity_rows=[{"item_id": i} for i in (1, 2, 3)]).to_dict()
    assert online["quantity"] == [0, 5, 9]


def test_only_the_new_day_is_recomputed_and_joined(daily):
    settings, _, base, result, day = daily
    tables = metadata(result, "feature_tables")
    days_before = len({t.date() for frame in (base.interactions, base.stock)
                       for t in frame["event_timestamp"].dt.floor("D")})
    assert (tables["days_recomputed"], tables["days_kept"]) == (1, days_before)
    assert tables["recomputed_from"] == str(day.date()) and tables["user_history_rows_written"] == 4
    examples = metadata(result, "training_examples")
    assert (examples["rows_joined"], examples["joined_from"]) == (5, str(day.date()))
    assert examples["dagster/row_count"] == len(base.interactions) + 5


def test_the_new_days_examples_pass_the_leakage_check_and_never_see_their_instant(daily):
    settings, _, base, result, day = daily
    assert all(e.passed for e in result.get_asset_check_evaluations())
    path = settings.data_dir / "feature_repo" / "data" / TRAINING_EXAMPLES / f"{day.date()}.parquet"
    examples = result.output_for_node("training_examples")
    assert examples.joined_files() == [str(path)]  # the day this run joined, alone
    check = training_examples_have_no_leakage(examples, result.output_for_node("raw_tables"),
                                              build_resources(settings)["feature_store"])
    assert check.passed and check.metadata["rows_checked"].value == 5
    frame = pd.read_parquet(path).set_index(["user_id", "item_id"])
    before = base.interactions["user_id"].value_counts()
    # User 1's two events at 10:00 see neither each other nor themselves; 12:00 sees both.
    assert frame.loc[(1, 5), "event_count"] == frame.loc[(1, 6), "event_count"] == before[1]
    assert list(frame.loc[(1, 5), "recent_item_ids"]) == list(frame.loc[(1, 6), "recent_item_ids"])
    assert frame.loc[(1, 8), "event_count"] == before[1] + 2
    assert list(frame.loc[(1, 8), "recent_item_ids"])[-2:] == [5, 6]
    assert frame.loc[(2, 5), "event_count"] == before[2]


def test_online_history_has_the_new_day_and_an_older_load_does_not_move_it_back(daily):
    settings, instance, base, _, _ = daily
    store = build_resources(settings)["feature_store"].open()

    def user_1() -> tuple[list[int], int]:
        row = store.get_online_features(features=store.get_feature_service(ONLINE_SERVICE),
                                        entity_rows=[{"user_id": 1}]).to_dict()
        return list(row["recent_item_ids"][0]), row["event_count"][0]

    count = int((base.interactions["user_id"] == 1).sum())
    assert user_1()[0][-3:] == [5, 6, 8] and user_1()[1] == count + 3
    older = base.interactions["event_timestamp"].max().isoformat()
    materialize_graph(settings, instance=instance, selection=["online_features"],
                      run_config={"ops": {"online_features": {"config": {"end": older}}}})
    assert user_1()[0][-3:] == [5, 6, 8] and user_1()[1] == count + 3



def test_a_day_written_after_the_hourly_load_passed_it_still_reaches_the_online_store(tmp_path):
    """The hourly load at midnight (and at 01:00) moves Feast's watermark past the day before the
    01:00 daily run writes that day's rows: the daily run must still load them."""
    settings = PipelineSettings(data_dir=tmp_path, data=SHOP)
    with instance_for(tmp_path) as instance:
        base = materialize_graph(settings, instance=instance, selection=FEATURES
                                 ).output_for_node("raw_tables")
        day = base.last_event.floor("D") + pd.Timedelta(days=1)
        log = EventLog(data_dir=tmp_path)
        for n, item in enumerate((5, 6, 8)):
            log.record(f"day-{n}", "interaction", {
                "user_id": 1, "item_id": item, "ts": (day + pd.Timedelta(hours=10 + n)).isoformat()})
        log.close()

        def load(job, hours: int) -> None:  # a scheduled run at `hours` past the day's end
            end = (day + pd.Timedelta(days=1, hours=hours)).isoformat()
            materialize_graph(settings, instance=instance, selection=job.selection,
                              run_config={"ops": {"online_features": {"config": {
                                  "incremental": True, "end": end}}}})

        load(online_features_job, 0)
        load(online_features_job, 1)
        load(daily_features_job, 1)
    store = build_resources(settings)["feature_store"].open()
    row = store.get_online_features(features=["user_history:recent_item_ids",
                                              "item_popularity:count_1d"],
                                    entity_rows=[{"user_id": 1, "item_id": 6}]).to_dict()
    assert list(row["recent_item_ids"][0])[-3:] == [5, 6, 8]
    assert row["count_1d"] == [1]  # the day's one event of item 6, stamped at its midnight


def test_a_late_committed_upsert_of_an_item_reaches_the_stored_tables(tmp_path):
    """On PostgreSQL a lower seq can commit after a higher one was read: the items table then keeps
    its row count and newest seq, with one row changed."""
    shop = load("synthetic:items=20,users=10,events=100,seed=0")
    first, second = (int(i) for i in shop.items["item_id"].iloc[:2])

    def upsert(seq: int, item: int, title: str) -> Event:
        return Event(seq, f"k{seq}", "item", {"item_id": item, "title": title, "categories": [],
                                              "price": None, "created_at": None, "stock": 1},
                     datetime.now(UTC))

    store = RawTablesStore(data_dir=str(tmp_path))
    store.handle_output(None, with_events(shop, [upsert(1, first, "a"), upsert(5, second, "b")]))
    late = with_events(shop, [upsert(1, first, "a"), upsert(3, first, "renamed"), upsert(5, second, "b")])
    store.handle_output(None, late)
    assert store.stored().items.set_index("item_id")["title"][first] == "renamed"
