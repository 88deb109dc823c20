"""The re-ranker model: a LambdaMART (LightGBM `lambdarank`) booster with its held-out verdict.

The service orders candidates by `Ranker.score` of their `features()` matrix, unless
`Ranker.improves` is False, in which case it keeps retrieval order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from feature_repo.files import atomic_write
from towers.ranker._lightgbm_predict import predict
from towers.ranker.features import FEATURES

log = logging.getLogger(__name__)

RANKER_VERSION = 1  # bump when the saved layout or the meaning of a feature changes


@dataclass
class Ranker:
    """A trained LambdaMART model with its held-out verdict; saved beside the towers."""

    booster: lgb.Booster
    metrics: dict = field(default_factory=dict)  # incl. ndcg10_retrieval, ndcg10_reranked
    improves: bool = False  # its held-out gain over retrieval order clears the noise (`train_ranker`)
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
        return predict(self.booster, features)

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
        """The ranker saved at `path`; refuses one saved with another version or feature layout."""
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
