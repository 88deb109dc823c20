"""A ranker fitted on synthetic rows whose relevance one feature decides, built once per module."""

from __future__ import annotations

from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pytest

from towers.ranker.features import COLUMN, FEATURES
from towers.ranker.model import Ranker
from towers.ranker.training import RankerConfig, RankingData, fit_booster


def _synthetic(queries: int, seed: int) -> RankingData:
    """Random features; a candidate is relevant exactly when its category_affinity exceeds 0.7."""
    rng = np.random.default_rng(seed)
    x = rng.random((queries * 50, len(FEATURES))).astype(np.float32)
    return RankingData(x, (x[:, COLUMN["category_affinity"]] > 0.7).astype(np.float32),
                       np.full(queries, 50))


def _fit() -> lgb.Booster:
    booster, _ = fit_booster(_synthetic(40, 0), np.arange(40) % 4,
                             RankerConfig(min_data_in_leaf=5, rounds=50))
    return booster


@pytest.fixture(scope="session")
def synthetic() -> Callable[[int, int], RankingData]:
    """`synthetic(queries, seed)`: 50 random candidates per query."""
    return _synthetic


@pytest.fixture(scope="session")
def fit_synthetic() -> Callable[[], lgb.Booster]:
    """Fits a small LambdaMART booster on `synthetic(40, 0)` (4 user folds)."""
    return _fit


@pytest.fixture(scope="module")
def synthetic_ranker() -> Ranker:
    return Ranker(_fit(), {"ndcg10_retrieval": 0.1, "ndcg10_reranked": 0.2, "ndcg10_gain_low": 0.05},
                  improves=True)
