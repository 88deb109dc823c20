"""Re-ranker training rows from the towers and Feast, and `train_ranker`.

The towers retrieve candidates for queries from a window *later* than their own training data;
every candidate's popularity and stock come from Feast's point-in-time join at the query time
(strictly before it), the user's history only holds events before it, and the label is whether the
candidate is in the user's target set. The rows are built by the serving path's `features()`. The
round count is early-stopped on validation query groups (user folds); `metrics` and `improves`
come from a still later window. See docs/ranker.md.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch

from towers.artifact import Artifact
from towers.data import item_seconds, unix_seconds
from towers.evaluate import NO_ITEM, TEMPORAL_QUANTILE, Queries, ndcg_at_10, temporal_split, top_k
from towers.features import query_features
from towers.ranker.features import FEATURES, Candidates, Categories, UserState, features
from towers.ranker.model import Ranker

log = logging.getLogger(__name__)

# A ranker is served only when its held-out gain over retrieval order is above 0 with this
# confidence: on a hundred queries a mean gain of 0.001 is noise (docs/ranker.md).
GAIN_CONFIDENCE = 0.95
MIN_HOLDOUT_USERS = 30  # below this the bootstrap has too few distinct resamples to judge by
# Ranker queries at 8 cuts from TEMPORAL_QUANTILE of the events before the test cut (the towers'
# end, T1) on: ~4x the users of one cut, each seen at several points of the window.
WINDOW_QUANTILES = tuple(TEMPORAL_QUANTILE + i * (1 - TEMPORAL_QUANTILE) / 8 for i in range(8))


@dataclass
class RankerConfig:
    """Candidates and LightGBM settings; saved with every ranker."""

    # Retrieved and re-ranked per query: the service's re-rank depth. 30 cost no NDCG@10 against
    # 50 or 100 on ML-100K (docs/ranker.md) and is cheaper to search and re-rank.
    candidates: int = 30
    learning_rate: float = 0.05  # with early stopping, lower only costs rounds
    num_leaves: int = 15  # ~50k training rows on ML-100K: small trees generalise
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    rounds: int = 300  # upper bound; the cross-validated NDCG@10 picks the count below it
    patience: int = 50  # a fold stops after this many rounds without validation gain
    folds: int = 4  # user folds for choosing the round count: one small validation set is noisy
    seed: int = 0
    num_threads: int = 1  # fixed, so training is deterministic

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"RankerConfig.folds: {self.folds}; at least 2 (one validates)")


@dataclass(frozen=True)
class RankingData:
    """Rows of (query, candidate): features, 0/1 labels, and the number of rows per query."""

    features: np.ndarray  # (R, F) float32
    labels: np.ndarray  # (R,)
    groups: np.ndarray  # (Q,) rows per query, queries in row order

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.features):
            raise ValueError(f"RankingData.labels: {len(self.labels)} values, expected "
                             f"{len(self.features)} (one per features row)")
        if int(np.sum(self.groups)) != len(self.features):
            raise ValueError(f"RankingData.groups: sum to {int(np.sum(self.groups))}, expected "
                             f"{len(self.features)} rows")

    def select(self, queries: np.ndarray) -> RankingData:
        """The rows of the queries whose mask is True."""
        rows = np.repeat(queries, self.groups)
        return RankingData(self.features[rows], self.labels[rows], self.groups[queries])


def fit_booster(data: RankingData, folds: np.ndarray, config: RankerConfig
                ) -> tuple[lgb.Booster, dict]:
    """LambdaMART on `data`, stopped where the mean validation NDCG@10 over the folds peaks.

    `folds` holds each query's fold (split by user, so no user is on both sides). Every fold trains
    on the others and records its NDCG@10 per round until it stops improving; the final model
    trains on all queries for the round count where the mean curve peaks. Deterministic for a
    fixed config.
    """
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
              "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
              "min_data_in_leaf": config.min_data_in_leaf,
              "feature_fraction": config.feature_fraction, "lambda_l2": config.lambda_l2,
              "seed": config.seed, "deterministic": True, "force_row_wise": True,
              "num_threads": config.num_threads, "verbosity": -1}
    curves = []
    for fold in np.unique(folds):
        result: dict = {}
        lgb.train(params, _dataset(data.select(folds != fold)), config.rounds,
                  valid_sets=[_dataset(data.select(folds == fold))],
                  callbacks=[lgb.record_evaluation(result),
                             lgb.early_stopping(config.patience, verbose=False)])
        curves.append(result["valid_0"]["ndcg@10"])
    # Each curve ends `patience` rounds after its fold's best; average the rounds all folds ran.
    curve = np.mean([c[:min(map(len, curves))] for c in curves], axis=0)  # (rounds,)
    rounds = int(np.argmax(curve)) + 1
    log.info("ranker: %d rounds, cross-validated NDCG@10 %.4f (round 1: %.4f)", rounds,
             curve[rounds - 1], curve[0])
    booster = lgb.train(params, _dataset(data), rounds)
    return booster, {"rounds": rounds, "cv_ndcg10": float(curve[rounds - 1])}


def _dataset(data: RankingData) -> lgb.Dataset:
    return lgb.Dataset(data.features, data.labels, group=data.groups,
                       feature_name=list(FEATURES), free_raw_data=False)


def retrieve(artifact: Artifact, items: pd.DataFrame, queries: Queries, k: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """The towers' top k ids and their dot scores, (U, k) each, seen items excluded: a query that
    has fewer than k unseen items ends in NO_ITEM slots, scored -inf."""
    ids = items["item_id"].to_numpy()
    scores = torch.from_numpy(artifact.embed_users(queries.frame)
                              @ artifact.embed_items(items).T)  # (U, N)
    ranked = top_k(scores, ids, k, queries.exclude)  # (U, k)
    found = ranked != NO_ITEM
    order = np.argsort(ids)
    columns = order[np.searchsorted(ids, np.where(found, ranked, ids[order[0]]), sorter=order)]
    return ranked, np.where(found, np.take_along_axis(scores.numpy(), columns, axis=1), -np.inf)


def item_state(store, item_ids: np.ndarray, times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Popularity (n, 3) and stock (n,) of each (item, time) as Feast knows them strictly before it.

    Popularity is the item_popularity view's counts in its field order (1, 7, 30 days, as
    `Candidates.popularity`), absent ones filled as the definitions say; no stock row means none in
    stock. Each distinct pair is looked up once.
    """
    from feature_repo.item_features import item_popularity_fv, item_stock_fv
    from feature_repo.store import when_absent

    counts = [f.name for f in item_popularity_fv.features]
    refs = [f"{item_popularity_fv.name}:{name}" for name in counts] + [f"{item_stock_fv.name}:quantity"]
    fill = {name: value.as_py() for name, value in when_absent().items() if name in counts}
    entity = pd.DataFrame({"item_id": np.asarray(item_ids, dtype=np.int64),
                           "event_timestamp": pd.Series(times).astype("datetime64[us, UTC]")
                           .to_numpy()})
    unique = entity.drop_duplicates(ignore_index=True)
    found = store.get_historical_features(entity_df=unique, features=refs).to_df()
    found["event_timestamp"] = found["event_timestamp"].astype("datetime64[us, UTC]")
    merged = entity.merge(found, on=["item_id", "event_timestamp"], how="left")
    values = merged[[*counts, "quantity"]].fillna({**fill, "quantity": 0}).to_numpy(dtype=np.int64)
    return values[:, :-1], values[:, -1]


def ranking_data(artifact: Artifact, items: pd.DataFrame, queries: Queries, *, store, k: int
                 ) -> tuple[RankingData, np.ndarray]:
    """Feature rows of each query's retrieved candidates (at most k: its unseen items), and the
    (U, k) retrieved ids, NO_ITEM past the last.

    The user's history (for the towers and the category features) is Feast's at the query time,
    as the service's online store holds it: `store`'s history_length must be the towers' max_len.
    """
    queries = query_features(store, queries)
    ids, scores = retrieve(artifact, items, queries, k)
    position = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())  # in `items`
    categories = Categories.encode(items["categories"].tolist(), {})
    price = items["price"].to_numpy(dtype=np.float64)
    created = item_seconds(items)  # a missing date is 0, as the service reads it
    times = queries.frame["event_timestamp"]
    found = ids != NO_ITEM  # (U, k)
    popularity, stock = np.zeros((*ids.shape, 3), dtype=np.int64), np.zeros(ids.shape, dtype=np.int64)
    popularity[found], stock[found] = item_state(store, ids[found],
                                                 times.repeat(found.sum(axis=1)))
    now = unix_seconds(times)
    rows = []
    for q, (history, stamps) in enumerate(zip(queries.frame["recent_item_ids"],
                                              queries.frame["recent_timestamps"], strict=True)):
        past = position.loc[np.asarray(history, dtype=np.int64)].to_numpy()
        user = UserState(categories.take(past), np.asarray(stamps, dtype=np.int64), int(now[q]))
        m = found[q]
        cand = position.loc[ids[q, m]].to_numpy()
        rows.append(features(Candidates(ids[q, m], scores[q, m], price[cand], stock[q, m],
                                        created[cand], categories.take(cand), popularity[q, m]),
                             user))
    labels = np.concatenate([np.isin(row[m], target) for row, m, target
                             in zip(ids, found, queries.targets, strict=True)]).astype(np.float32)
    data = RankingData(np.concatenate(rows), labels, found.sum(axis=1))
    return data, ids


def rerank(ranker: Ranker, data: RankingData, ids: np.ndarray) -> np.ndarray:
    """The (U, k) ids of each query ordered by ranker score (ties keep retrieval order; NO_ITEM
    slots stay last)."""
    scores = np.full(ids.shape, -np.inf)
    scores[ids != NO_ITEM] = ranker.score(data.features)
    return np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable"), axis=1)


def window_queries(interactions: pd.DataFrame,
                   quantiles: tuple[float, ...] = WINDOW_QUANTILES) -> Queries:
    """Queries at several cuts (quantiles of the events' times): at each, every user's history
    before it and, as targets, their new items from it to the end of `interactions`."""
    parts = [temporal_split(interactions, quantile=q).test for q in quantiles]
    return Queries(parts[0].protocol, pd.concat([p.frame for p in parts], ignore_index=True),
                   [x for p in parts for x in p.exclude], [x for p in parts for x in p.targets])


def train_ranker(artifact: Artifact, items: pd.DataFrame, *, store, train: Queries,
                 holdout: Queries, config: RankerConfig | None = None) -> Ranker:
    """Train on `train` queries' candidates; measure retrieval vs re-rank on `holdout`.

    The towers must be trained on events before every `train` query, and `holdout` queries come
    after the `train` targets, e.g. with `split = temporal_split(events)`: towers on `split.train`,
    `train=window_queries(split.test_train)`, `holdout=split.test`. Queries are entity rows as the
    splits give them; `store` is the dataset's Feast store (history_length = the towers' max_len).
    """
    config = config or RankerConfig()
    config = replace(config, candidates=min(config.candidates, len(items)))  # a small catalogue
    data, _ = ranking_data(artifact, items, train, store=store, k=config.candidates)
    users = train.frame["user_id"].to_numpy()
    unique = np.unique(users)
    folds = (np.random.default_rng(config.seed).permutation(len(unique)) % config.folds
             )[np.searchsorted(unique, users)]  # (Q,) a random, balanced fold per user
    # Queries without a relevant candidate have no pairs to learn from and no NDCG to measure.
    labelled = np.bincount(np.repeat(np.arange(len(data.groups)), data.groups), weights=data.labels,
                           minlength=len(data.groups)) > 0  # (Q,); a query without candidates: False
    if len(np.unique(folds[labelled])) < 2:
        raise ValueError(f"train: {int(labelled.sum())} queries have a target among their "
                         f"{config.candidates} candidates; need users in at least 2 folds")
    if not holdout.targets:
        raise ValueError("holdout: no queries to measure the re-ranker on")
    booster, fitted = fit_booster(data.select(labelled), folds[labelled], config)
    ranker = Ranker(booster, config=asdict(config))
    held, ids = ranking_data(artifact, items, holdout, store=store, k=config.candidates)
    before = ndcg_at_10(ids, holdout.targets)
    gain = ndcg_at_10(rerank(ranker, held, ids), holdout.targets) - before
    low = gain_lower_bound(gain, config.seed)
    ranker.metrics = {"ndcg10_retrieval": float(before.mean()),
                      "ndcg10_reranked": float((before + gain).mean()), "ndcg10_gain_low": low,
                      "holdout_users": len(gain), "train_queries": int(labelled.sum()),
                      "train_queries_unlabelled": int((~labelled).sum()), **fitted}
    ranker.improves = len(gain) >= MIN_HOLDOUT_USERS and low > 0
    log.info("ranker: holdout NDCG@10 retrieval %.4f -> reranked %.4f over %d users (the gain's "
             "%g%% lower bound %+.4f)", before.mean(), (before + gain).mean(), len(gain),
             100 * GAIN_CONFIDENCE, low)
    return ranker


def gain_lower_bound(gain: np.ndarray, seed: int = 0, resamples: int = 2000) -> float:
    """The one-sided GAIN_CONFIDENCE lower bound of the mean per-query gain (a paired bootstrap
    over the held-out queries): above 0, re-ranking beats retrieval order beyond their noise."""
    if len(gain) == 0:
        raise ValueError("gain_lower_bound: no held-out queries")
    rng = np.random.default_rng(seed)
    means = np.array([gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(resamples)])
    return float(np.quantile(means, 1 - GAIN_CONFIDENCE))
