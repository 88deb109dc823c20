"""The point-in-time interaction graph: training events as time-ordered user-item edges, and the
snapshots of it a training example may read.

The edges are the training frame's events sorted by time, so the graph as of any instant is a
prefix of them. Training cuts it at a few time quantiles of the events: an example at time t reads
the latest snapshot whose cut is at or before t, which holds only the edges strictly before that
cut, hence strictly before t; examples before the first cut read no edges. Serving reads every
edge: the graph as of the newest training event, the day the index version is built.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from towers.data import Vocab, unix_seconds

USER, ITEM, SECOND = 0, 1, 2  # the rows of an edge tensor


def interaction_edges(vocab: Vocab, frame: pd.DataFrame) -> torch.Tensor:
    """(3, E) int64 edges of the frame's events: user index, item index, unix second; by time,
    same-second events in frame order."""
    seconds = unix_seconds(frame["event_timestamp"])
    order = np.argsort(seconds, kind="stable")
    return torch.from_numpy(np.stack([vocab.user_index(frame["user_id"].to_numpy())[order],
                                      vocab.item_index(frame["item_id"].to_numpy())[order],
                                      seconds[order]]))


def snapshot_cuts(seconds: np.ndarray, snapshots: int) -> np.ndarray:
    """The cuts (ascending, distinct) of `snapshots` snapshots of edges at `seconds` (sorted): the
    edge times at the quantiles 1/S .. (S-1)/S. Snapshot 0 holds no edge, snapshot j the edges
    strictly before cut j - 1."""
    if not len(seconds):
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.quantile(seconds, np.arange(1, snapshots) / snapshots,
                                 method="inverted_cdf")).astype(np.int64)


def snapshot_sizes(seconds: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(len(cuts) + 1,) edges in each snapshot: 0, then the edges strictly before each cut."""
    return np.concatenate([[0], np.searchsorted(seconds, cuts, side="left")])


def snapshot_of(cuts: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(Q,) each query's snapshot: the number of cuts at or before its time."""
    return np.searchsorted(cuts, np.asarray(at, dtype=np.int64), side="right")


def visible_edges(seconds: np.ndarray, snapshots: int, at: np.ndarray) -> np.ndarray:
    """(Q,) how many of the time-sorted edges a training example at each time `at` reads."""
    cuts = snapshot_cuts(seconds, snapshots)
    return snapshot_sizes(seconds, cuts)[snapshot_of(cuts, at)]


def adjacency(edges: torch.Tensor, source: int, target: int, shape: tuple[int, int]) -> torch.Tensor:
    """Sparse CSR (targets x sources) of `edges`' rows `target` <- `source`: PyG's layers then
    aggregate with one sparse product instead of a gather and a scatter over the edge list."""
    from torch_geometric.utils import to_torch_csr_tensor  # here: only graph encoders need PyG

    return to_torch_csr_tensor(edges[[target, source]], size=shape)
