"""Encoders: how each tower reads its inputs, one module per encoder, selected by name.

Two registries, filled by decorators: `user_encoder(name)` registers a history encoder of the
user tower (`TowerConfig.encoder`): a module built from the config whose forward maps history
tokens (B, L, D), their mask, and the query rows and positions (Q,) to states (Q, D), causally.
`item_encoder(name)` registers an item encoder (`TowerConfig.item_encoder`): a module built from
the config and vocabulary that adds to each item's ID + content representation (see `ItemEncoder`).
Every module of this package is imported here, so a new encoder is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from towers.data import Vocab
    from towers.model import ItemTower, TowerConfig

CONTENT = "content"  # the item tower's ID + content representation alone: no encoder

USER_ENCODERS: dict[str, Callable[[TowerConfig], nn.Module]] = {}
ITEM_ENCODERS: dict[str, type[ItemEncoder] | None] = {CONTENT: None}


class ItemEncoder(Protocol):
    """What the item tower asks of an item encoder (an `nn.Module`)."""

    @staticmethod
    def inputs(vocab: Vocab, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Tensors the encoder reads, from the training frame; saved with the item tower's
        catalogue (`known_<name>` buffers) and handed back to `forward` as `items.known_<name>`."""

    def __init__(self, config: TowerConfig, vocab: Vocab) -> None: ...

    def __call__(self, items: ItemTower, index: torch.Tensor, represented: torch.Tensor | None,
                 seconds: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Terms (S, C, D) added to the representations of items `index` (C,), one per state
        of the inputs, and each query's state (Q,) for queries at `seconds` (Q,) (training: only
        what was known before each query), or the state as served (S = 1, no queries) without
        `seconds`. `represented` (C, D) are the items' representations when the caller has them."""


def user_encoder(name: str) -> Callable:
    """Register a history encoder class (built with the config) under `name`."""
    def register(cls: Callable) -> Callable:
        USER_ENCODERS[name] = cls
        return cls
    return register


def item_encoder(name: str) -> Callable:
    """Register an item encoder class (see `ItemEncoder`) under `name`."""
    def register(cls: type) -> type:
        ITEM_ENCODERS[name] = cls
        return cls
    return register


def build_item_encoder(config: TowerConfig, vocab: Vocab) -> nn.Module | None:
    """The configured item encoder, or None for the ID + content representation alone."""
    cls = ITEM_ENCODERS[config.item_encoder]
    return None if cls is None else cls(config, vocab)


def item_encoder_inputs(config: TowerConfig, vocab: Vocab, frame: pd.DataFrame
                        ) -> dict[str, torch.Tensor]:
    """The configured item encoder's inputs from a training frame ({} for none)."""
    cls = ITEM_ENCODERS[config.item_encoder]
    return {} if cls is None else cls.inputs(vocab, frame)


def by_state(state: torch.Tensor, score: Callable[[torch.Tensor, int], torch.Tensor]
             ) -> torch.Tensor:
    """(Q, C) logits assembled from `score(rows, s)`, the logits of the query rows in state s."""
    states = state.unique().tolist()
    rows = [torch.nonzero(state == s).flatten() for s in states]
    logits = torch.cat([score(r, s) for r, s in zip(rows, states, strict=True)])  # grouped rows
    return logits[torch.argsort(torch.cat(rows))]  # (Q, C) in query order


def registered(kind: str, name: str, registry: dict) -> str:
    """`name` if `registry` has it, else an error naming the registered ones."""
    if name not in registry:
        raise ValueError(f"{kind} {name!r} is not registered; choose from {sorted(registry)}")
    return name


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
