"""The re-ranker: hand-checked features, point-in-time candidates through real Feast, LambdaMART that
learns, save/load, and errors that name the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.datasets import load
from tests.utils.tables import make_dataset, utc
from towers.evaluate import Queries, temporal_split
from towers.features import examples, feature_store
from towers.model import TowerConfig
from towers.ranker import (
    FEATURES,
    Candidates,
    Categories,
    Ranker,
    RankerConfig,
    RankingData,
    UserState,
    features,
    fit_booster,
    ranking_data,
    train_ranker,
)
from towers.train import TrainConfig, fit

DAY = 86_400
NOW = 1_700_000_000
COL = {name: j for j, name in enumerate(FEATURES)}
TINY_TOWERS = TowerConfig(dim=16, max_len=20, encoder="mean")
VOCABULARY: dict[str, int] = {}  # one coding for every test's candidates and histories


def _codes(names: list[list[str]]) -> Categories:
    return Categories.encode(names, VOCABULARY)


def _candidates(n: int, **overrides) -> Candidates:
    fields = dict(item_ids=np.arange(n), scores=np.linspace(1, 0, n, dtype=np.float32),
                  price=np.ones(n), stock=np.ones(n, dtype=np.int64),
                  created_at=np.full(n, NOW - 10 * DAY), categories=_codes([["a"]] * n),
                  popularity=np.zeros((n, 3)))
    return Candidates(**{**fields, **overrides})


def _ndcg10(labels: np.ndarray, order: np.ndarray) -> float:
    hits = labels[order][:10]
    ideal = np.sort(labels)[::-1][:10]
    discounts = 1 / np.log2(np.arange(2, 12))
    return float((hits * discounts).sum() / (ideal * discounts).sum())


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
    np.testing.assert_allclose(x[:, COL["retrieval_rank"]], [0, 1, 2])
    np.testing.assert_allclose(x[:, COL["score_gap"]], [0, -0.4, -0.7], atol=1e-6)
    np.testing.assert_allclose(x[:, COL["item_age_days"]], [2, 0.5, 0])
    np.testing.assert_allclose(x[:, COL["category_affinity"]], [2 / 4, 3 / 4, 0])
    np.testing.assert_allclose(x[:, COL["days_since_category"]], [3, 3, np.nan])
    np.testing.assert_allclose(x[:, COL["popularity_7d"]], [2, 0, 4])
    np.testing.assert_allclose(x[:, COL["stock"]], [0, 7, 1])
    np.testing.assert_allclose(x[:, COL["history_length"]], 4)


def test_history_after_the_request_time_changes_no_feature():
    candidates = _candidates(2, categories=_codes([["drama"], ["war"]]))
    past = UserState(_codes([["drama"], ["war"]]), np.array([NOW - DAY, NOW]), now=NOW)
    leaky = UserState(_codes([["drama"], ["war"], ["war"]]), np.array([NOW - DAY, NOW, NOW + 5]),
                      now=NOW)
    np.testing.assert_array_equal(features(candidates, leaky), features(candidates, past))
    assert features(candidates, past)[1, COL["days_since_category"]] == 0  # this second counts


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
            assert row[COL["category_affinity"]] == np.float32(len(shared) / max(len(visible), 1))
            np.testing.assert_allclose(row[COL["days_since_category"]],
                                       (NOW - max(shared)) / DAY if shared else np.nan)
            assert row[COL["history_length"]] == len(visible)


def test_empty_or_future_history_gives_no_category_features():
    for user in (UserState(_codes([]), np.array([], np.int64), now=NOW),
                 UserState(_codes([["a"]]), np.array([NOW + 1]), now=NOW)):
        x = features(_candidates(3, categories=_codes([["a"], [], ["a", "b"]])), user)
        np.testing.assert_array_equal(x[:, COL["category_affinity"]], 0)
        assert np.isnan(x[:, COL["days_since_category"]]).all()
        np.testing.assert_array_equal(x[:, COL["history_length"]], 0)


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
    (lambda: RankingData(np.zeros((4, 2)), np.zeros(3), np.array([4])), "RankingData.labels"),
    (lambda: RankingData(np.zeros((4, 2)), np.zeros(4), np.array([3])), "RankingData.groups"),
    (lambda: RankerConfig(folds=1), "RankerConfig.folds"),
])
def test_bad_input_raises_an_error_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def _synthetic(queries: int, seed: int) -> RankingData:
    """Random features; a candidate is relevant exactly when its category_affinity exceeds 0.7."""
    rng = np.random.default_rng(seed)
    x = rng.random((queries * 50, len(FEATURES))).astype(np.float32)
    return RankingData(x, (x[:, COL["category_affinity"]] > 0.7).astype(np.float32),
                       np.full(queries, 50))


SMALL = RankerConfig(min_data_in_leaf=5, rounds=50)
FOLDS = np.arange(40) % 4


@pytest.fixture(scope="module")
def synthetic_ranker() -> Ranker:
    booster, _ = fit_booster(_synthetic(40, 0), FOLDS, SMALL)
    return Ranker(booster, {"ndcg10_retrieval": 0.1, "ndcg10_reranked": 0.2}, improves=True)


def test_lambdarank_learns_to_put_relevant_candidates_first(synthetic_ranker):
    test = _synthetic(10, 2)
    scores = synthetic_ranker.score(test.features).reshape(10, 50)
    labels = test.labels.reshape(10, 50)
    retrieval = np.mean([_ndcg10(y, np.arange(50)) for y in labels])
    reranked = np.mean([_ndcg10(y, np.argsort(-s)) for y, s in zip(labels, scores, strict=True)])
    assert retrieval < 0.6 and reranked > 0.95


def test_training_is_deterministic(synthetic_ranker):
    again, _ = fit_booster(_synthetic(40, 0), FOLDS, SMALL)
    assert again.model_to_string() == synthetic_ranker.booster.model_to_string()


def test_saved_ranker_scores_identically_after_load(synthetic_ranker, tmp_path):
    loaded = Ranker.load(synthetic_ranker.save(tmp_path / "ranker"))
    x = _synthetic(3, 5).features
    np.testing.assert_array_equal(loaded.score(x), synthetic_ranker.score(x))
    assert (loaded.metrics, loaded.improves) == (synthetic_ranker.metrics, True)


def test_score_equals_lightgbms_own_predict(synthetic_ranker):
    x = _synthetic(3, 7).features
    x[::5, COL["price"]] = np.nan  # missing values take the trees' default branches
    for matrix in (x, x.astype(np.float64), x[:, ::-1].copy()[:, ::-1], x[:0]):
        np.testing.assert_array_equal(synthetic_ranker.score(matrix),
                                      synthetic_ranker.booster.predict(matrix))
    booster = synthetic_ranker.booster
    kept, booster.best_iteration = booster.best_iteration, 1  # early stopping kept the first round
    try:
        np.testing.assert_array_equal(synthetic_ranker.score(x), booster.predict(x))
        assert not np.array_equal(synthetic_ranker.score(x), booster.predict(x, num_iteration=-1))
    finally:
        booster.best_iteration = kept


def test_scoring_a_matrix_of_the_wrong_width_names_features(synthetic_ranker):
    with pytest.raises(ValueError, match="features: shape"):
        synthetic_ranker.score(np.zeros((5, len(FEATURES) - 1)))


# ---------------------------------------------------------------- real Feast, point in time

T = "2024-03-10 12:00:00"
EVENTS = [
    (1, 3, "2024-03-09 10:00:00"), (1, 4, "2024-03-10 11:00:00"),  # user 1 before T
    (1, 5, T), (1, 6, "2024-03-11 09:00:00"),  # ... at T and after: invisible at T
    (2, 7, "2024-03-08 10:00:00"), (3, 7, "2024-03-09 10:00:00"),  # item 7: whole days before T
    (4, 7, "2024-03-10 08:00:00"),  # T's own day: enters the windows at the next midnight
    (5, 7, T), *[(u, 7, "2024-03-10 13:00:00") for u in range(6, 10)],  # at and after T
]
STOCK = [(7, "2024-03-01", 5), (7, "2024-03-10 11:59:59", 4), (7, T, 0), (7, "2024-03-11", 9)]


def test_candidate_features_at_t_use_no_event_at_or_after_t(tmp_path):
    ds = make_dataset(EVENTS, stock=STOCK)
    store = feature_store(ds, TINY_TOWERS.max_len, tmp_path)
    torch.manual_seed(0)
    artifact = fit(examples(store, ds.interactions), ds.items, tower=TINY_TOWERS,
                   train=TrainConfig(epochs=1))
    query = pd.DataFrame({"user_id": [1], "item_id": [6], "event_timestamp": utc(pd.Series([T]))})
    queries = Queries("temporal", query, [np.array([3, 4])], [np.array([6])])
    data, ids = ranking_data(artifact, ds.items, queries, store=store, k=28)
    x = dict(zip(ids[0].tolist(), data.features, strict=True))
    np.testing.assert_allclose(x[7][[COL["popularity_1d"], COL["popularity_7d"],
                                     COL["popularity_30d"]]], [1, 2, 2])
    assert x[7][COL["stock"]] == 4
    assert x[7][COL["category_affinity"]] == 0.5  # items 3 (c0) and 4 (c1) only; 7 is c1
    np.testing.assert_allclose(x[7][COL["days_since_category"]], 1 / 24, rtol=1e-5)
    assert x[5][COL["category_affinity"]] == 0 and np.isnan(x[5][COL["days_since_category"]])
    assert x[7][COL["history_length"]] == 2
    age = (pd.Timestamp(T, tz="UTC") - utc(pd.Series(["2020-01-01"]))[0]).total_seconds()
    np.testing.assert_allclose(x[7][COL["item_age_days"]], age / DAY)
    assert data.labels[ids[0] == 6].tolist() == [1.0] and data.labels.sum() == 1


def test_ranker_trained_on_movielens_reports_both_ndcgs_on_the_later_window(ml100k_dir, tmp_path):
    ds = load(f"movielens-100k:{ml100k_dir}")
    split = temporal_split(ds.interactions)
    store = feature_store(ds, TINY_TOWERS.max_len, tmp_path)
    torch.manual_seed(0)
    rows = examples(store, split.train.sample(5000, random_state=0))  # any towers will do here
    artifact = fit(rows, ds.items, tower=TINY_TOWERS, train=TrainConfig(epochs=1))
    ranker = train_ranker(artifact, ds.items, store=store, train=split.validation,
                          holdout=split.test, config=RankerConfig(candidates=20, rounds=50))
    assert ranker.metrics["holdout_users"] == len(split.test.targets)
    assert 0 < ranker.metrics["ndcg10_retrieval"] < 1 and 0 < ranker.metrics["ndcg10_reranked"] < 1
    assert ranker.improves == (ranker.metrics["ndcg10_reranked"] > ranker.metrics["ndcg10_retrieval"])
