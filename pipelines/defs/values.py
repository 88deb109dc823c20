"""What the assets hand each other (small frozen values) and the query sample both recall measures use.

Asset and check modules import these instead of importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from towers import evaluate
from towers.artifact import Artifact

RECALL_QUERIES = 200  # user vectors from the test window, for ANN recall against exact search


@dataclass(frozen=True)
class TrainingExamples:
    """The training examples' `path` (a folder of one parquet file per day, or one file) and the
    first day the run that wrote them joined (None: it joined nothing, every file was kept)."""

    path: str
    joined_from: date | None = None

    def joined_files(self) -> list[str]:
        """The files of the days that run joined; every file when it joined none."""
        folder = Path(self.path)
        if not folder.is_dir():
            return [self.path]
        since = self.joined_from.isoformat() if self.joined_from is not None else ""
        return [str(f) for f in sorted(folder.glob("*.parquet")) if f.name[:10] >= since]


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: its registry id and its directory."""

    id: int
    location: str


@dataclass(frozen=True)
class ItemEmbeddings:
    """The catalogue embedded by a model version's item tower, in the model store's file `path`."""

    model_version_id: int
    path: Path


@dataclass(frozen=True)
class IndexBuild:
    """A new, not yet live, index version and the versions that were live when it was built."""

    index_version_id: int
    location: str
    model_version_id: int
    previous_model_version_id: int | None
    previous_index_version_id: int | None


def query_sample(artifact: Artifact, split: evaluate.Split, size: int = RECALL_QUERIES,
                 seed: int = 0) -> np.ndarray:
    """(Q, dim) served user vectors of a fixed sample of the test window's queries."""
    frame = split.test.frame
    rows = np.sort(np.random.default_rng(seed).permutation(len(frame))[:size])
    return artifact.embed_users(frame.iloc[rows])
