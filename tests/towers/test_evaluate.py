"""Evaluation: metrics on hand-computed rankings, exclusion, splits and baselines."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from feature_repo.datasets import DataError
from towers import baselines
from towers import evaluate as evaluate_module
from towers.evaluate import (
    NO_ITEM,
    VALIDATION_SCORES,
    Queries,
    dense_retrieval,
    evaluate,
    loo_split,
    make_split,
    ranking_metrics,
    temporal_split,
    top_k,
    validation_queries,
)


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "event_timestamp": pd.to_datetime([r[2] for r in rows], unit="s",
                                                           utc=True).astype("datetime64[us, UTC]")})


def test_loo_metrics_match_hand_computed_ranks():
    ranked = np.array([[5, 1, 2, 3], [1, 2, 3, 4], [9, 8, 7, 6]])
    metrics = ranking_metrics(ranked, [np.array([5]), np.array([3]), np.array([42])], "loo")
    assert metrics["hr@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(4)) / 3)
    assert metrics["hr@100"] == pytest.approx(2 / 3)


def test_set_metrics_normalise_by_ideal_dcg_of_min_targets_and_ten():
    ranked = np.array([[1, 7, 2] + list(range(100, 197))])
    metrics = ranking_metrics(ranked, [np.array([2, 1, 50])], "temporal")
    dcg = 1.0 + 1 / math.log2(4)
    idcg = 1.0 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg@10"] == pytest.approx(dcg / idcg)
    assert metrics["recall@10"] == pytest.approx(2 / 3)
    assert metrics["recall@100"] == pytest.approx(2 / 3)


def test_hit_beyond_rank_ten_counts_only_at_hundred():
    ranked = np.array([list(range(20, 120))])
    metrics = ranking_metrics(ranked, [np.array([45])], "loo")
    assert metrics["hr@10"] == 0 and metrics["ndcg@10"] == 0 and metrics["hr@100"] == 1


def test_retrieval_never_returns_excluded_items():
    ids = np.array([10, 20, 30, 40])
    vectors = np.eye(4, dtype=np.float32)
    user = np.array([[4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    retrieve = dense_retrieval(ids, vectors)
    assert retrieve(user, 2, [np.array([])]).tolist() == [[10, 20]]
    assert retrieve(user, 2, [np.array([10, 99])]).tolist() == [[20, 30]]


def test_retrieval_in_chunks_of_users_ranks_each_user_as_one_product_does():
    rng = np.random.default_rng(0)
    ids, vectors = np.arange(100, 150), rng.normal(size=(50, 8)).astype(np.float32)
    users = rng.normal(size=(7, 8)).astype(np.float32)
    exclude = [rng.choice(ids, size=i, replace=False) for i in range(7)]
    whole = dense_retrieval(ids, vectors)(users, 10, exclude)
    chunked = dense_retrieval(ids, vectors, chunk_scores=2 * len(ids))(users, 10, exclude)  # 2 users
    np.testing.assert_array_equal(chunked, whole)
    assert whole.shape == (7, 10) and not any(np.isin(row, seen).any()
                                              for row, seen in zip(whole, exclude, strict=True))
    assert dense_retrieval(ids, vectors, chunk_scores=1)(users[:0], 10, []).shape == (0, 10)


def test_a_large_validation_is_a_fixed_sample_of_whole_queries_and_the_test_stays_whole():
    events = _events([(u, i, 10 * i) for u in range(1, 41) for i in range(1, 5)])
    whole = make_split(SimpleNamespace(interactions=events, items=range(4)), "loo")
    split = make_split(SimpleNamespace(interactions=events), "loo", max_validation=7)
    assert len(whole.validation.frame) == 40 and len(split.validation.frame) == 7
    users = split.validation.frame["user_id"].tolist()
    assert users == sorted(users) and set(users) < set(whole.validation.frame["user_id"])
    v = whole.validation
    by_user = dict(zip(v.frame["user_id"], zip(v.targets, v.exclude, strict=True), strict=True))
    for user, target, seen in zip(users, split.validation.targets, split.validation.exclude,
                                  strict=True):
        assert target.tolist() == by_user[user][0].tolist()
        assert seen.tolist() == by_user[user][1].tolist()
    assert split.notes["validation_sampled_from"] == 40
    assert len(split.test.frame) == 40  # what is reported is never sampled
    again = make_split(SimpleNamespace(interactions=events), "loo", max_validation=7)
    assert again.validation.frame["user_id"].tolist() == users


def test_a_larger_catalogue_keeps_fewer_validation_queries_down_to_a_thousand():
    assert validation_queries(3_883) == validation_queries(VALIDATION_SCORES // 10_000) == 10_000
    assert validation_queries(1_000_000) == 2_500 and validation_queries(10**8) == 1_000
    events = _events([(u, i, 10 * i) for u in range(1, 1_201) for i in range(1, 4)])
    small = make_split(SimpleNamespace(interactions=events, items=range(3)), "loo")
    large = make_split(SimpleNamespace(interactions=events, items=range(VALIDATION_SCORES // 1_000)),
                       "loo")  # a len() of 2.5 million items, so 1,000 queries
    assert len(small.validation.frame) == 1_200 and len(large.validation.frame) == 1_000
    assert large.notes["validation_sampled_from"] == 1_200


def test_loo_split_holds_out_last_two_events_by_time_then_file_order():
    events = _events([(1, 1, 10), (1, 2, 20), (1, 4, 30), (1, 3, 30), (2, 1, 5), (2, 2, 6)])
    split = loo_split(events)
    assert split.train.query("user_id == 1")["item_id"].tolist() == [1, 2]
    assert [t.tolist() for t in split.validation.targets] == [[4]]
    assert [t.tolist() for t in split.test.targets] == [[3]]
    assert [e.tolist() for e in split.test.exclude] == [[1, 2, 4]]  # validation joins history
    assert split.test.visible.tolist() == [3] and split.validation.visible.tolist() == [2]
    assert split.notes["users_skipped_under_3_events"] == 1  # user 2, of two events


@pytest.mark.parametrize("protocol", ["loo", "temporal"])
def test_a_split_without_queries_is_a_data_error_naming_the_split_and_what_it_needs(protocol):
    events = _events([(1, 1, 10), (1, 2, 20), (2, 1, 30), (2, 3, 40)])  # two events a user
    with pytest.raises(DataError, match=f"tiny: the {protocol} split has no validation query: "
                                        "it needs a user"):
        make_split(SimpleNamespace(name="tiny", interactions=events, items=range(3)), protocol)


def test_loo_asks_no_query_whose_held_out_item_the_user_already_had():
    """A repeat purchase is no target: seen items are never recommended, so no ranking names it."""
    events = _events([(1, 1, 10), (1, 2, 20), (1, 1, 30),  # test repeats item 1
                      (2, 5, 10), (2, 5, 20), (2, 6, 30),  # validation repeats item 5
                      (3, 7, 10), (3, 8, 20), (3, 9, 30)])
    split = loo_split(events)
    assert split.validation.frame["user_id"].tolist() == [1, 3]
    assert split.test.frame["user_id"].tolist() == [2, 3]
    assert [t.tolist() for t in split.test.targets] == [[6], [9]]
    assert split.notes["repeat_targets_dropped"] == {"validation": 1, "test": 1}


def test_loo_queries_are_made_just_after_the_last_visible_event_never_at_the_targets_time():
    events = _events([(1, 1, 10), (1, 2, 20), (1, 4, 30), (1, 3, 30),
                      (2, 5, 100), (2, 6, 200), (2, 7, 900), (2, 8, 5000)])
    split = loo_split(events)

    def lookups(queries):
        return {user: (t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
                for user, t in zip(queries.frame["user_id"], queries.frame["event_timestamp"],
                                   strict=True)}

    # the validation target (item 7 at 900 s, item 4 at 30 s) follows a visible event at 200 s / 20 s
    assert lookups(split.validation) == {1: 20_000_001, 2: 200_000_001}
    # the test target (item 8 at 5000 s, item 3 at 30 s) follows the validation event
    assert lookups(split.test) == {1: 30_000_001, 2: 900_000_001}


def test_temporal_split_drops_and_counts_items_first_seen_after_cut():
    rows = [(u, i, 10 * u + i) for u in range(1, 5) for i in range(1, 5)]  # times 11..44
    rows += [(1, 99, 1000), (1, 3, 1001), (2, 2, 1002), (5, 1, 1003)]
    split = temporal_split(_events(rows), quantile=0.8)
    assert split.notes["target_events_dropped_new_items"] == 1
    assert split.notes["new_items_after_cut"] == 1
    # user 1 re-saw item 3 and user 2 item 2 (already seen); user 5 has no history: no queries
    assert split.test.frame["user_id"].tolist() == []


def test_popularity_ranks_by_training_counts_and_skips_seen():
    train = _events([(1, 1, 1), (2, 1, 2), (3, 1, 3), (1, 2, 4), (2, 2, 5), (3, 3, 6)])
    items = pd.DataFrame({"item_id": [1, 2, 3, 4]})
    recommend = baselines.popularity(train, items)
    frame = pd.DataFrame({"recent_item_ids": [[], [1]]})
    assert recommend(frame, 2, [np.array([]), np.array([1])]).tolist() == [[1, 2], [2, 3]]


def test_ease_recommends_the_item_that_co_occurs_with_the_history():
    rows = [(u, i, u * 10 + i) for u in range(20) for i in ((1, 2) if u % 2 else (3, 4))]
    items = pd.DataFrame({"item_id": [1, 2, 3, 4]})
    recommend = baselines.ease(_events(rows), items, lam=1.0)
    frame = pd.DataFrame({"recent_item_ids": [[1], [4]]})
    top = recommend(frame, 1, [np.array([1]), np.array([4])])
    assert top.tolist() == [[2], [3]]


def test_baselines_rank_a_chunk_of_users_at_a_time_as_all_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 100 * u + t) for u in range(60)
            for t, i in enumerate(rng.choice(np.arange(1, 41), 8, replace=False))]
    split = loo_split(_events(rows))
    items = pd.DataFrame({"item_id": np.arange(1, 41)})
    q = split.test
    whole = [make(split.train, items)(q.frame, 10, q.exclude) for make in (
        baselines.popularity, lambda train, items: baselines.ease(train, items, lam=5.0))]
    monkeypatch.setattr(evaluate_module, "CHUNK_SCORES", 3 * 40)  # 3 users a chunk, Gram's too
    chunked = [make(split.train, items)(q.frame, 10, q.exclude) for make in (
        baselines.popularity, lambda train, items: baselines.ease(train, items, lam=5.0))]
    for one, other in zip(whole, chunked, strict=True):
        assert one.shape == (60, 10)
        np.testing.assert_array_equal(one, other)


def test_ease_tuning_can_choose_a_lambda_far_beyond_two_thousand():
    """Users pick items by popularity alone: co-occurrence is noise, so heavy shrinkage wins."""
    rng = np.random.default_rng(0)
    popular = 1 / np.arange(1, 121)
    rows = [(u, int(i) + 1, 100 * u + t) for u in range(1000)
            for t, i in enumerate(rng.choice(120, 20, replace=False, p=popular / popular.sum()))]
    split = loo_split(_events(rows))
    items = pd.DataFrame({"item_id": np.arange(1, 121)})
    lam, by_lambda = baselines.tune_ease(split.train, split.validation, items)
    assert max(by_lambda) >= 1e5 and lam > 2_000, by_lambda


def test_harness_accepts_any_retrieval_function_and_checks_its_shape():
    frame = pd.DataFrame({"recent_item_ids": [[1], [2]]})
    queries = Queries("loo", frame, [np.array([1]), np.array([2])], [np.array([3]), np.array([500])])
    result = evaluate(lambda f, k, ex: np.tile(np.arange(3, 3 + k), (len(f), 1)), queries, k=100)
    assert result["hr@10"] == 0.5 and result["ndcg@10"] == 0.5
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda f, k, ex: np.zeros((1, k), dtype=int), queries)


def test_top_k_handles_excluded_ids_missing_from_catalogue():
    import torch
    top = top_k(torch.tensor([[1.0, 2.0, 3.0]]), np.array([7, 8, 9]), 3, [np.array([9, 1234])])
    assert top[0, :2].tolist() == [8, 7]


def test_top_k_leaves_empty_slots_where_the_unseen_items_run_out():
    import torch
    top = top_k(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, -torch.inf]]), np.array([7, 8, 9]), 3,
                [np.array([9]), np.array([])])
    assert top.tolist() == [[8, 7, NO_ITEM], [7, 8, NO_ITEM]]


def test_a_catalogue_smaller_than_the_cut_off_caps_it():
    frame = pd.DataFrame({"recent_item_ids": [[1], [2]]})
    queries = Queries("temporal", frame, [np.array([1]), np.array([2])],
                      [np.array([3, 4]), np.array([9])])
    catalogue = np.array([2, 3, 4])  # three items: every metric reads at most three
    result = evaluate(lambda f, k, ex: np.tile(catalogue, (len(f), 1))[:, :k], queries, k=100)
    assert result["recall@100"] == 0.5 and result["recall@10"] == 0.5
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda f, k, ex: np.zeros((2, k + 1), dtype=int), queries, k=10)
