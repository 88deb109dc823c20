"""The live user tower as the service runs it: one user per call, traced per padded history width.

Eager PyTorch spends most of a one-user forward in Python dispatch (~1.5 ms for the two-layer
transformer over the full window `encode_users` pads to). Histories are left-aligned and the
encoder is causal, so cutting the padding to any width >= the history length changes nothing.
Each bucket width is traced and frozen once per snapshot (TorchScript runs the same ops from C++).
The history items' representations (item tower content + MLP) are fixed in eval mode, so they are
computed once per snapshot for the whole vocabulary and looked up per request.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import pandas as pd
import torch

from towers.artifact import Artifact
from towers.data import UserBatch, encode_users
from towers.model import ItemTower, TwoTower

log = logging.getLogger(__name__)

WIDTHS = (16, 64, 256)  # history buckets: short sessions, the stored 50, long merged sessions
FIELDS = [f.name for f in dataclasses.fields(UserBatch)]
CUT = {"seq", "seq_mask", "seq_gap"}  # the (B, L) fields
TABLE_CHUNK = 4096  # items per pass when precomputing the history table


class _Represented(torch.nn.Module):
    """The item tower as the user tower reads it (`represent(known(index))`), precomputed.

    One (N + 1, D) table of every vocabulary item's representation, built once (eval mode): a
    request's history lookup becomes a row gather instead of embedding bags and the item MLP.
    """

    def __init__(self, items: ItemTower) -> None:
        super().__init__()
        with torch.no_grad():
            index = torch.arange(len(items.known_price))
            self.table = torch.cat([items.represent(items.known(chunk))
                                    for chunk in index.split(TABLE_CHUNK)])  # (N + 1, D)

    def known(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"id": index}

    def represent(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.embedding(inputs["id"], self.table)  # (..., D)


class _Users(torch.nn.Module):
    """`TwoTower.users` over positional tensors (so it can be traced), history items precomputed."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.tower = model.user_tower
        self.items = _Represented(model.item_tower)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.tower(UserBatch(*tensors), self.items)  # (Q, D)


class UserEncoder:
    """`(user) -> (D,)` vector of one Feast-shaped user row, equal to `embed_users`."""

    def __init__(self, artifact: Artifact, *, trace: bool = True) -> None:
        vocab = artifact.model.vocab
        # Id lookups convert the vocabulary's lists to arrays on every call: convert them once.
        self.vocab = dataclasses.replace(vocab, item_ids=np.asarray(vocab.item_ids, dtype=np.int64),
                                         user_ids=np.asarray(vocab.user_ids, dtype=np.int64))
        self.max_len = artifact.config.max_len
        self.widths = sorted({min(w, self.max_len) for w in WIDTHS})
        eager = _Users(artifact.model.eval())
        self._forward = {w: self._trace(eager, w) if trace else eager for w in self.widths}

    def _trace(self, eager: torch.nn.Module, width: int) -> torch.nn.Module:
        example = self._cut(encode_users(self.vocab, {
            "user_id": [0], "event_timestamp": [0], "age": [None], "profile_tokens": [[]],
            "recent_item_ids": [[0] * width], "recent_timestamps": [list(range(width))]},
            self.max_len), width)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # Shape checks inside attention become constants: right, for a fixed width.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                return torch.jit.freeze(torch.jit.trace(eager, example, check_trace=False).eval())
        except Exception:  # an encoder TorchScript cannot trace still serves, eagerly
            log.warning("user tower: tracing failed at width %d, running eagerly", width,
                        exc_info=True)
            return eager

    @staticmethod
    def _cut(batch: UserBatch, width: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(batch, f)[:, :width] if f in CUT else getattr(batch, f)
                     for f in FIELDS)

    def __call__(self, user: pd.DataFrame | dict) -> np.ndarray:
        """One user's row, as a frame or a dict of one-item columns (see `encode_users`)."""
        batch = encode_users(self.vocab, user, self.max_len)
        length = int(batch.seq_mask.sum(dim=1).max())
        width = next(w for w in self.widths if w >= length)
        with torch.inference_mode():
            return self._forward[width](*self._cut(batch, width))[0].numpy()  # (D,)
