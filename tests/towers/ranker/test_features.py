"""Re-ranker features: hand-checked values, history after the request time, and errors that name
the field."""

from __future__ import annotations

import numpy as np
import pytest

from feature_repo.datasets.contract import DAY
from towers.ranker.features import COLUMN, FEATURES, Candidates, Categories, UserState, features

NOW = 1_700_000_000
VOCABULARY: dict[str, int] = {}  # one coding for every test's candidates and histories


def _codes(names: list[list[str]]) -> Categories:
    return Categories.encode(names, VOCABULARY)


def _candidates(n: int, **overrides) -> Candidates:
    fields = dict(item_ids=np.arange(n), scores=np.linspace(1, 0, n, dtype=np.float32),
                  price=np.ones(n), stock=np.ones(n, dtype=np.int64),
                  created_at=np.full(n, NOW - 10 * DAY), categories=_codes([["a"]] * n),
                  popularity=np.zeros((n, 3)))
    return Candidates(**{**fields, **overrides})


def test_features_match_hand_computed_values_on_a_toy_query():
    candidates = _candidates(3, scores=np.array([0.9, 0.5, 0.2], np.float32),
                             categories=_codes([["drama"], ["comedy", "drama"], ["horror"]]),
                             created_at=np.array([NOW - 2 * DAY, NOW - DAY // 2, NOW]),
                             popularity=np.array([[1, 2, 3], [0, 0, 5], [4, 4, 4]]),
                             price=np.array([1.5, 2.5, 3.5]), stock=np.array([0, 7, 1]))
    user = UserState(history_categories=_codes([["drama"], ["comedy"], ["drama", "war"], ["war"]]),
                     history_timestamps=np.array([NOW - 9 * DAY, NOW - 6 * DAY, NOW - 3 * DAY,
                                                  NOW - DAY]), now=NOW)
    x = features(candidates, user)
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    expected = {
        "retrieval_score": [0.9, 0.5, 0.2], "retrieval_rank": [0, 1, 2],
        "score_gap": [0, -0.4, -0.7], "popularity_1d": [1, 0, 4], "popularity_7d": [2, 0, 4],
        "popularity_30d": [3, 5, 4], "item_age_days": [2, 0.5, 0], "price": [1.5, 2.5, 3.5],
        "stock": [0, 7, 1], "category_affinity": [2 / 4, 3 / 4, 0],
        "days_since_category": [3, 3, np.nan], "history_length": [4, 4, 4]}
    assert set(expected) == set(FEATURES)  # a new feature needs its hand-computed value here
    for name, values in expected.items():
        np.testing.assert_allclose(x[:, COLUMN[name]], values, atol=1e-6, err_msg=name)


def test_history_after_the_request_time_changes_no_feature():
    candidates = _candidates(2, categories=_codes([["drama"], ["war"]]))
    past = UserState(_codes([["drama"], ["war"]]), np.array([NOW - DAY, NOW]), now=NOW)
    leaky = UserState(_codes([["drama"], ["war"], ["war"]]), np.array([NOW - DAY, NOW, NOW + 5]),
                      now=NOW)
    np.testing.assert_array_equal(features(candidates, leaky), features(candidates, past))
    assert features(candidates, past)[1, COLUMN["days_since_category"]] == 0  # this second counts


def test_category_features_equal_a_per_pair_count_on_random_multi_category_items():
    """Affinity counts history items sharing at least one category (not shared categories)."""
    rng = np.random.default_rng(0)
    names = [[f"c{j}" for j in rng.choice(8, rng.integers(0, 4), replace=False)]
             for _ in range(60)]  # 0 to 3 categories each, from 8
    for _ in range(20):
        cand, hist = names[:30], [names[i] for i in rng.choice(60, rng.integers(0, 12))]
        stamps = np.sort(rng.integers(NOW - 9 * DAY, NOW + 2 * DAY, len(hist)))  # some after now
        x = features(_candidates(30, categories=_codes(cand)),
                     UserState(_codes(hist), stamps, now=NOW))
        visible = [(set(h), t) for h, t in zip(hist, stamps, strict=True) if t <= NOW]
        for c, row in zip(cand, x, strict=True):
            shared = [t for h, t in visible if h & set(c)]
            assert row[COLUMN["category_affinity"]] == np.float32(len(shared) / max(len(visible), 1))
            np.testing.assert_allclose(row[COLUMN["days_since_category"]],
                                       (NOW - max(shared)) / DAY if shared else np.nan)
            assert row[COLUMN["history_length"]] == len(visible)


def test_empty_or_future_history_gives_no_category_features():
    for user in (UserState(_codes([]), np.array([], np.int64), now=NOW),
                 UserState(_codes([["a"]]), np.array([NOW + 1]), now=NOW)):
        x = features(_candidates(3, categories=_codes([["a"], [], ["a", "b"]])), user)
        np.testing.assert_array_equal(x[:, COLUMN["category_affinity"]], 0)
        assert np.isnan(x[:, COLUMN["days_since_category"]]).all()
        np.testing.assert_array_equal(x[:, COLUMN["history_length"]], 0)


def test_categories_code_take_and_concat_items_in_order():
    vocabulary: dict[str, int] = {}
    first = Categories.encode([["x", "y"], [], ["y"]], vocabulary)
    more = Categories.encode([["z"]], vocabulary)
    assert vocabulary == {"x": 0, "y": 1, "z": 2}
    both = first.concat(more)
    np.testing.assert_array_equal(both.offsets, [0, 2, 2, 3, 4])
    picked = both.take(np.array([3, 0, 1, 0]))
    bounds = zip(picked.offsets[:-1], picked.offsets[1:], strict=True)
    assert [picked.codes[a:b].tolist() for a, b in bounds] == [[2], [0, 1], [], [0, 1]]
    np.testing.assert_array_equal(picked.item_of(np.arange(5)), [0, 1, 1, 3, 3])
    assert len(both.take(np.array([], np.int64))) == 0
    head, tail = both.split(1)
    assert (head.codes.tolist(), head.offsets.tolist()) == ([0, 1], [0, 2])
    assert (tail.codes.tolist(), tail.offsets.tolist()) == ([1, 2], [0, 0, 1, 2])


@pytest.mark.parametrize(("make", "field"), [
    (lambda: _candidates(3, scores=np.zeros(2, np.float32)), "Candidates.scores"),
    (lambda: _candidates(3, categories=_codes([["a"]] * 4)), "Candidates.categories"),
    (lambda: _candidates(3, popularity=np.zeros((3, 2))), "Candidates.popularity"),
    (lambda: UserState(_codes([["a"]]), np.array([1, 2]), now=3), "UserState.history_timestamps"),
    (lambda: Categories(np.array([1, 2]), np.array([0, 1])), "Categories.offsets"),
])
def test_bad_input_raises_an_error_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
