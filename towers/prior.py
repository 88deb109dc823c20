"""A popularity prior on the served score: the towers' dot product + weight * log(1 + item's count).

The towers are trained to name a user's next item. Over a longer horizon (a TEMPORAL test window
of months) what users pick is more popular than their next items were, and the towers' ranking
loses to popularity itself there (ml-1m-dev: 0.2575 against 0.2815). One weight, picked on
validation after training (`towers.train.fit`; 0 where it does not help), restores that. The
count is the item's training events: items the model never saw get none, so with a weight above 0
an item added after training seldom reaches a user's top 10 until the next training counts it
(a neutral count for them ranked worse overall: `docs/towers-notes.md`, issue 18 part t). `as_of`,
the newest counted event, tells the service which items are newer than the counts: it keeps one
place of a recommendation for the best of them (`services.engine`; part x).

The prior is served as one more coordinate, so a single dot product (the index's) scores both:
an item vector ends with its log count times sqrt(weight / the largest log count), a user vector
with sqrt(weight * the largest log count), so that neither outgrows the other. int8 quantization
cannot hold that coordinate beside unit-vector ones (`index.model_store.default_quantization`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # tried on validation, in this order


@dataclass(frozen=True, eq=False)  # holds an array: compared by identity
class PopularityPrior:
    """`weight` times log(1 + training events) of each vocabulary item (index 0, the unknown: 0)."""

    weight: float
    counts: np.ndarray  # (N + 1,) training events per vocabulary index
    as_of: int | None = None  # unix seconds of the newest event counted (None: not recorded)

    @classmethod
    def off(cls) -> PopularityPrior:
        """No prior: vectors stay the towers' own."""
        return cls(0.0, np.zeros(1, dtype=np.int64))

    def with_weight(self, weight: float) -> PopularityPrior:
        return PopularityPrior(weight, self.counts, self.as_of)

    def hides_new_items(self) -> bool:
        """Items created after `as_of` have no count, so the prior ranks them below known ones."""
        return self.weight > 0 and self.as_of is not None

    @property
    def extra_dims(self) -> int:
        """Coordinates it adds to every vector: 1 when on, 0 when its weight is 0."""
        return int(self.weight > 0)

    @cached_property
    def _log_counts(self) -> np.ndarray:
        log_counts = np.log1p(np.asarray(self.counts, dtype=np.float64))
        log_counts[:1] = 0.0
        return log_counts

    @cached_property
    def _largest(self) -> float:
        return max(float(self._log_counts.max(initial=0.0)), 1.0)

    def items(self, vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
        """(N, D) item vectors of vocabulary `index` -> (N, D + extra_dims)."""
        if not self.weight:
            return vectors
        column = self._log_counts[index] * np.sqrt(self.weight / self._largest)
        return np.concatenate([vectors, column[:, None].astype(vectors.dtype)], axis=1)

    def users(self, vectors: np.ndarray) -> np.ndarray:
        """(U, D) user vectors -> (U, D + extra_dims): their dot with `items` adds the prior."""
        if not self.weight:
            return vectors
        column = np.full((len(vectors), 1), np.sqrt(self.weight * self._largest), dtype=vectors.dtype)
        return np.concatenate([vectors, column], axis=1)

    def towers(self, vectors: np.ndarray) -> np.ndarray:
        """Served vectors (of items or users) without the prior's coordinate: the towers' own."""
        return vectors[:, :vectors.shape[1] - self.extra_dims]

    def alone(self, vectors: np.ndarray) -> np.ndarray:
        """Served vectors as queries that score by the towers alone: the prior's coordinate 0."""
        return np.pad(self.towers(vectors), ((0, 0), (0, self.extra_dims)))

    def to_dict(self) -> dict:
        return {"weight": self.weight, "counts": np.asarray(self.counts).tolist(),
                "as_of": self.as_of}

    @classmethod
    def from_dict(cls, saved: dict) -> PopularityPrior:
        return cls(float(saved["weight"]), np.asarray(saved["counts"], dtype=np.int64),
                   saved.get("as_of"))  # artifacts saved before it have none
