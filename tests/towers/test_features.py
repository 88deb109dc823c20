"""Evaluation queries get their user features from Feast: TEMPORAL at the cut, LOO just after its
own instant with the protocol's later same-second events trimmed."""

from __future__ import annotations

import numpy as np
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
    frame, tied = split.test.frame, 0
    for i, (history, seen) in enumerate(zip(frame["recent_item_ids"], split.test.exclude,
                                            strict=True)):
        assert history[-1] == seen[-1]  # the validation item, the protocol's last visible event
        np.testing.assert_array_equal(history, seen[len(seen) - len(history):])
        assert len(history) >= min(len(seen), MAX_LEN - 1)
        stamps = frame["recent_timestamps"].iloc[i]
        tied += int(stamps[-1] == frame["event_timestamp"].iloc[i].timestamp() // 1)
    assert tied > 5  # users whose validation and test events share a second are covered
    for history, seen in zip(split.validation.frame["recent_item_ids"], split.validation.exclude,
                             strict=True):
        np.testing.assert_array_equal(history, seen[len(seen) - len(history):])


def test_queries_against_a_store_of_other_data_are_refused(small, small_store):
    more = loo_split(small.interactions.assign(user_id=small.interactions["user_id"] + 1000))
    with pytest.raises(ValueError, match="other data"):
        with_features(more, small_store)
