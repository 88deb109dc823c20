"""A second task on the shared user tower: a "liked" head beside the next-item one.

With `TrainConfig.liked_weight` > 0, each training row whose event `weight` (a rating, say) is at
least `liked_min_weight` also trains a head of its own on the user vector: the same softmax over the
same candidates, scored from `LikedHead(u)`. Only the user tower is shared; the head lives during
training only, so what is served (the next-item head) is unchanged in shape and cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


class LikedHead(torch.nn.Module):
    """u -> normalize(u + W u), W starting at zero: the head begins as the next-item head (and
    draws nothing from the random stream, so a run with it differs from one without only by its
    loss)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(dim, dim))

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return F.normalize(users + users @ self.weight.T, dim=-1)  # (Q, D)


def liked_rows(frame: pd.DataFrame, min_weight: float) -> np.ndarray:
    """(rows,) bool: the frame's rows that count as liked, by their `weight` column."""
    if "weight" not in frame:
        raise ValueError("training frame: no 'weight' column, which liked_weight > 0 needs "
                         "(the event weight, e.g. a rating; towers.features.examples keeps it)")
    weights = frame["weight"].to_numpy(dtype=np.float64)
    if np.isnan(weights).any():
        row = int(np.flatnonzero(np.isnan(weights))[0])
        raise ValueError(f"training frame row {row}: 'weight' is missing, the liked head needs it")
    liked = weights >= min_weight
    if not liked.any():
        raise ValueError(f"training frame: no row has weight >= liked_min_weight={min_weight}")
    return liked


def twin_pairs(pairs: tuple[torch.Tensor, torch.Tensor], keep: np.ndarray, n_queries: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) pairs of `pairs` (query, column) for the rows scored: the Q queries, then a
    second copy of the queries `keep` (rows Q, Q + 1, ...)."""
    query, column = pairs
    twin = torch.full((n_queries,), -1, dtype=torch.int64)
    twin[torch.from_numpy(keep)] = torch.arange(n_queries, n_queries + len(keep))
    again = twin[query] >= 0  # (S,)
    return torch.cat([query, twin[query][again]]), torch.cat([column, column[again]])
