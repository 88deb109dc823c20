"""What the assets hand each other (small frozen values) and the query sample both recall measures use.

Asset and check modules import these instead of importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towers import evaluate
from towers.artifact import Artifact

RECALL_QUERIES = 200  # user vectors from the test window, for ANN recall against exact search


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
    """(Q, D) user vectors of a fixed sample of the test window's queries."""
    frame = split.test.frame
    rows = np.sort(np.random.default_rng(seed).permutation(len(frame))[:size])
    return artifact.embed_users(frame.iloc[rows])
