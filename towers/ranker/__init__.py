"""The learned re-ranker: LambdaMART (LightGBM `lambdarank`) over features the towers do not see.

Serving: the service builds `Candidates` (one query's retrieved items, in retrieval order) and a
`UserState`, calls `features` (vectorised numpy, no pandas) and orders by `Ranker.score`, unless
`Ranker.improves` is False, in which case it keeps retrieval order. Training: `train_ranker` on
`window_queries`. See docs/ranker.md.

`features.py` (per-request features and their column layout), `model.py` (`Ranker`: score, save,
load), `training.py` (Feast-backed training rows, `RankerConfig`, `train_ranker`).
"""

from towers.ranker.features import FEATURES, Candidates, Categories, UserState, features
from towers.ranker.model import Ranker
from towers.ranker.training import RankerConfig, train_ranker, window_queries

__all__ = ["FEATURES", "Candidates", "Categories", "Ranker", "RankerConfig", "UserState",
           "features", "train_ranker", "window_queries"]
