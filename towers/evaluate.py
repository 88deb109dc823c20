"""Offline evaluation: LOO and TEMPORAL splits, full-catalogue ranking metrics, one harness for all.

A recommender is any `Recommend(frame, k, exclude) -> (U, k) item ids`, where `frame` holds one
query row per user (user_id, item_id, event_timestamp; `towers.features.with_features` adds the
Feast user features the two-tower reads) and `exclude[i]` are the ids query i has already seen,
oldest first. The two-tower recommender embeds users and hands the vectors to a pluggable
`Retrieve(user_vectors, k, exclude) -> ids`: dense dot products here, the Qdrant index as served.
Baselines (`baselines.py`) plug into the same harness and splits.

CLI: `python -m towers.evaluate --dataset=SPEC --protocol=loo|temporal` prints one line per
baseline (Popularity, EASE); `twotower eval --artifact=DIR` evaluates a saved two-tower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from feature_repo.datasets import DataError
from towers.artifact import Artifact
from towers.data import sort_events, unix_micros, unix_seconds
from towers.prior import PopularityPrior

log = logging.getLogger(__name__)

Retrieve = Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]
Recommend = Callable[[pd.DataFrame, int, list[np.ndarray]], np.ndarray]
TOP_K = 100  # the deepest cut any metric reads
TEMPORAL_QUANTILE = 0.8  # the global cut: train before, test at or after
# Scores one dense ranking holds at once (128 MB of float32): 100k validation users against a
# million items would be 400 GB in one product.
CHUNK_SCORES = 2**25
# Validation queries at most, a fixed sample: a million users' validation ranked every user at
# every validation; 10,000 keep NDCG@10's standard error near 0.003 (every set measured is smaller).
VALIDATION_QUERIES = 10_000
# Above 250,000 items fewer, so that one validation ranks at most this many scores (2,500 queries
# at a million items: a validation of 14 s on two cores), and never fewer than 1,000 queries.
VALIDATION_SCORES = 2_500_000_000
NO_ITEM = -1  # an empty slot of a ranking: the catalogue or index had no more items (ids are >= 0)


@dataclass(frozen=True)
class Queries:
    """What a recommender is asked (`frame`, `exclude`) and what counts as a hit (`targets`)."""

    protocol: str  # "loo" (one target: HR) or "temporal" (a set: recall)
    frame: pd.DataFrame  # user_id, item_id, event_timestamp (+ user features once looked up)
    exclude: list[np.ndarray]
    targets: list[np.ndarray]
    # Events each query may see when that is fewer than its lookup instant holds (LOO ties).
    visible: np.ndarray | None = None


@dataclass(frozen=True)
class Split:
    protocol: str
    train: pd.DataFrame  # events to fit on while validating (and for the final model)
    validation: Queries
    test: Queries
    test_train: pd.DataFrame  # events a closed-form baseline refits on before the test pass
    notes: dict = field(default_factory=dict)


# ---------------------------------------------------------------- splits

def _entities(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """Query rows from (user_id, item_id, lookup time in microseconds)."""
    return pd.DataFrame({
        "user_id": np.array([r[0] for r in rows], dtype=np.int64),
        "item_id": np.array([r[1] for r in rows], dtype=np.int64),
        "event_timestamp": pd.to_datetime([r[2] for r in rows], unit="us", utc=True)
        .astype("datetime64[us, UTC]")})


def loo_split(interactions: pd.DataFrame) -> Split:
    """Per user by time (ties in file order): last = test, second-to-last = validation.

    A query sees every earlier event in that order, the validation item included for the test.
    It looks up just after its last visible event, as a request made then would: the held-out
    event's own time (its hour, the gap to it) is never an input. `visible` trims same-second
    events after the last visible one. A held-out item the user already had (a repeat purchase)
    is no query: seen items are never recommended, so no ranking could name it (counted in notes).
    """
    events = sort_events(interactions)
    position = events.groupby("user_id").cumcount(ascending=False)  # 0 = last
    size = events.groupby("user_id")["item_id"].transform("size")
    evaluated = size >= 3
    train = events[(position >= 2) | ~evaluated]
    kept = events[evaluated]
    all_items = kept["item_id"].to_numpy()
    all_micros = unix_micros(kept["event_timestamp"])
    queries = {"validation": ([], [], []), "test": ([], [], [])}
    repeats = dict.fromkeys(queries, 0)
    for user, idx in kept.groupby("user_id").indices.items():
        items, micros = all_items[idx], all_micros[idx]
        for name, last in (("validation", -2), ("test", -1)):
            seen = items[:len(items) + last]
            if items[last] in seen:
                repeats[name] += 1
                continue
            rows, exclude, targets = queries[name]
            rows.append((user, items[last], micros[last - 1] + 1))  # >= 3 events: one visible
            exclude.append(seen)
            targets.append(items[last:len(items) + last + 1])
    val, test = ({"frame": _entities(rows), "exclude": exclude, "targets": targets,
                  "visible": np.array([len(e) for e in exclude], dtype=np.int64)}
                 for rows, exclude, targets in queries.values())
    return Split("loo", train, Queries("loo", **val), Queries("loo", **test), test_train=train,
                 notes={"users": len(test["targets"]),
                        "users_skipped_under_3_events": int((events.groupby("user_id").size() < 3).sum()),
                        "repeat_targets_dropped": repeats})


def _temporal_queries(events: pd.DataFrame, cut: int) -> tuple[pd.DataFrame, Queries, dict]:
    seconds = unix_seconds(events["event_timestamp"])
    before = events[seconds < cut]
    after = events[seconds >= cut]
    known = set(before["item_id"].tolist())
    cold = ~after["item_id"].isin(known)
    histories = before.groupby("user_id")["item_id"]
    rows, exclude, targets = [], [], []
    for user, group in after[~cold].groupby("user_id"):
        if user not in histories.groups:
            continue
        seen = histories.get_group(user).to_numpy()
        target = np.setdiff1d(group["item_id"].unique(), seen)
        if len(target):
            rows.append((user, target[0], cut * 1_000_000))
            exclude.append(seen)
            targets.append(target)
    notes = {"cut": pd.Timestamp(cut, unit="s", tz="UTC").isoformat(), "users": len(rows),
             "targets": int(sum(len(t) for t in targets)),
             "target_events_dropped_new_items": int(cold.sum()),
             "new_items_after_cut": int(after.loc[cold, "item_id"].nunique())}
    return before, Queries("temporal", _entities(rows), exclude, targets), notes


def temporal_split(interactions: pd.DataFrame, quantile: float = TEMPORAL_QUANTILE) -> Split:
    """Global cut at the `quantile` of timestamps; validation repeats the cut inside the train part.

    Test targets are each user's distinct items at or after the cut, minus items first seen after
    the cut (counted in `notes`) and items the user had already seen. Queries look up at the cut.
    """
    events = sort_events(interactions)
    seconds = unix_seconds(events["event_timestamp"])
    cut = int(np.quantile(seconds, quantile))
    before, test, notes = _temporal_queries(events, cut)
    inner_cut = int(np.quantile(unix_seconds(before["event_timestamp"]), quantile))
    train, validation, val_notes = _temporal_queries(before, inner_cut)
    return Split("temporal", train, validation, test, test_train=before,
                 notes={**notes, "validation": val_notes})


EVALUABLE = {  # what a split needs of some user to ask a query
    "loo": "a user of 3 events or more, each held-out event of an item new to them",
    "temporal": "a user with events on both sides of the cut, after it of an item known before "
                "the cut and new to them"}


def validation_queries(n_items: int) -> int:
    """How many validation queries a catalogue of `n_items` keeps (`VALIDATION_SCORES`)."""
    return max(1_000, min(VALIDATION_QUERIES, VALIDATION_SCORES // max(n_items, 1)))


def make_split(ds, protocol: str, max_validation: int | None = None) -> Split:
    """The split of `protocol`; its validation a fixed random sample of at most `max_validation`
    queries (default: `validation_queries` of the catalogue), since early stopping ranks the
    catalogue for each one at every validation."""
    if protocol == "loo":
        split = loo_split(ds.interactions)
    elif protocol == "temporal":
        split = temporal_split(ds.interactions)
    else:
        raise ValueError(f"protocol {protocol!r}: expected 'loo' or 'temporal'")
    for name in ("validation", "test"):
        if getattr(split, name).frame.empty:
            raise DataError(getattr(ds, "name", "dataset"), f"the {protocol} split has no {name} "
                            f"query: it needs {EVALUABLE[protocol]}")
    queries = len(split.validation.frame)
    if max_validation is None:
        max_validation = validation_queries(len(ds.items))
    if queries <= max_validation:
        return split
    rows = np.sort(np.random.default_rng(0).permutation(queries)[:max_validation])
    v = split.validation
    sample = Queries(v.protocol, v.frame.iloc[rows], [v.exclude[i] for i in rows],
                     [v.targets[i] for i in rows], None if v.visible is None else v.visible[rows])
    return replace(split, validation=sample, notes={**split.notes, "validation_sampled_from": queries})


# ---------------------------------------------------------------- metrics and harness

def ranking_metrics(ranked: np.ndarray, targets: list[np.ndarray], protocol: str) -> dict:
    """Mean recall@10/@100 (HR for one target) and NDCG@10 (`ndcg_at_10`)."""
    name = "hr" if protocol == "loo" else "recall"
    r10, r100 = [], []
    for row, target in zip(ranked, targets, strict=True):
        hit = np.isin(row, target)  # (k,)
        r10.append(hit[:10].sum() / len(target))
        r100.append(hit[:100].sum() / len(target))
    return {f"{name}@10": float(np.mean(r10)), "ndcg@10": float(np.mean(ndcg_at_10(ranked, targets))),
            f"{name}@100": float(np.mean(r100)), "users": len(targets)}


def ndcg_at_10(ranked: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """Each query's NDCG@10, with IDCG over min(|targets|, 10)."""
    discounts = 1.0 / np.log2(np.arange(2, 12))  # ranks 1..10
    return np.array([(np.isin(row[:10], target) * discounts[:len(row[:10])]).sum()
                     / discounts[:min(len(target), 10)].sum()
                     for row, target in zip(ranked, targets, strict=True)])


def evaluate(recommend: Recommend, queries: Queries, k: int = TOP_K) -> dict:
    """Rank the whole catalogue for every query (seen items excluded) and average the metrics.

    A catalogue smaller than k caps every cut-off at its size: the recommender returns all of its
    items, fewer than k columns (recall@100 of 50 items is recall over all 50), and a row whose
    unseen items run out ends in NO_ITEM slots, which never hit.
    """
    ranked = recommend(queries.frame, k, queries.exclude)
    if ranked.ndim != 2 or ranked.shape[0] != len(queries.frame) or not 0 < ranked.shape[1] <= k:
        raise ValueError(f"recommender returned shape {ranked.shape}, expected "
                         f"({len(queries.frame)}, {k}), or fewer columns for a smaller catalogue")
    return ranking_metrics(ranked, queries.targets, queries.protocol)


def top_k(scores: torch.Tensor, columns: np.ndarray, k: int, exclude: list[np.ndarray]
          ) -> np.ndarray:
    """Item ids of the k best columns per row of `scores` (U, N). Excluded ids (and columns scored
    -inf) are never returned: a row left with fewer than k columns ends in `NO_ITEM` slots."""
    scores = scores.clone()
    order = np.argsort(columns)
    for i, seen in enumerate(exclude):
        pos = np.searchsorted(columns, seen, sorter=order).clip(0, len(columns) - 1)
        cols = order[pos][columns[order[pos]] == seen]
        scores[i, torch.from_numpy(cols)] = -torch.inf
    best = scores.topk(min(k, scores.shape[1]), dim=1)
    return np.where(best.values.isneginf().numpy(), NO_ITEM, columns[best.indices.numpy()])  # (U, k)


def chunk_rows(columns: int, chunk_scores: int | None = None) -> int:
    """Rows of a (rows, columns) block that keep it within `chunk_scores` (default
    `CHUNK_SCORES`), at least one."""
    return max(1, (chunk_scores or CHUNK_SCORES) // max(columns, 1))


def chunked_top_k(scores: Callable[[int, int], torch.Tensor], columns: np.ndarray, k: int,
                  exclude: list[np.ndarray], chunk_scores: int | None = None) -> np.ndarray:
    """`top_k` of a (U, N) score matrix that is never held whole: `scores(i, j)` gives rows
    i..j-1 (clipped to U = len(exclude)), `chunk_rows` of them at a time."""
    rows = chunk_rows(len(columns), chunk_scores)
    users = len(exclude)
    return np.concatenate([top_k(scores(i, min(i + rows, users)), columns, k, exclude[i:i + rows])
                           for i in range(0, max(users, 1), rows)])  # (rows, N) -> (rows, k)


def dense_retrieval(item_ids: np.ndarray, item_vectors: np.ndarray,
                    chunk_scores: int = CHUNK_SCORES) -> Retrieve:
    """Exact maximum inner product over all items, for as many users at a time as keep their
    (users, items) scores within `chunk_scores`."""
    ids, vectors = np.asarray(item_ids), torch.from_numpy(np.asarray(item_vectors))

    def retrieve(user_vectors: np.ndarray, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        return chunked_top_k(lambda i, j: torch.from_numpy(user_vectors[i:j]) @ vectors.T, ids, k,
                             exclude, chunk_scores)

    return retrieve


def two_tower(artifact: Artifact, items: pd.DataFrame, retrieve: Retrieve | None = None
              ) -> Recommend:
    """Embed users with the artifact and retrieve (dense over `items` unless given)."""
    retrieve = retrieve or dense_retrieval(items["item_id"].to_numpy(),
                                           artifact.embed_items(items))

    def recommend(frame: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        return retrieve(artifact.embed_users(frame), k, exclude)

    return recommend


class Validator:
    """Validation NDCG@10 of a model in training: for early stopping, and for its prior's weight."""

    def __init__(self, queries: Queries, items: pd.DataFrame):
        self.queries, self.items = queries, items

    def __call__(self, artifact: Artifact) -> float:
        return evaluate(two_tower(artifact, self.items), self.queries)["ndcg@10"]

    def by_prior(self, artifact: Artifact, weights: Iterable[float]) -> dict[float, float]:
        """The artifact's score with each weight of its popularity prior, the users and the
        catalogue embedded once (the prior only appends a coordinate to the towers' vectors)."""
        towers = replace(artifact, prior=PopularityPrior.off())
        users, items = towers.embed_users(self.queries.frame), towers.embed_items(self.items)
        ids = self.items["item_id"].to_numpy()
        index = artifact.model.vocab.item_index(ids)

        def served(weight: float) -> Recommend:
            prior = artifact.prior.with_weight(weight)
            retrieve = dense_retrieval(ids, prior.items(items, index))
            return lambda frame, k, exclude: retrieve(prior.users(users), k, exclude)

        return {weight: evaluate(served(weight), self.queries)["ndcg@10"] for weight in weights}
