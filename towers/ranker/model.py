"""The re-ranker model: a LambdaMART (LightGBM `lambdarank`) booster with its held-out verdict.

The service orders candidates by `Ranker.score` of their `features()` matrix, unless
`Ranker.improves` is False, in which case it keeps retrieval order.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from feature_repo.files import atomic_write
from towers.ranker._lightgbm_predict import predict
from towers.ranker.features import FEATURES

log = logging.getLogger(__name__)

RANKER_VERSION = 1  # bump when the saved layout or the meaning of a feature changes


def refuse_existing(path: Path) -> None:
    """A saved ranker is never replaced: services may be serving it with its model version (train
    a new version instead)."""
    if path.exists():
        raise FileExistsError(f"{path}: a re-ranker is saved there already, and a saved one is "
                              f"never replaced (a service may be serving it); train a new model "
                              f"version for a new re-ranker")


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
        """Write the directory `path` (`model.txt`, `ranker.json`) once and whole: into a temporary
        directory beside it, renamed into place. An existing `path` is refused (`refuse_existing`)."""
        path = Path(path)
        refuse_existing(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": RANKER_VERSION, "features": list(FEATURES), "metrics": self.metrics,
                "improves": self.improves, "config": self.config}
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            atomic_write(tmp / "model.txt", self.booster.model_to_string())
            atomic_write(tmp / "ranker.json", json.dumps(meta, indent=1))
            tmp.rename(path)  # fails if another save got there first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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
