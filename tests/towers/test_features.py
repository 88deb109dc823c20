"""Evaluation queries get their user features from Feast: TEMPORAL at the cut, LOO just after its
last visible event with the protocol's later same-second events trimmed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.towers.conftest import MAX_LEN
from towers.evaluate import loo_split, temporal_split
from towers.features import with_features


def test_temporal_queries_see_the_last_events_before_the_cut(small, small_store):
    split = with_features(temporal_split(small.interactions), small_store)
    assert len(split.test.frame) > 5
    for history, seen in zip(split.test.frame["recent_item_ids"], split.test.exclude, strict=True):
        np.testing.assert_array_equal(history, seen[-MAX_LEN:])


def test_loo_test_history_holds_the_validation_item_even_in_the_same_second(small, small_store):
    split = with_features(loo_split(small.interactions), small_store)
    frame = split.test.frame
    for history, seen in zip(frame["recent_item_ids"], split.test.exclude, strict=True):
        assert history[-1] == seen[-1]  # the validation item, the protocol's last visible event
        np.testing.assert_array_equal(history, seen[len(seen) - len(history):])
        assert len(history) >= min(len(seen), MAX_LEN - 1)
    last_two = small.interactions.sort_values("event_timestamp", kind="stable").groupby(
        "user_id")["event_timestamp"].agg(lambda t: t.iloc[-1] == t.iloc[-2])
    assert last_two.sum() > 5  # users whose validation and test events share a second are covered
    for history, seen in zip(split.validation.frame["recent_item_ids"], split.validation.exclude,
                             strict=True):
        np.testing.assert_array_equal(history, seen[len(seen) - len(history):])


def test_loo_queries_look_up_just_after_their_last_visible_event_not_at_the_target(small,
                                                                                 small_store):
    split = with_features(loo_split(small.interactions), small_store)
    events = small.interactions.groupby("user_id")["event_timestamp"]
    for queries, position in ((split.validation, -2), (split.test, -1)):
        frame = queries.frame
        newest = [pd.Timestamp(s[-1], unit="s", tz="UTC") for s in frame["recent_timestamps"]]
        lookup = frame["event_timestamp"].tolist()
        assert lookup == [t + pd.Timedelta(microseconds=1) for t in newest]
        target = [events.get_group(u).sort_values(kind="stable").iloc[position]
                  for u in frame["user_id"]]
        assert sum(t > s for t, s in zip(target, lookup, strict=True)) > len(frame) / 2


def test_queries_against_a_store_of_other_data_are_refused(small, small_store):
    more = loo_split(small.interactions.assign(user_id=small.interactions["user_id"] + 1000))
    with pytest.raises(ValueError, match="other data"):
        with_features(more, small_store)
