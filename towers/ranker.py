"""The learned re-ranker: LambdaMART (LightGBM `lambdarank`) over features the towers do not see.

Serving: the service builds `Candidates` (one query's retrieved items, in retrieval order) and a
`UserState`, calls `features` (vectorised numpy, no pandas) and orders by `Ranker.score`, unless
`Ranker.improves` is False, in which case it keeps retrieval order.

Training (`train_ranker`): the towers retrieve candidates for queries from a window *later* than
their own training data; every candidate's popularity and stock come from Feast's point-in-time join
at the query time (strictly before it), the user's history only holds events before it, and the
label is whether the candidate is in the user's target set. The round count is early-stopped on
validation query groups (user folds); `metrics` and `improves` come from a still later window.
See docs/ranker.md.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import lightgbm.basic as lgb_c  # the C API's handle: Ranker.score calls it directly
import numpy as np
import pandas as pd
import torch

from feature_repo.store import atomic_write
from towers.artifact import Artifact
from towers.data import unix_seconds
from towers.evaluate import TEMPORAL_QUANTILE, Queries, ranking_metrics, temporal_split, top_k
from towers.features import query_features

log = logging.getLogger(__name__)

RANKER_VERSION = 1  # bump when the saved layout or the meaning of a feature changes
DAY = 86_400.0
FEATURES: tuple[str, ...] = (
    "retrieval_score",  # the towers' dot product
    "retrieval_rank",  # 0 = the towers' best
    "score_gap",  # retrieval_score minus the query's best: scores are comparable within a query only
    "popularity_1d",  # Feast item_popularity: events on the previous whole day
    "popularity_7d",
    "popularity_30d",
    "item_age_days",  # now - created_at
    "price",
    "stock",
    "category_affinity",  # share of the user's recent items sharing a category with the candidate
    "days_since_category",  # since the user's last item sharing one; NaN if none
    "history_length",  # recent items the user has (up to the store's history_length)
)
POPULARITY_REFS = ["item_popularity:count_1d", "item_popularity:count_7d",
                   "item_popularity:count_30d"]
STOCK_REF = "item_stock:quantity"
# Ranker queries at 8 cuts from TEMPORAL_QUANTILE of the events before the test cut (the towers'
# end, T1) on: ~4x the users of one cut, each seen at several points of the window.
WINDOW_QUANTILES = tuple(TEMPORAL_QUANTILE + i * (1 - TEMPORAL_QUANTILE) / 8 for i in range(8))


@dataclass(frozen=True)
class Categories:
    """Items' categories as integer codes, flattened: item i has codes[offsets[i]:offsets[i + 1]].

    Codes come from one vocabulary (`encode`) per caller, so candidates and history compare.
    """

    codes: np.ndarray  # (M,) int64
    offsets: np.ndarray  # (n + 1,) int64, from 0 to M

    def __post_init__(self) -> None:
        if len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.codes):
            raise ValueError(f"Categories.offsets: must run from 0 to {len(self.codes)} (the "
                             f"number of codes), got {self.offsets[:1]}..{self.offsets[-1:]}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def encode(cls, items: Sequence[Sequence[str]], vocabulary: dict[str, int]) -> Categories:
        """The codes of each item's category names; new names get the next codes in `vocabulary`."""
        codes = [vocabulary.setdefault(x, len(vocabulary)) for names in items for x in names]
        return cls(np.array(codes, dtype=np.int64),
                   np.cumsum([0, *map(len, items)], dtype=np.int64))

    def item_of(self, positions: np.ndarray) -> np.ndarray:
        """The item (0..n-1) holding each of these positions in `codes`."""
        return np.searchsorted(self.offsets[1:], positions, side="right")

    def take(self, rows: np.ndarray) -> Categories:
        """The categories of items `rows`, in that order."""
        starts = self.offsets[rows]
        counts = self.offsets[1:][rows] - starts
        offsets = np.concatenate(([0], np.cumsum(counts)))
        return Categories(self.codes[np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1],
                                                                         counts)], offsets)

    def split(self, n: int) -> tuple[Categories, Categories]:
        """The first n items' categories, and the others'."""
        cut = self.offsets[n]
        return (Categories(self.codes[:cut], self.offsets[:n + 1]),
                Categories(self.codes[cut:], self.offsets[n:] - cut))

    def concat(self, more: Categories) -> Categories:
        """These items', then `more`'s."""
        return Categories(np.concatenate((self.codes, more.codes)),
                          np.concatenate((self.offsets, more.offsets[1:] + self.offsets[-1])))


@dataclass(frozen=True)
class Candidates:
    """One query's retrieved items, in retrieval order."""

    item_ids: np.ndarray  # (C,) int64
    scores: np.ndarray  # (C,) float32, retrieval (dot) score
    price: np.ndarray  # (C,) float
    stock: np.ndarray  # (C,) units in stock
    created_at: np.ndarray  # (C,) unix seconds
    categories: Categories  # coded like the user's history_categories
    popularity: np.ndarray  # (C, 3) event counts in the last 1/7/30 days (Feast item_popularity)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("scores", "price", "stock", "created_at", "categories", "popularity"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Candidates.{name}: {len(getattr(self, name))} values, expected "
                                 f"{n} (one per item_ids)")
        if np.shape(self.popularity) != (n, 3):
            raise ValueError(f"Candidates.popularity: shape {np.shape(self.popularity)}, expected "
                             f"({n}, 3) (1/7/30-day counts)")


@dataclass(frozen=True)
class UserState:
    """What the re-ranker knows of the user at request time."""

    history_categories: Categories  # of the user's recent items, oldest first
    history_timestamps: np.ndarray  # (H,) unix seconds, oldest first
    now: int  # unix seconds of the request; history after it (clock skew) is ignored

    def __post_init__(self) -> None:
        if len(self.history_timestamps) != len(self.history_categories):
            raise ValueError(f"UserState.history_timestamps: {len(self.history_timestamps)} "
                             f"values, expected {len(self.history_categories)} (one per "
                             f"history_categories item)")


def features(candidates: Candidates, user: UserState) -> np.ndarray:
    """The (C, len(FEATURES)) float32 feature matrix of one query."""
    c, history = candidates, user.history_categories
    stamps = np.asarray(user.history_timestamps, dtype=np.float64)
    visible = stamps <= user.now  # session events stamped this second count
    seen = int(np.count_nonzero(visible))
    # Equal (candidate code, history code) pairs: those items share at least one category.
    mine, theirs = np.nonzero(c.categories.codes[:, None] == history.codes)
    overlap = np.zeros((len(c.item_ids), len(stamps)), bool)  # (C, H)
    overlap[c.categories.item_of(mine), history.item_of(theirs)] = True
    overlap &= visible
    last = np.where(overlap, stamps, -np.inf).max(axis=1, initial=-np.inf)  # (C,)
    scores = np.asarray(c.scores, dtype=np.float32)
    out = np.empty((len(c.item_ids), len(FEATURES)), np.float32)
    out[:, 0] = scores
    out[:, 1] = np.arange(len(scores))
    out[:, 2] = scores - scores.max(initial=-np.inf)
    out[:, 3:6] = c.popularity
    out[:, 6] = (user.now - np.asarray(c.created_at, dtype=np.float64)) / DAY
    out[:, 7] = c.price
    out[:, 8] = c.stock
    out[:, 9] = overlap.sum(axis=1) / seen if seen else 0.0
    out[:, 10] = np.where(np.isfinite(last), (user.now - last) / DAY, np.nan)
    out[:, 11] = seen
    return out


# ---------------------------------------------------------------- the model


@dataclass
class RankerConfig:
    """Candidates and LightGBM settings; saved with every ranker."""

    # Retrieved and re-ranked per query. docs/benchmarks.md "Re-rank depth vs quality" (ML-100K
    # TEMPORAL, one seed, 107 users): NDCG@10 0.2299 at 100, 0.2353 at 50, 0.2472 at 30: no loss at 30.
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


@dataclass
class Ranker:
    """A trained LambdaMART model with its held-out verdict; saved beside the towers."""

    booster: lgb.Booster
    metrics: dict = field(default_factory=dict)  # incl. ndcg10_retrieval, ndcg10_reranked
    improves: bool = False  # reranked beat retrieval on the held-out window
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.booster.num_model_per_iteration() != 1:  # `score` has room for one per row
            raise ValueError(f"Ranker.booster: {self.booster.num_model_per_iteration()} outputs "
                             f"per row; a ranker has one")

    def score(self, features: np.ndarray) -> np.ndarray:
        """(C,) scores, higher is better, for a `features()` matrix."""
        if np.ndim(features) != 2 or np.shape(features)[1] != len(FEATURES):
            raise ValueError(f"features: shape {np.shape(features)}, expected (C, "
                             f"{len(FEATURES)}) in FEATURES order")
        # LightGBM's C predict, as `Booster.predict` calls it: its Python layer (a predictor object,
        # type checks, three more C calls) doubled the cost at 50 rows. No per-call `num_threads`:
        # LightGBM re-reads its configuration for it. It uses the process's OpenMP threads: one in
        # the service (set via torch). float64 stays float64; anything else is read as float32.
        double = np.asarray(features).dtype == np.float64
        x = np.ascontiguousarray(features, dtype=np.float64 if double else np.float32)
        out = np.empty(len(x), np.float64)
        written = ctypes.c_int64(0)
        lgb_c._safe_call(lgb_c._LIB.LGBM_BoosterPredictForMat(
            self.booster._handle, x.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int(lgb_c._C_API_DTYPE_FLOAT64 if double else lgb_c._C_API_DTYPE_FLOAT32),
            ctypes.c_int32(x.shape[0]), ctypes.c_int32(x.shape[1]),
            ctypes.c_int(lgb_c._C_API_IS_ROW_MAJOR), ctypes.c_int(lgb_c._C_API_PREDICT_NORMAL),
            ctypes.c_int(0), ctypes.c_int(self.booster.best_iteration), ctypes.c_char_p(b""),
            ctypes.byref(written), out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if written.value != len(x):
            raise RuntimeError(f"LightGBM wrote {written.value} scores for {len(x)} rows")
        return out

    def save(self, path: str | Path) -> Path:
        """Write `model.txt` and `ranker.json` (last, so a complete json means a complete ranker)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"version": RANKER_VERSION, "features": list(FEATURES), "metrics": self.metrics,
                "improves": self.improves, "config": self.config}
        atomic_write(path / "model.txt", self.booster.model_to_string())
        atomic_write(path / "ranker.json", json.dumps(meta, indent=1))
        log.info("saved ranker to %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Ranker:
        meta_path = Path(path) / "ranker.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not a ranker (no ranker.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != RANKER_VERSION or tuple(meta.get("features", ())) != FEATURES:
            raise ValueError(f"{meta_path}: ranker version {meta.get('version')} with features "
                             f"{meta.get('features')}; this code reads version {RANKER_VERSION} "
                             f"with {list(FEATURES)}")
        booster = lgb.Booster(model_str=(Path(path) / "model.txt").read_text())
        return cls(booster, meta["metrics"], meta["improves"], meta["config"])


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


# ---------------------------------------------------------------- training rows from the towers


def retrieve(artifact: Artifact, items: pd.DataFrame, queries: Queries, k: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """The towers' top k ids and their dot scores, (U, k) each, seen items excluded."""
    ids = items["item_id"].to_numpy()
    scores = torch.from_numpy(artifact.embed_users(queries.frame)
                              @ artifact.embed_items(items).T)  # (U, N)
    ranked = top_k(scores, ids, k, queries.exclude)  # (U, k)
    order = np.argsort(ids)
    columns = order[np.searchsorted(ids, ranked, sorter=order)]  # (U, k) positions in items
    return ranked, np.take_along_axis(scores.numpy(), columns, axis=1)


def item_state(store, item_ids: np.ndarray, times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Popularity (n, 3) and stock (n,) of each (item, time) as Feast knows them strictly before it.

    Absent rows mean no events or no stock yet: zeros. Each distinct pair is looked up once.
    """
    entity = pd.DataFrame({"item_id": np.asarray(item_ids, dtype=np.int64),
                           "event_timestamp": pd.Series(times).astype("datetime64[us, UTC]")
                           .to_numpy()})
    unique = entity.drop_duplicates(ignore_index=True)
    found = store.get_historical_features(entity_df=unique,
                                          features=[*POPULARITY_REFS, STOCK_REF]).to_df()
    found["event_timestamp"] = found["event_timestamp"].astype("datetime64[us, UTC]")
    names = [ref.split(":")[1] for ref in [*POPULARITY_REFS, STOCK_REF]]
    merged = entity.merge(found, on=["item_id", "event_timestamp"], how="left")
    values = merged[names].fillna(0).to_numpy(dtype=np.int64)
    return values[:, :3], values[:, 3]


def ranking_data(artifact: Artifact, items: pd.DataFrame, queries: Queries, *, store, k: int
                 ) -> tuple[RankingData, np.ndarray]:
    """Feature rows of each query's k retrieved candidates, and the (U, k) retrieved ids.

    The user's history (for the towers and the category features) is Feast's at the query time,
    as the service's online store holds it: `store`'s history_length must be the towers' max_len.
    """
    queries = query_features(store, queries)
    ids, scores = retrieve(artifact, items, queries, k)
    position = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())  # in `items`
    categories = Categories.encode(items["categories"].tolist(), {})
    price = items["price"].to_numpy(dtype=np.float64)
    created = unix_seconds(items["created_at"])
    times = queries.frame["event_timestamp"]
    popularity, stock = item_state(store, ids.ravel(), times.repeat(ids.shape[1]))
    popularity, stock = popularity.reshape(*ids.shape, 3), stock.reshape(ids.shape)
    now = unix_seconds(times)
    rows = []
    for q, (history, stamps) in enumerate(zip(queries.frame["recent_item_ids"],
                                              queries.frame["recent_timestamps"], strict=True)):
        past = position.loc[np.asarray(history, dtype=np.int64)].to_numpy()
        user = UserState(categories.take(past), np.asarray(stamps, dtype=np.int64), int(now[q]))
        cand = position.loc[ids[q]].to_numpy()
        rows.append(features(Candidates(ids[q], scores[q], price[cand], stock[q], created[cand],
                                        categories.take(cand), popularity[q]), user))
    labels = np.concatenate([np.isin(row, target) for row, target
                             in zip(ids, queries.targets, strict=True)]).astype(np.float32)
    data = RankingData(np.concatenate(rows), labels, np.full(len(ids), ids.shape[1]))
    return data, ids


def rerank(ranker: Ranker, data: RankingData, ids: np.ndarray) -> np.ndarray:
    """The (U, k) ids of each query ordered by ranker score (ties keep retrieval order)."""
    scores = ranker.score(data.features).reshape(ids.shape)
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
    data, _ = ranking_data(artifact, items, train, store=store, k=config.candidates)
    users = train.frame["user_id"].to_numpy()
    unique = np.unique(users)
    folds = (np.random.default_rng(config.seed).permutation(len(unique)) % config.folds
             )[np.searchsorted(unique, users)]  # (Q,) a random, balanced fold per user
    # Queries without a relevant candidate have no pairs to learn from and no NDCG to measure.
    labelled = np.add.reduceat(data.labels, np.cumsum(data.groups) - data.groups) > 0
    if len(np.unique(folds[labelled])) < 2:
        raise ValueError(f"train: {int(labelled.sum())} queries have a target among their "
                         f"{config.candidates} candidates; need users in at least 2 folds")
    booster, fitted = fit_booster(data.select(labelled), folds[labelled], config)
    ranker = Ranker(booster, config=asdict(config))
    held, ids = ranking_data(artifact, items, holdout, store=store, k=config.candidates)
    before = ranking_metrics(ids, holdout.targets, holdout.protocol)
    after = ranking_metrics(rerank(ranker, held, ids), holdout.targets, holdout.protocol)
    ranker.metrics = {"ndcg10_retrieval": before["ndcg@10"], "ndcg10_reranked": after["ndcg@10"],
                      "holdout_users": before["users"], "train_queries": int(labelled.sum()),
                      "train_queries_unlabelled": int((~labelled).sum()), **fitted}
    ranker.improves = after["ndcg@10"] > before["ndcg@10"]
    log.info("ranker: holdout NDCG@10 retrieval %.4f -> reranked %.4f", before["ndcg@10"],
             after["ndcg@10"])
    return ranker
