"""`nn.EmbeddingBag` rewritten in plain ops so the user tower exports to ONNX.

Depends on torch==2.13.0, onnx==1.23.2 and onnxruntime==1.32.0: their TorchScript-based exporter
(`torch.onnx.export(..., dynamo=False)`) refuses embedding bags with a `padding_idx`. The
equivalence with torch's bag, in PyTorch and in ONNX Runtime, is
tests/services/test_exportable_bag.py; re-run it when a pin moves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExportableBag(nn.Module):
    """An `nn.EmbeddingBag` (sum or mean, with padding) sharing the bag's weight."""

    def __init__(self, bag: nn.EmbeddingBag) -> None:
        super().__init__()
        if bag.mode not in ("sum", "mean"):
            raise ValueError(f"embedding bag mode {bag.mode!r}: only sum and mean are exportable")
        self.weight, self.padding_idx, self.mean = bag.weight, bag.padding_idx, bag.mode == "mean"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(tokens) if self.padding_idx is None else tokens != self.padding_idx
        keep = keep.unsqueeze(-1).to(self.weight.dtype)  # (B, T, 1)
        total = (F.embedding(tokens, self.weight) * keep).sum(-2)  # (B, T, D) -> (B, D)
        return total / keep.sum(-2).clamp(min=1) if self.mean else total
