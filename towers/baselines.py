"""Baselines for the evaluation harness: Popularity and EASE (Steck 2019, closed form).

Both return a `Recommend(frame, k, exclude)` over the whole catalogue, so they run on exactly the
splits and metrics the two-tower model does.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from towers.evaluate import Queries, Recommend, Split, chunk_rows, chunked_top_k, evaluate

log = logging.getLogger(__name__)

# Validation picks lambda; the grid reaches far enough that the pick is not stuck on an edge.
EASE_LAMBDAS = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5)
EASE_MAX_ITEMS = 5_000  # one (N, N) inverse per lambda: larger catalogues are compared without EASE


def popularity(train: pd.DataFrame, items: pd.DataFrame) -> Recommend:
    """Every user gets the most interacted-with items of `train`."""
    catalogue = items["item_id"].to_numpy()
    counts = train["item_id"].value_counts().reindex(catalogue, fill_value=0).to_numpy()
    scores = torch.from_numpy(counts.astype(np.float32))  # (N,)

    def recommend(frame: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        return chunked_top_k(lambda i, j: scores.expand(j - i, -1), catalogue, k, exclude)

    return recommend


def _user_rows(histories, catalogue: np.ndarray) -> torch.Tensor:
    """Binary user x item matrix (U, N) of the histories."""
    index = pd.Index(catalogue)
    x = torch.zeros(len(histories), len(catalogue))
    for i, h in enumerate(histories):
        cols = index.get_indexer(np.asarray(h, dtype=np.int64))
        x[i, torch.from_numpy(cols[cols >= 0])] = 1.0
    return x


def _gram(histories: list, catalogue: np.ndarray) -> torch.Tensor:
    """X'X (N, N) of the binary user x item matrix X of the histories, summed over chunks of
    users (a million users by 5,000 items would be 20 GB at once), each as sparse x dense rows."""
    gram = torch.zeros(len(catalogue), len(catalogue), dtype=torch.float64)
    rows = chunk_rows(len(catalogue))
    for i in range(0, len(histories), rows):
        x = _user_rows(histories[i:i + rows], catalogue).double()  # (rows, N)
        gram += x.T.to_sparse() @ x  # (N, rows) @ (rows, N)
    return gram


def ease(train: pd.DataFrame, items: pd.DataFrame, lam: float) -> Recommend:
    """EASE item-item weights B = I - P / diag(P), P = (X'X + lam I)^-1; scores = x_u B."""
    catalogue = items["item_id"].to_numpy()
    return _ease(_gram(_histories(train), catalogue), catalogue, lam)


def _histories(train: pd.DataFrame) -> list:
    return train.groupby("user_id")["item_id"].agg(list).tolist()


def _ease(gram: torch.Tensor, catalogue: np.ndarray, lam: float) -> Recommend:
    """`ease` on the Gram matrix X'X (N, N) of its training rows: one for every lambda tried."""
    p = torch.linalg.inv(gram + lam * torch.eye(len(catalogue), dtype=torch.float64))  # (N, N)
    b = (-p / p.diagonal()).float()  # (N, N)
    b.fill_diagonal_(0.0)

    def recommend(frame: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        return chunked_top_k(lambda i, j: _user_rows(exclude[i:j], catalogue) @ b,  # all they saw
                             catalogue, k, exclude)

    return recommend


def tune_ease(train: pd.DataFrame, validation: Queries, items: pd.DataFrame,
              lambdas: tuple[float, ...] = EASE_LAMBDAS) -> tuple[float, dict[float, float]]:
    """The lambda with the best validation NDCG@10 of EASE fitted on `train`, and every lambda's."""
    catalogue = items["item_id"].to_numpy()
    gram = _gram(_histories(train), catalogue)  # (N, N)
    results = {lam: evaluate(_ease(gram, catalogue, lam), validation)["ndcg@10"] for lam in lambdas}
    log.info("EASE validation NDCG@10 by lambda: %s", results)
    best = max(results, key=results.__getitem__)
    if best in (min(lambdas), max(lambdas)):
        log.warning("EASE: lambda %g is on the edge of the grid %s; the optimum may lie beyond",
                    best, lambdas)
    return best, results


def validation_scores(split: Split, items: pd.DataFrame) -> dict[str, float]:
    """Validation NDCG@10 of Popularity and of EASE (its lambda tuned there), both fitted on the
    split's train part: what a model trained on that part is selected against.

    EASE is left out (no "ease" key) above `EASE_MAX_ITEMS` items.
    """
    scores = {"popularity": evaluate(popularity(split.train, items), split.validation)["ndcg@10"]}
    if len(items) > EASE_MAX_ITEMS:
        log.info("EASE left out of the comparison: %d items > %d", len(items), EASE_MAX_ITEMS)
        return scores
    lam, by_lambda = tune_ease(split.train, split.validation, items)
    return scores | {"ease": by_lambda[lam], "ease_lambda": lam}
