"""The liked head: its label comes from the event weight, it trains the shared user tower, and it is
not part of what is served."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.towers.conftest import MAX_LEN
from towers.data import Vocab, Windows, frame_windows
from towers.model import TowerConfig
from towers.multitask import liked_rows, twin_pairs
from towers.train import TrainConfig, fit


def test_training_rows_keep_their_event_weight_and_windows_know_their_frame_rows(small,
                                                                                 small_frame):
    assert small_frame["weight"].tolist() == small.interactions["weight"].tolist()
    vocab = Vocab.build(small_frame, small.items, title_buckets=64, profile_buckets=64)
    windows = Windows.build(vocab, frame_windows(small_frame, MAX_LEN))
    rows = windows.frame_rows[windows.queries(np.arange(len(windows)))[1]]
    assert sorted(rows.tolist()) == list(range(len(small_frame)))
    assert np.array_equal(windows.targets[windows.queries(np.arange(len(windows)))[1]],
                          vocab.item_index(small_frame["item_id"].to_numpy()[rows]))


def test_twin_rows_hide_the_same_seen_columns_as_their_queries():
    pairs = (torch.tensor([0, 0, 2, 3]), torch.tensor([4, 5, 6, 7]))
    rows, columns = twin_pairs(pairs, np.array([0, 3]), n_queries=4)  # twins: rows 4 and 5
    assert sorted(zip(rows.tolist(), columns.tolist(), strict=True)) == [
        (0, 4), (0, 5), (2, 6), (3, 7), (4, 4), (4, 5), (5, 7)]


def test_a_frame_without_usable_weights_is_refused_naming_the_column(small_frame):
    with pytest.raises(ValueError, match="no 'weight' column"):
        liked_rows(small_frame.drop(columns="weight"), 4.0)
    with pytest.raises(ValueError, match="no row has weight >= liked_min_weight=6"):
        liked_rows(small_frame, 6.0)
    broken = small_frame.assign(weight=small_frame["weight"].where(small_frame.index != 7))
    with pytest.raises(ValueError, match="row 7: 'weight' is missing"):
        liked_rows(broken, 4.0)


def test_the_liked_loss_trains_the_shared_user_tower_and_is_not_served(ml, small_frame):
    def trained(liked_weight: float):
        return fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=TrainConfig(epochs=2, batch_size=256, min_steps=1, patience=10,
                                     liked_weight=liked_weight)).model.state_dict()

    plain, liked = trained(0.0), trained(1.0)
    assert plain.keys() == liked.keys()  # the head is training-only
    moved = [k for k in plain if k.startswith("user_tower") and not torch.equal(plain[k], liked[k])]
    assert moved, "the liked rows' loss did not reach the user tower"
