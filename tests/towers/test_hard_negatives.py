"""Hard negatives: exact neighbours of each positive, an easy-to-hard draw, and their place in the
sampled softmax's candidates and logQ correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.towers.conftest import MAX_LEN
from towers.data import sampled_candidates
from towers.hard_negatives import HardNegatives
from towers.model import TowerConfig
from towers.train import TrainConfig, fit


def test_mined_neighbours_are_each_items_nearest_others_by_cosine():
    vectors = torch.randn(201, 8, generator=torch.Generator().manual_seed(0))  # row 0: unknown
    hard = HardNegatives(per_query=2, pool=5)
    hard.mine(vectors)
    unit = F.normalize(vectors[1:], dim=-1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-np.inf)
    expected = sims.topk(5, dim=1).indices + 1
    assert torch.equal(hard.neighbours[1:], expected)
    assert not (hard.neighbours[1:] == torch.arange(1, 201)[:, None]).any()  # never the item itself


def test_draws_come_from_the_whole_pool_early_and_the_nearest_few_at_the_end():
    hard = HardNegatives(per_query=2, pool=10)
    assert hard.draw(torch.tensor([1]), 0.0, torch.Generator()) is None  # nothing mined yet
    hard.neighbours = torch.arange(11 * 10).reshape(11, 10)  # item i's k-th nearest: 10 i + k
    targets = torch.full((500,), 3)
    generator = torch.Generator().manual_seed(0)
    early = set(hard.draw(targets, 0.0, generator).tolist())
    late = set(hard.draw(targets, 1.0, generator).tolist())
    assert early == set(range(30, 40))
    assert late == {30, 31}
    assert len(hard.draw(targets, 0.5, generator)) == 2 * 500


def test_hard_draws_join_the_candidates_once_and_count_in_their_correction():
    targets = torch.tensor([5, 3, 5])
    log_q = torch.log(torch.full((11,), 0.1))
    hard = torch.tensor([8, 8, 3, 9])  # 3 is already a target: no second column
    candidates, labels, correction = sampled_candidates(
        targets, n_items=10, n_uniform=0, log_q=log_q, generator=torch.Generator(), hard=hard)
    assert candidates.tolist() == [3, 5, 8, 9]
    assert candidates[labels].tolist() == targets.tolist()
    np.testing.assert_allclose(correction.exp().numpy(), 3 * 0.1 + np.array([1, 0, 2, 1]),
                               rtol=1e-5)


def test_hard_negatives_ask_for_the_sampled_softmax_and_a_pool_holding_them(ml, small_frame):
    with pytest.raises(ValueError, match="hard_negatives.*loss='sampled'"):
        fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
            train=TrainConfig(epochs=1, loss="full", hard_negatives=2))
    with pytest.raises(ValueError, match="hard_pool=1 must be at least hard_negatives=2"):
        HardNegatives(per_query=2, pool=1)


def test_hard_negatives_enter_the_loss_and_the_model_still_learns(ml, small_frame):
    def trained(hard_negatives: int):
        return fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=TrainConfig(epochs=3, batch_size=256, loss="sampled",
                                     hard_negatives=hard_negatives, hard_pool=20, patience=10,
                                     validate_steps=1))

    plain, hard = trained(0), trained(4)
    losses = [h["loss"] for h in hard.metrics["history"]]
    assert losses[-1] < losses[0], losses
    # Only the hard draws differ between the runs (they use their own generator): the weights too.
    plain_state, hard_state = plain.model.state_dict(), hard.model.state_dict()
    assert any(not torch.equal(plain_state[k], hard_state[k]) for k in plain_state)
