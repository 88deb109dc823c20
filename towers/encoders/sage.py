"""GraphSAGE item encoder: an item's ID + content representation plus the aggregate of its
neighbourhood in the bipartite user-item graph (`towers.graph`), two PyG `SAGEConv` hops: each
user is the mean of the items it interacted with, each item then the mean of its users, so an
item hears from the items its users also interacted with.

The term added for an item without edges is exactly zero (no bias on the last hop), so a new item
is embedded from its content as without the encoder. Training reads the snapshot of the graph its
example may know (`towers.graph`); served vectors read every edge, computed once per set of
weights. The user tower does not read the graph: its history already is the user's own
neighbourhood, and serving stays one user-tower pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from towers import graph
from towers.data import Vocab
from towers.encoders import item_encoder


@item_encoder("sage")
class SageItems(nn.Module):
    """Two SAGEConv hops (items -> users -> items) over the interaction graph."""

    @staticmethod
    def inputs(vocab: Vocab, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        return {"graph": graph.interaction_edges(vocab, frame)}  # (3, E)

    def __init__(self, config, vocab: Vocab):
        from torch_geometric.nn import SAGEConv  # here: PyG costs every process 2 s to import

        super().__init__()
        d = config.dim
        self.users = len(vocab.user_ids) + 1
        self.snapshots = config.graph_snapshots
        self.to_users = SAGEConv(d, d, root_weight=False)  # a user: the mean of its items
        self.to_items = SAGEConv(d, d, root_weight=False, bias=False)  # no users: exactly 0
        self._adjacency: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._served: tuple[tuple, torch.Tensor] | None = None  # (weights' versions, table)

    def neighbourhood(self, table: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """(N + 1, D) aggregate of each item's neighbourhood in `edges` (3, E), from the items'
        representations `table` (N + 1, D)."""
        items = len(table)
        key = (edges.data_ptr(), edges._version, edges.shape[1])  # snapshots: prefixes of one tensor
        if key not in self._adjacency:
            self._adjacency[key] = (
                graph.adjacency(edges, graph.ITEM, graph.USER, (self.users, items)),
                graph.adjacency(edges, graph.USER, graph.ITEM, (items, self.users)))
        to_users, to_items = self._adjacency[key]
        users = F.gelu(self.to_users((table, None), to_users))  # (U + 1, D)
        return self.to_items((users, None), to_items)  # (N + 1, D)

    def forward(self, items, index: torch.Tensor, represented: torch.Tensor | None,
                seconds: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """See `towers.encoders.ItemEncoder`: one term per snapshot the queries read."""
        edges = items.known_graph  # (3, E), by time
        if seconds is None:
            return self._served_table(items)[index][None], None  # (1, C, D)
        times = edges[graph.SECOND].numpy()
        cuts = graph.snapshot_cuts(times, self.snapshots)
        used, state = np.unique(graph.snapshot_of(cuts, seconds), return_inverse=True)
        sizes = graph.snapshot_sizes(times, cuts)[used]
        everything = torch.arange(len(items.known_price))  # (N + 1,)
        if represented is not None and torch.equal(index, everything[1:]):
            table = F.pad(represented, (0, 0, 1, 0))  # row 0 (unknown) has no edges
        else:
            table = items.catalogue()  # (N + 1, D)
        terms = [self.neighbourhood(table, edges[:, :size]).index_select(0, index) if size else
                 table.new_zeros(len(index), table.shape[1]) for size in sizes.tolist()]
        return torch.stack(terms), torch.from_numpy(state)  # (S, C, D), (Q,)

    def _served_table(self, items) -> torch.Tensor:
        """Every item's term over every edge; kept while the tower's weights stay the same."""
        tensors = [*items.parameters(), *items.buffers()]
        key = tuple((id(t), t._version) for t in tensors)
        if self._served is not None and self._served[0] == key and not torch.is_grad_enabled():
            return self._served[1]
        table = self.neighbourhood(items.catalogue(), items.known_graph)
        if not torch.is_grad_enabled() and not self.training:
            self._served = (key, table)
        return table
