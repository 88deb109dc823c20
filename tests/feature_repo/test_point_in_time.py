"""A training row (user, item, t) sees only what was known strictly before t, through real Feast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from feature_repo.store import FeatureStoreConfig, apply, build_store, render_repo, training_frame
from feature_repo.tables import write_feature_tables
from tests.utils.tables import make_dataset, utc

T = "2024-03-10 12:00:00"

EVENTS = [
    # user 1: two events in the same second, then one a second later
    (1, 10, T), (1, 11, T), (1, 12, "2024-03-10 12:00:01"),
    # users 2-9: a burst on item 20 the day after T
    *[(u, 20, "2024-03-11 09:00:00") for u in range(2, 10)],
    (2, 20, "2024-03-05 08:00:00"),  # one earlier sale of item 20
    # user 10 has nothing before their first event
    (10, 5, "2024-03-12 10:00:00"),
]
STOCK = [(10, "2024-03-01", 5), (10, "2024-03-10 12:00:01", 0), (20, "2024-03-01", 100)]


@pytest.fixture(scope="module", params=["rebuilt", "day_by_day"])
def adversarial_store(request, tmp_path_factory):
    """The tables written at once, or extended one day at a time as a daily run does."""
    dataset = make_dataset(EVENTS, stock=STOCK)
    config = FeatureStoreConfig(repo_dir=tmp_path_factory.mktemp("pit"))
    if request.param == "rebuilt":
        return build_store(dataset, config)
    repo = render_repo(config)
    for day in sorted({t.floor("D") for t in dataset.interactions["event_timestamp"]}):
        end = day + pd.Timedelta(days=1)
        update = write_feature_tables(dataclasses.replace(
            dataset, interactions=dataset.interactions[dataset.interactions["event_timestamp"] < end],
            stock=dataset.stock[dataset.stock["event_timestamp"] < end]), repo / "data")
        assert update.days[-1] == day.date()
    return apply(repo)


def _lookup(store, rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    entities = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])
    entities["event_timestamp"] = utc(entities["event_timestamp"])
    return training_frame(store, entities)


def test_same_second_events_do_not_see_each_other(adversarial_store):
    frame = _lookup(adversarial_store, [(1, 10, T), (1, 11, T), (1, 12, "2024-03-10 12:00:01")])
    assert [list(h) for h in frame["recent_item_ids"]] == [[], [], [10, 11]]
    assert frame["event_count"].tolist() == [0, 0, 2]


def test_stock_change_one_second_after_the_event_is_not_seen(adversarial_store):
    frame = _lookup(adversarial_store, [(1, 10, T), (1, 10, "2024-03-10 12:00:01"),
                                        (1, 10, "2024-03-10 12:00:02")])
    # The change stamped 12:00:01 is not known *strictly before* 12:00:01 either.
    assert frame["quantity"].tolist() == [5, 5, 0]


def test_popularity_burst_after_t_is_not_seen(adversarial_store):
    frame = _lookup(adversarial_store, [(1, 20, "2024-03-11 08:59:59"),
                                        (1, 20, "2024-03-11 23:59:59"),
                                        (1, 20, "2024-03-12 00:00:00")])
    # Popularity counts whole days before the lookup's day: the burst on the 11th shows on the 12th.
    assert frame["count_7d"].tolist() == [1, 1, 9]
    assert frame["count_1d"].tolist() == [0, 0, 8]


def test_user_whose_first_event_is_the_example_has_no_history(adversarial_store):
    frame = _lookup(adversarial_store, [(10, 5, "2024-03-12 10:00:00")])
    assert len(frame.loc[0, "recent_item_ids"]) == 0 and frame.loc[0, "event_count"] == 0
    assert frame.loc[0, "age"] == 30, "the static profile is visible from the start"


def test_training_frame_keeps_entity_order_and_columns(adversarial_store):
    entities = pd.DataFrame({"user_id": [3, 1], "item_id": [5, 10],
                             "event_timestamp": pd.to_datetime([T, T], utc=True),
                             "label": [1.0, 0.0]})
    frame = training_frame(adversarial_store, entities)
    assert frame[["user_id", "item_id", "label"]].values.tolist() == [[3, 5, 1.0], [1, 10, 0.0]]


def test_training_frame_refuses_naive_timestamps(adversarial_store):
    entities = pd.DataFrame({"user_id": [1], "item_id": [10],
                             "event_timestamp": [pd.Timestamp(T)]})
    with pytest.raises(ValueError, match="event_timestamp"):
        training_frame(adversarial_store, entities)


def _history_strictly_before(interactions: pd.DataFrame, user: int, t: pd.Timestamp,
                             length: int) -> list[int]:
    mine = interactions[(interactions["user_id"] == user) & (interactions["event_timestamp"] < t)]
    return mine.sort_values("event_timestamp", kind="stable")["item_id"].tolist()[-length:]


def test_ml100k_histories_match_a_recomputation_strictly_before_t(ml100k_store, ml100k_dataset):
    interactions = ml100k_dataset.interactions
    sample = interactions.sample(300, random_state=0)
    frame = training_frame(ml100k_store, sample[["user_id", "item_id", "event_timestamp"]])
    for row in frame.itertuples():
        expected = _history_strictly_before(interactions, row.user_id, row.event_timestamp, 50)
        assert list(row.recent_item_ids) == expected, f"user {row.user_id} at {row.event_timestamp}"
        assert row.item_id not in list(row.recent_item_ids)[-1:] or expected[-1:] == [row.item_id]
    stock = ml100k_dataset.stock
    for row in frame.head(100).itertuples():
        known = stock[(stock["item_id"] == row.item_id) & (stock["event_timestamp"] < row.event_timestamp)]
        expected = known["quantity"].iloc[-1] if len(known) else None
        assert (row.quantity if not np.isnan(row.quantity) else None) == expected


def test_streamed_training_frame_equals_the_in_memory_one(adversarial_store, tmp_path):
    from feature_repo.store import write_training_frame

    rows = [(1, 12, "2024-03-10 12:00:01"), (10, 5, "2024-03-12 10:00:00"), (1, 10, T)]
    entities = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])
    entities["event_timestamp"] = utc(entities["event_timestamp"])
    path = tmp_path / "frame.parquet"
    assert write_training_frame(adversarial_store, entities, path, chunk_rows=2) == 3
    streamed = pd.read_parquet(path)
    in_memory = training_frame(adversarial_store, entities).sort_values(
        ["user_id", "event_timestamp"]).reset_index(drop=True)
    assert streamed["item_id"].tolist() == in_memory["item_id"].tolist() == [10, 12, 5]
    assert [list(h) for h in streamed["recent_item_ids"]] == [[], [10, 11], []]
    assert not list(tmp_path.glob(".*")), "no scratch file left behind"


def test_times_in_features_are_whole_seconds_floored_as_the_index_and_towers_floor_them(tmp_path):
    dataset = make_dataset([(1, 1, "2024-03-10 12:00:00.7"), (1, 2, "2024-03-10 12:00:05.2")], items=3)
    dataset.items["created_at"] = utc(pd.Series(
        ["2020-01-01 00:00:00.7", "1969-12-31 23:59:59.5", "2020-01-01 00:00:00"]))
    store = build_store(dataset, FeatureStoreConfig(repo_dir=tmp_path))
    frame = _lookup(store, [(1, item, "2024-03-10 12:00:06") for item in (1, 2, 3)])
    second = int(pd.Timestamp("2024-03-10 12:00:00", tz="UTC").timestamp())
    assert list(frame.loc[0, "recent_timestamps"]) == [second, second + 5]
    new_year = int(pd.Timestamp("2020-01-01", tz="UTC").timestamp())
    assert frame["created_at_s"].tolist() == [new_year, -1, new_year]
