"""Re-ranker training: LambdaMART that learns, deterministically; point-in-time candidates through
real Feast, built as the service builds them; and errors that name the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.datasets import load
from feature_repo.datasets.contract import DAY
from tests.utils.tables import make_dataset, utc
from towers.evaluate import NO_ITEM, Queries, temporal_split
from towers.features import examples, feature_store
from towers.model import TowerConfig
from towers.ranker.features import COLUMN, FEATURES, Candidates, Categories, UserState, features
from towers.ranker.training import (
    MIN_HOLDOUT_USERS,
    RankerConfig,
    RankingData,
    gain_lower_bound,
    ranking_data,
    rerank,
    train_ranker,
)
from towers.train import TrainConfig, fit

TINY_TOWERS = TowerConfig(dim=16, max_len=20, encoder="mean")


def _ndcg10(labels: np.ndarray, order: np.ndarray) -> float:
    hits = labels[order][:10]
    ideal = np.sort(labels)[::-1][:10]
    discounts = 1 / np.log2(np.arange(2, 12))
    return float((hits * discounts).sum() / (ideal * discounts).sum())


@pytest.mark.parametrize(("make", "field"), [
    (lambda: RankingData(np.zeros((4, 2)), np.zeros(3), np.array([4])), "RankingData.labels"),
    (lambda: RankingData(np.zeros((4, 2)), np.zeros(4), np.array([3])), "RankingData.groups"),
    (lambda: RankerConfig(folds=1), "RankerConfig.folds"),
])
def test_bad_input_raises_an_error_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_lambdarank_learns_to_put_relevant_candidates_first(synthetic_ranker, synthetic):
    test = synthetic(10, 2)
    scores = synthetic_ranker.score(test.features).reshape(10, 50)
    labels = test.labels.reshape(10, 50)
    retrieval = np.mean([_ndcg10(y, np.arange(50)) for y in labels])
    reranked = np.mean([_ndcg10(y, np.argsort(-s)) for y, s in zip(labels, scores, strict=True)])
    assert retrieval < 0.6 and reranked > 0.95


def test_training_is_deterministic(synthetic_ranker, fit_synthetic):
    assert fit_synthetic().model_to_string() == synthetic_ranker.booster.model_to_string()


def test_booster_is_trained_on_the_served_feature_layout(synthetic_ranker):
    assert synthetic_ranker.booster.feature_name() == list(FEATURES)


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


@pytest.fixture(scope="module")
def at_t(tmp_path_factory):
    """The toy dataset and the training rows of user 1's query at T: (dataset, data, ids, and
    what made them: the ranking_data call with other items)."""
    ds = make_dataset(EVENTS, stock=STOCK)
    store = feature_store(ds, TINY_TOWERS.max_len, tmp_path_factory.mktemp("ranker"))
    torch.manual_seed(0)
    artifact = fit(examples(store, ds.interactions), ds.items, tower=TINY_TOWERS,
                   train=TrainConfig(epochs=1))
    query = pd.DataFrame({"user_id": [1], "item_id": [6], "event_timestamp": utc(pd.Series([T]))})
    queries = Queries("temporal", query, [np.array([3, 4])], [np.array([6])])
    data, ids = ranking_data(artifact, ds.items, queries, store=store, k=28)
    return ds, data, ids, lambda items, k=28: ranking_data(artifact, items, queries, store=store, k=k)


def test_candidate_features_at_t_use_no_event_at_or_after_t(at_t):
    ds, data, ids, _ = at_t
    x = dict(zip(ids[0].tolist(), data.features, strict=True))
    np.testing.assert_allclose(x[7][[COLUMN["popularity_1d"], COLUMN["popularity_7d"],
                                     COLUMN["popularity_30d"]]], [1, 2, 2])
    assert x[7][COLUMN["stock"]] == 4
    assert x[7][COLUMN["category_affinity"]] == 0.5  # items 3 (c0) and 4 (c1) only; 7 is c1
    np.testing.assert_allclose(x[7][COLUMN["days_since_category"]], 1 / 24, rtol=1e-5)
    assert x[5][COLUMN["category_affinity"]] == 0 and np.isnan(x[5][COLUMN["days_since_category"]])
    assert x[7][COLUMN["history_length"]] == 2
    age = (pd.Timestamp(T, tz="UTC") - utc(pd.Series(["2020-01-01"]))[0]).total_seconds()
    np.testing.assert_allclose(x[7][COLUMN["item_age_days"]], age / DAY)
    assert data.labels[ids[0] == 6].tolist() == [1.0] and data.labels.sum() == 1


def test_training_rows_equal_the_served_features_of_the_same_candidates(at_t):
    """A request at T from the raw catalogue, event log and stock log, with the service's own
    category coding, gets the training rows' features."""
    ds, data, ids, _ = at_t
    items = ds.items.set_index("item_id").loc[ids[0]]
    t = pd.Timestamp(T, tz="UTC")
    events = ds.interactions[(ds.interactions["event_timestamp"] < t)]
    days = (t.normalize() - events["event_timestamp"].dt.normalize()).dt.days  # whole days ago
    popularity = np.array([[((events["item_id"] == i) & (days >= 1) & (days <= n)).sum()
                            for n in (1, 7, 30)] for i in ids[0]])
    log = ds.stock[ds.stock["event_timestamp"] < t].groupby("item_id")["quantity"].last()
    history = events[events["user_id"] == 1]
    vocabulary: dict[str, int] = {"unrelated": 0}  # codes other than training's
    candidates = Candidates(
        ids[0], data.features[:, COLUMN["retrieval_score"]], items["price"].to_numpy(),
        log.reindex(ids[0], fill_value=0).to_numpy(),
        (items["created_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(),
        Categories.encode(items["categories"].tolist(), vocabulary), popularity)
    user = UserState(Categories.encode(ds.items.set_index("item_id").loc[history["item_id"],
                                                                          "categories"].tolist(),
                                       vocabulary),
                     (history["event_timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
                     .to_numpy(np.int64), int(t.timestamp()))
    np.testing.assert_array_equal(features(candidates, user), data.features)


def test_an_item_without_a_creation_time_is_as_old_as_the_service_reads_it(at_t):
    ds, _, _, rows = at_t
    undated = pd.Series(pd.NaT, index=ds.items.index, dtype="datetime64[us, UTC]")
    data, _ = rows(ds.items.assign(created_at=undated))  # the online store reads it as second 0
    since_1970 = pd.Timestamp(T, tz="UTC").timestamp() / DAY
    np.testing.assert_allclose(data.features[:, COLUMN["item_age_days"]], since_1970)


def test_a_catalogue_smaller_than_the_depth_offers_only_unseen_candidates(at_t, synthetic_ranker):
    """30 items, 2 seen, 30 asked for: 28 candidates, as the index would return; the seen items
    are neither rows nor ids, and re-ranking keeps the empty slots last."""
    ds, _, _, rows = at_t
    data, ids = rows(ds.items, k=30)
    assert ids.shape == (1, 30) and ids[0, 28:].tolist() == [NO_ITEM, NO_ITEM]
    assert not np.isin(ids, [3, 4]).any() and data.groups.tolist() == [28]
    assert np.isfinite(data.features[:, COLUMN["retrieval_score"]]).all()
    reranked = rerank(synthetic_ranker, data, ids)
    assert reranked[0, 28:].tolist() == [NO_ITEM, NO_ITEM]
    assert sorted(reranked[0, :28].tolist()) == sorted(ids[0, :28].tolist())


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
    gain = ranker.metrics["ndcg10_reranked"] - ranker.metrics["ndcg10_retrieval"]
    assert ranker.metrics["ndcg10_gain_low"] < gain or gain == 0
    assert ranker.improves == (len(split.test.targets) >= MIN_HOLDOUT_USERS
                               and ranker.metrics["ndcg10_gain_low"] > 0)


def test_a_gain_within_the_holdouts_noise_does_not_count_as_improving():
    """ML-100K's demo ranker gained 0.0013 NDCG@10 on 107 held-out users, with per-user swings of
    +-0.3: it lowered the served refit's NDCG@10 by 0.02. Such a gain must not switch it on."""
    rng = np.random.default_rng(1)
    noise = rng.choice([-0.3, 0.0, 0.3], size=107, p=[0.2, 0.6, 0.2])
    noisy = noise - noise.mean() + 0.0013
    assert noisy.mean() > 0 and gain_lower_bound(noisy) < 0
    # The one-sided 95 % bound: about mean - 1.645 standard errors on this many users.
    normal = noisy.mean() - 1.645 * noisy.std(ddof=1) / np.sqrt(len(noisy))
    assert abs(gain_lower_bound(noisy) - normal) < 0.003
    steady = np.abs(noise) / 10 + 0.005  # every user a little better
    assert gain_lower_bound(steady) > 0
    assert gain_lower_bound(steady) == gain_lower_bound(steady)  # seeded: the same verdict each run
    with pytest.raises(ValueError, match="no held-out queries"):
        gain_lower_bound(np.array([]))
