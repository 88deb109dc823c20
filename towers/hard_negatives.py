"""Hard negatives for the sampled softmax: items near each positive, from easy to hard.

In-batch negatives are popular items, mostly unlike a query's positive; the full softmax already
sees every item. With `TrainConfig.hard_negatives` = h on the sampled path, each query also draws h
items among its positive's nearest neighbours in the item tower's own space ("similar, but not the
one chosen"). The neighbour lists are mined again every `validate_steps` steps from the current
vectors (the first lists, from untrained vectors, are as good as uniform draws).

Curriculum: a draw comes from the positive's `pool` nearest items early in the schedule (mostly
moderately similar items) and from ever fewer, closer ones as it proceeds, down to the h nearest.
Neighbours are exact (a matrix product in chunks of bounded memory): it misses no neighbour and
needs no index build per refresh, but its time grows with N^2 * D: at a million items an ANN
index would be the way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CHUNK_FLOATS = 2**26  # similarities per matrix product (256 MB): rows = CHUNK_FLOATS // N


class HardNegatives:
    """Each item's `pool` nearest other items (cosine), and draws among them by schedule progress."""

    def __init__(self, per_query: int, pool: int) -> None:
        if pool < per_query:
            raise ValueError(f"hard_pool={pool} must be at least hard_negatives={per_query}")
        self.per_query, self.pool = per_query, pool
        self.neighbours: torch.Tensor | None = None  # (N + 1, K) item indices, row 0 unused

    @torch.no_grad()
    def mine(self, vectors: torch.Tensor) -> None:
        """Neighbour lists from item vectors (N + 1, D), row 0 the unknown item (never drawn)."""
        unit = F.normalize(vectors[1:].float(), dim=-1)  # (N, D)
        k = min(self.pool, len(unit) - 1)
        if k < 1:
            self.neighbours = None
            return
        lists, rows = [], max(CHUNK_FLOATS // len(unit), 1)
        for start in range(0, len(unit), rows):
            sims = unit[start:start + rows] @ unit.T  # (B, N)
            sims[torch.arange(len(sims)), torch.arange(start, start + len(sims))] = -math.inf
            lists.append(sims.topk(k, dim=1).indices + 1)  # (B, K) item indices
        self.neighbours = torch.cat([torch.zeros_like(lists[0][:1]), *lists])  # (N + 1, K)

    def draw(self, targets: torch.Tensor, progress: float, generator: torch.Generator
             ) -> torch.Tensor | None:
        """(Q * h,) items near each target; `progress` in [0, 1] narrows the pool to the h nearest.

        None before the first `mine` (or with a catalogue of one item).
        """
        if self.neighbours is None:
            return None
        k = self.neighbours.shape[1]
        reach = max(round(k - (k - min(self.per_query, k)) * min(max(progress, 0.0), 1.0)), 1)
        picks = torch.randint(0, reach, (len(targets), self.per_query), generator=generator)
        return self.neighbours[targets[:, None], picks].reshape(-1)  # (Q * h,)
