"""Per-request re-ranker features: one query's `Candidates` and `UserState` -> `features()` matrix.

Training rows and served requests both go through `features()`, so both follow one column layout,
`FEATURES`; a feature's column comes from its name (`COLUMN`), never from a hand-kept position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from feature_repo.datasets.contract import DAY

FEATURES: tuple[str, ...] = (  # the column layout of `features()`, saved with every ranker
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
COLUMN: dict[str, int] = {name: j for j, name in enumerate(FEATURES)}  # feature -> its column


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
    """The (C, len(FEATURES)) float32 feature matrix of one query, columns as `COLUMN` says."""
    c, history, col = candidates, user.history_categories, COLUMN
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
    out[:, col["retrieval_score"]] = scores
    out[:, col["retrieval_rank"]] = np.arange(len(scores))
    out[:, col["score_gap"]] = scores - scores.max(initial=-np.inf)
    popularity = np.asarray(c.popularity)
    out[:, col["popularity_1d"]] = popularity[:, 0]
    out[:, col["popularity_7d"]] = popularity[:, 1]
    out[:, col["popularity_30d"]] = popularity[:, 2]
    out[:, col["item_age_days"]] = (user.now - np.asarray(c.created_at, dtype=np.float64)) / DAY
    out[:, col["price"]] = c.price
    out[:, col["stock"]] = c.stock
    out[:, col["category_affinity"]] = overlap.sum(axis=1) / seen if seen else 0.0
    out[:, col["days_since_category"]] = np.where(np.isfinite(last), (user.now - last) / DAY, np.nan)
    out[:, col["history_length"]] = seen
    return out
