"""LightGCN (He et al. 2020) as a graph baseline for the evaluation harness: PyG's `LightGCN` on the
bipartite user-item graph of a split's training events.

Users and items are free embeddings, smoothed over the graph (the mean of `layers` propagations).
The loss is BPR (one uniform negative per positive edge) or a softmax over the whole catalogue;
`tune` picks the loss and its L2 weight on validation NDCG@10, stopping each fit early there, and
`fit_split` refits the pick on the events before the test cut for the best number of epochs
(TEMPORAL; on LOO those are the tuning fit's events, whose model is kept). It is transductive:
a user or an item without a training event has no node; such users score nothing and such items
rank last.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import PositiveFloat
from torch_geometric.nn import LightGCN
from torch_geometric.utils import to_torch_csr_tensor
from tqdm import tqdm

from towers.config import Config, Count
from towers.evaluate import Queries, Recommend, Split, evaluate, top_k

log = logging.getLogger(__name__)

Loss = Literal["bpr", "softmax"]
# The grid `tune` searches on validation (with the epoch count): the loss. A fit costs minutes on
# ML-100K on one core, so the L2 weight stays at LightGCN's published 1e-4.
GRID: tuple[tuple[Loss, float], ...] = (("softmax", 1e-4), ("bpr", 1e-4))


class LightGCNConfig(Config):
    """One LightGCN fit."""

    dim: Count = 64  # the paper's embedding size
    layers: Count = 3  # the paper's best depth on its three sets
    loss: Loss = "softmax"
    reg: float = 1e-4  # L2 weight on the batch's layer-0 embeddings (PyG's recommendation_loss)
    lr: PositiveFloat = 1e-2  # Adam; 5e-3 needed twice the epochs on ML-100K
    batch_size: Count = 2048  # positive edges per step
    epochs: Count = 300  # passes over the edges at most; early stopping ends fits far sooner
    validate_every: Count = 5  # epochs between validations
    patience: Count = 3  # validations without improvement before stopping
    seed: int = 0


class Graph:
    """The training events as LightGCN's node ids: users 0..U-1, then items U..U+N-1."""

    def __init__(self, events: pd.DataFrame):
        self.user_ids = np.unique(events["user_id"].to_numpy())
        self.item_ids = np.unique(events["item_id"].to_numpy())
        users = np.searchsorted(self.user_ids, events["user_id"].to_numpy())
        items = np.searchsorted(self.item_ids, events["item_id"].to_numpy())
        self.pairs = torch.from_numpy(np.stack([users, items]))  # (2, E) user row, item column
        shifted = torch.from_numpy(np.stack([users, items + len(self.user_ids)]))
        # Both directions, as a CSR adjacency: PyG then propagates with one sparse product per
        # layer, ~7x faster than gathering and scattering the edge list on CPU.
        self.edge_index = to_torch_csr_tensor(torch.cat([shifted, shifted.flip(0)], dim=1),
                                              size=(self.nodes, self.nodes))  # (U + N, U + N)

    @property
    def nodes(self) -> int:
        return len(self.user_ids) + len(self.item_ids)


def _loss(model: LightGCN, graph: Graph, batch: torch.Tensor, config: LightGCNConfig,
          generator: torch.Generator) -> torch.Tensor:
    """The batch's loss: BPR against a uniform negative, or softmax over every item."""
    users, items = graph.pairs[:, batch]  # (B,), (B,)
    n_users = len(graph.user_ids)
    nodes = torch.cat([users, items + n_users])  # the regularised layer-0 rows
    if config.loss == "bpr":
        negatives = torch.randint(len(graph.item_ids), (len(batch),), generator=generator)
        pairs = torch.stack([torch.cat([users, users]),
                             torch.cat([items, negatives]) + n_users])  # (2, 2B)
        rank = model(graph.edge_index, pairs)  # (2B,)
        return model.recommendation_loss(rank[:len(batch)], rank[len(batch):],
                                         node_id=torch.cat([nodes, negatives + n_users]),
                                         lambda_reg=config.reg)
    embedding = model.get_embedding(graph.edge_index)  # (U + N, D)
    logits = embedding[users] @ embedding[n_users:].T  # (B, N)
    reg = config.reg * model.embedding.weight[nodes].norm(dim=1).pow(2).mean()
    return F.cross_entropy(logits, items) + reg


def recommender(model: LightGCN, graph: Graph, items: pd.DataFrame) -> Recommend:
    """Scores of every catalogue item for the queries' users (items without a node rank last)."""
    with torch.no_grad():
        embedding = model.get_embedding(graph.edge_index)  # (U + N, D)
    n_users = len(graph.user_ids)
    catalogue = items["item_id"].to_numpy()
    column = np.searchsorted(graph.item_ids, catalogue).clip(0, len(graph.item_ids) - 1)
    has_node = torch.from_numpy(graph.item_ids[column] == catalogue)  # (C,)
    item_vectors = embedding[n_users:][torch.from_numpy(column)]  # (C, D)

    def recommend(frame: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        ids = frame["user_id"].to_numpy()
        row = np.searchsorted(graph.user_ids, ids).clip(0, n_users - 1)
        known = torch.from_numpy(graph.user_ids[row] == ids)[:, None]  # (U, 1)
        scores = torch.where(known, embedding[torch.from_numpy(row)] @ item_vectors.T, 0.0)
        return top_k(scores.masked_fill(~has_node, torch.finfo(scores.dtype).min), catalogue, k,
                     exclude)  # last, yet offered: -inf would be left out

    return recommend


def fit(events: pd.DataFrame, items: pd.DataFrame, config: LightGCNConfig,
        validation: Queries | None = None) -> tuple[Recommend, dict]:
    """Train on `events`; with `validation`, keep the epoch of its best NDCG@10 (early stopping),
    otherwise train `config.epochs` epochs. Returns the recommender and the fit's figures."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    graph = Graph(events)
    model = LightGCN(graph.nodes, config.dim, config.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    started = time.perf_counter()
    best, best_epoch, bad, history = -np.inf, config.epochs - 1, 0, []
    state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(config.epochs), desc=f"lightgcn {config.loss}", unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.randperm(graph.pairs.shape[1], generator=generator)
        for batch in order.split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(model, graph, batch, config, generator)
            loss.backward()
            optimizer.step()
        if validation is None or (epoch + 1) % config.validate_every:
            continue
        model.eval()
        val = evaluate(recommender(model, graph, items), validation)["ndcg@10"]
        history.append({"epoch": epoch, "loss": loss.item(), "val": val})
        log.info("lightgcn %s reg %g epoch %d loss %.4f val %.4f", config.loss, config.reg, epoch,
                 loss.item(), val)
        bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{val:.4f}")
        if val > best:
            best, best_epoch, bad, state = val, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= config.patience:
                break
    if validation is not None:
        model.load_state_dict(state)
    model.eval()
    figures = {"val": float(best), "best_epoch": best_epoch,
               "seconds": round(time.perf_counter() - started, 1), "history": history}
    return recommender(model, graph, items), figures


def tune(split: Split, items: pd.DataFrame, base: LightGCNConfig | None = None,
         grid: tuple[tuple[Loss, float], ...] = GRID
         ) -> tuple[LightGCNConfig, str, float, Recommend]:
    """The (loss, reg) of `grid` whose fit on `split.train` has the best validation NDCG@10, as a
    config for its best epoch count; its name, that NDCG@10 and the fit's recommender."""
    base = base or LightGCNConfig()
    best: tuple[LightGCNConfig, str, float, Recommend] | None = None
    for loss, reg in grid:
        recommend, figures = fit(split.train, items,
                                 base.model_copy(update={"loss": loss, "reg": reg}), split.validation)
        name = f"{loss} reg={reg:g}"
        log.info("lightgcn %s: validation NDCG@10 %.4f at epoch %d", name, figures["val"],
                 figures["best_epoch"])
        if best is None or figures["val"] > best[2]:
            best = (base.model_copy(update={"loss": loss, "reg": reg,
                                            "epochs": figures["best_epoch"] + 1}),
                    name, figures["val"], recommend)
    assert best is not None, "an empty grid"
    return best


def fit_split(split: Split, items: pd.DataFrame, base: LightGCNConfig | None = None,
              grid: tuple[tuple[Loss, float], ...] = GRID) -> tuple[Recommend, dict]:
    """Tune on validation, then refit the pick on the events before the test cut for its best
    epoch count. On LOO those are the tuning fit's own events, so its model is kept as it is."""
    config, picked, val, recommend = tune(split, items, base, grid)
    figures = {"picked": picked, "epochs": config.epochs, "val": val}
    if split.test_train is not split.train:  # TEMPORAL: refit up to the test cut
        recommend, refit = fit(split.test_train, items, config)
        figures["refit_seconds"] = refit["seconds"]
    return recommend, figures
