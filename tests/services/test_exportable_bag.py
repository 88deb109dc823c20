"""The exportable embedding bag equals torch's, in PyTorch and exported to ONNX Runtime."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.exportable_bag import ExportableBag

TOKENS = torch.tensor([[3, 5, 0], [0, 0, 0], [9, 9, 2]])  # padded, all padding, repeats


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_exportable_bag_equals_torchs_embedding_bag_with_padding(mode):
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(10, 4, mode=mode, padding_idx=0)
    expected = bag(TOKENS).detach().numpy()
    np.testing.assert_allclose(ExportableBag(bag)(TOKENS).detach(), expected, atol=1e-6)

    graph = io.BytesIO()
    torch.onnx.export(ExportableBag(bag), (TOKENS,), graph, input_names=["tokens"], dynamo=False)
    session = ort.InferenceSession(graph.getvalue(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"tokens": TOKENS.numpy()})[0], expected,
                               atol=1e-6)


def test_a_max_bag_is_refused_by_name():
    with pytest.raises(ValueError, match="'max'"):
        ExportableBag(torch.nn.EmbeddingBag(10, 4, mode="max"))
