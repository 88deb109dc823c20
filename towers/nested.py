"""Nested (Matryoshka-style) losses: the first d coordinates of every vector rank items on their own.

With `TrainConfig.nested_dims`, each training step adds, for every d listed, the same softmax loss
scored on the renormalised first d coordinates of the user and item vectors. A model trained so
can be served at a truncated prefix (`prefix`) without retraining: a smaller index from one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, PositiveInt

from towers.encoders import CONTENT


def _split(value: object) -> object:
    """A command line's "16,32" as (16, 32); "" as ()."""
    return tuple(v for v in value.split(",") if v.strip()) if isinstance(value, str) else value


NestedDims = Annotated[tuple[PositiveInt, ...], BeforeValidator(_split)]  # TrainConfig.nested_dims


def check_nested_dims(dims: Sequence[int], dim: int, *, item_popularity: bool,
                      item_encoder: str = CONTENT) -> None:
    """Refuse prefixes the model cannot serve: not below its dimension, or with the popularity trend
    or an item encoder's graph term.

    Those are added to the item vector before normalising, which a prefix loss does not model.
    """
    wrong = [d for d in dims if not 0 < d < dim]
    if wrong:
        raise ValueError(f"nested_dims={list(dims)}: {wrong} not between 1 and the towers' dim={dim} - 1")
    if dims and item_popularity:
        raise ValueError("nested_dims: the prefix losses do not score the popularity trend; "
                         "set item_popularity=false")
    if dims and item_encoder != CONTENT:
        raise ValueError(f"nested_dims: the prefix losses do not score item_encoder={item_encoder!r}'s "
                         f"graph term; set item_encoder={CONTENT!r}")


def nested_loss(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor, dims: Sequence[int],
                temperature: float | torch.Tensor, correction: torch.Tensor | None,
                seen: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Summed cross-entropy over the rows of every prefix in `dims`.

    users (Q, D) and items (C, D) are the towers' outputs before any prefix is taken; `correction`
    (Q, C) is subtracted from the logits (sampled softmax's logQ) and `seen` (query, column) pairs
    are masked, exactly as in the full-dimension loss.
    """
    total = users.new_zeros(())
    for d in dims:
        logits = (F.normalize(users[:, :d], dim=-1) / temperature) @ F.normalize(items[:, :d], dim=-1).T
        if correction is not None:
            logits = logits - correction  # (Q, C)
        if seen is not None:
            logits = logits.index_put(seen, torch.tensor(-torch.inf))
        total = total + F.cross_entropy(logits, labels, reduction="sum")
    return total


def prefix(vectors: np.ndarray, d: int) -> np.ndarray:
    """(N, d) unit vectors: the first d coordinates, renormalised (how a nested model is served)."""
    head = vectors[:, :d].astype(np.float32)
    return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)
