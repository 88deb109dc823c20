"""The live user tower as the service runs it: one user per call, on ONNX Runtime, per padded history width.

PyTorch spends most of a one-user forward in per-op dispatch (~1 ms for the two-layer transformer,
even traced); ONNX Runtime runs the same graph in about a third of that. Histories are
left-aligned and the encoder is causal, so cutting the padding to any width >= the history length
changes nothing: each bucket width is exported once per snapshot. The history items'
representations (item tower content + MLP) are fixed in eval mode, so they are computed once per
snapshot for the whole vocabulary and looked up per request.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import warnings
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from services.exportable_bag import ExportableBag
from towers.artifact import Artifact
from towers.data import UserBatch, encode_users
from towers.model import ItemTower, TwoTower

log = logging.getLogger(__name__)

WIDTHS = (16, 64, 256)  # history buckets (plus max_len): short sessions, the stored 50, long merged
FIELDS = [f.name for f in dataclasses.fields(UserBatch)]
CUT = {"seq", "seq_mask", "seq_gap"}  # the (B, L) fields
TABLE_CHUNK = 4096  # items per pass when precomputing the history table

Forward = Callable[[UserBatch, int], np.ndarray]  # (batch, history width) -> (Q, D)


class _Represented(nn.Module):
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
        return F.embedding(inputs["id"], self.table)  # (..., D)


class _Users(nn.Module):
    """`TwoTower.users` over positional tensors (so it can be exported), history items precomputed."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.tower = copy.deepcopy(model.user_tower)  # its bags are swapped; the artifact's are not
        for name, child in list(self.tower.named_children()):
            if isinstance(child, nn.EmbeddingBag):
                setattr(self.tower, name, ExportableBag(child))
        self.items = _Represented(model.item_tower)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.tower(UserBatch(*tensors), self.items)  # (Q, D)


class UserEncoder:
    """`(user) -> (dim,)` vector of one Feast-shaped user row, equal to `embed_users`."""

    def __init__(self, artifact: Artifact) -> None:
        self.prior = artifact.prior
        self.vocab = artifact.model.vocab
        self.max_len = artifact.config.max_len
        self.widths = sorted({min(w, self.max_len) for w in WIDTHS} | {self.max_len})
        users = _Users(artifact.model.eval()).eval()
        self._forward = {w: self._compile(users, w) for w in self.widths}

    def _compile(self, users: _Users, width: int) -> Forward:
        """`users` exported at one history width and loaded into ONNX Runtime (one thread: one
        request = one core); if the export fails, the eager module, which serves the same."""
        example = self._cut(encode_users(self.vocab, {
            "user_id": [0], "event_timestamp": [0], "age": [None], "profile_tokens": [[]],
            "recent_item_ids": [[0] * width], "recent_timestamps": [list(range(width))]},
            self.max_len), width)
        try:
            graph = io.BytesIO()
            with torch.no_grad(), warnings.catch_warnings():
                # Shape checks become constants (right for a fixed width); the TorchScript-based
                # exporter is deprecated but, unlike torch.export's, needs no onnxscript and
                # exports in under a second.
                warnings.simplefilter("ignore")
                torch.onnx.export(users, example, graph, input_names=FIELDS, dynamo=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            session = ort.InferenceSession(graph.getvalue(), options,
                                           providers=["CPUExecutionProvider"])
        except Exception:  # a tower the exporter cannot handle still serves, eagerly
            log.warning("user tower: ONNX export failed at width %d, running in PyTorch", width,
                        exc_info=True)
            return self._eager(users)
        inputs = [i.name for i in session.get_inputs()]  # the exporter drops unused fields
        return lambda batch, width: session.run(None, {name: _array(batch, name, width)
                                                       for name in inputs})[0]

    def _eager(self, users: _Users) -> Forward:
        def forward(batch: UserBatch, width: int) -> np.ndarray:
            with torch.inference_mode():
                return users(*self._cut(batch, width)).numpy()
        return forward

    @staticmethod
    def _cut(batch: UserBatch, width: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(batch, f)[:, :width] if f in CUT else getattr(batch, f)
                     for f in FIELDS)

    def __call__(self, user: pd.DataFrame | dict) -> np.ndarray:
        """One user's row, as a frame or a dict of one-item columns (see `encode_users`)."""
        batch = encode_users(self.vocab, user, self.max_len)
        length = min(max((len(h) for h in user["recent_item_ids"]), default=0), self.max_len)
        width = next(w for w in self.widths if w >= length)
        return self.prior.users(self._forward[width](batch, width))[0]  # (dim,)


def _array(batch: UserBatch, name: str, width: int) -> np.ndarray:
    """A batch field as ONNX Runtime takes it, its history cut to `width`."""
    values = getattr(batch, name).numpy()
    return np.ascontiguousarray(values[:, :width]) if name in CUT else values
