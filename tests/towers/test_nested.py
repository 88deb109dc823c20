"""Nested (Matryoshka-style) losses and serving at a prefix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from towers.nested import check_nested_dims, nested_loss, prefix
from towers.train import TrainConfig


def test_the_nested_loss_is_the_softmax_loss_of_each_renormalised_prefix():
    torch.manual_seed(0)
    users, items, labels = torch.randn(5, 8), torch.randn(7, 8), torch.tensor([0, 3, 6, 2, 2])
    seen = (torch.tensor([1]), torch.tensor([4]))
    got = nested_loss(users, items, labels, (2, 4), 0.1, None, seen)
    want = 0.0
    for d in (2, 4):
        logits = F.normalize(users[:, :d], dim=-1) @ F.normalize(items[:, :d], dim=-1).T / 0.1
        logits[1, 4] = -torch.inf
        want += F.cross_entropy(logits, labels, reduction="sum")
    assert torch.allclose(got, want)
    correction = torch.randn(5, 7)
    assert not torch.allclose(nested_loss(users, items, labels, (2,), 0.1, correction, None),
                              nested_loss(users, items, labels, (2,), 0.1, None, None))


def test_nested_dims_parse_from_the_command_line_and_are_checked_against_the_towers():
    assert TrainConfig(nested_dims="16,32").nested_dims == (16, 32)
    assert TrainConfig().nested_dims == (), "off by default"
    with pytest.raises(ValueError, match=r"\[64\] not between 1 and the towers' dim=64 - 1"):
        check_nested_dims((16, 64), 64, item_popularity=False)
    with pytest.raises(ValueError, match="item_popularity=false"):
        check_nested_dims((16,), 64, item_popularity=True)
    with pytest.raises(ValueError, match="item_encoder='sage'"):
        check_nested_dims((16,), 64, item_popularity=False, item_encoder="sage")


def test_a_prefix_is_the_first_coordinates_renormalised():
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(prefix(vectors, 2), [[0.6, 0.8], [0.0, 1.0]])
