"""Training data and loop: point-in-time histories (same-second ties), prefix windows that match the
frame path, negatives, loss going down on real data, determinism, and config overrides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.datasets import load
from towers.artifact import Artifact
from towers.data import (
    Vocab,
    batch_chunks,
    catalogue_content,
    histories_before,
    prefix_chunks,
    sampled_candidates,
    training_frame,
    user_profiles,
)
from towers.model import TowerConfig, TwoTower
from towers.train import TrainConfig, fit, parse_overrides


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "event_timestamp": pd.to_datetime([r[2] for r in rows], unit="s",
                                                           utc=True).astype("datetime64[us, UTC]")})


@pytest.fixture(scope="module")
def ml(ml100k_dir):
    torch.set_num_threads(1)
    return load(f"movielens-100k:{ml100k_dir}")


def test_history_holds_only_events_strictly_before_t_and_never_same_second_ties():
    events = _events([(1, 10, 100), (1, 11, 200), (1, 12, 200), (1, 13, 300), (2, 10, 200)])
    entities = _events([(1, 12, 200), (1, 13, 300), (1, 99, 201), (2, 10, 200), (3, 1, 5)])
    history = histories_before(events, entities, max_len=2)
    assert history["recent_item_ids"].tolist() == [[10], [11, 12], [11, 12], [], []]
    assert history["recent_timestamps"].tolist() == [[100], [200, 200], [200, 200], [], []]
    assert history["event_count"].tolist() == [1, 3, 3, 0, 0]


def test_prefix_windows_give_each_target_only_events_before_its_second():
    events = _events([(1, 10, 100), (1, 11, 200), (1, 12, 200), (1, 13, 200), (1, 14, 300)])
    (chunk,) = prefix_chunks(events, max_len=8)
    assert chunk.targets.tolist() == [10, 11, 12, 13, 14]
    assert chunk.query_pos.tolist() == [-1, 0, 0, 0, 3]  # same-second targets share position 0


def test_long_histories_see_a_recent_suffix_of_their_lookup_and_nothing_later():
    rows = [(1, 100 + i, 10 * (i // 2)) for i in range(23)]  # pairs of events share a second
    events = _events(rows)
    chunks = prefix_chunks(events, max_len=6)
    frame = histories_before(events, events, max_len=6).set_index(events["item_id"])
    assert sum(len(c.targets) for c in chunks) == 23
    for chunk in chunks:
        for pos, target in zip(chunk.query_pos, chunk.targets, strict=True):
            visible = chunk.items[:pos + 1].tolist()
            lookup = frame.loc[target, "recent_item_ids"]
            assert lookup[len(lookup) - len(visible):] == visible  # a suffix, never more
            assert len(visible) >= min(len(lookup), 3)


def test_prefix_pass_embeds_exactly_like_the_point_in_time_frame(ml):
    interactions = ml.interactions[ml.interactions["user_id"] <= 12]
    for encoder in ("transformer", "gru", "mean"):
        config = TowerConfig(dim=16, max_len=32, encoder=encoder)
        vocab = Vocab.build(interactions, ml.items, title_buckets=64, profile_buckets=32)
        torch.manual_seed(0)
        model = TwoTower(config, vocab, catalogue_content(vocab, ml.items)).eval()
        chunks = prefix_chunks(interactions, config.max_len)
        batch = batch_chunks(vocab, chunks, user_profiles(ml.users).set_index("user_id"))
        with torch.no_grad():
            prefix = model.users(batch.users).numpy()
        entities = pd.DataFrame({
            "user_id": np.concatenate([[c.user_id] * len(c.targets) for c in chunks]),
            "item_id": np.concatenate([c.targets for c in chunks]),
            "event_timestamp": pd.to_datetime(np.concatenate([c.seconds for c in chunks]),
                                              unit="s", utc=True)})
        frame = training_frame(interactions, ml.users, entities=entities, max_len=config.max_len)
        exact = (frame["event_count"] <= config.max_len).to_numpy()
        assert exact.sum() > 300 and (~exact).sum() > 100  # both regimes are exercised
        direct = Artifact(model).embed_users(frame)
        np.testing.assert_allclose(prefix[exact], direct[exact], atol=2e-5, err_msg=encoder)


def test_sampled_candidates_hold_each_batch_item_once_so_duplicates_are_not_negatives():
    targets = torch.tensor([5, 3, 5, 7])
    log_q = torch.log(torch.full((11,), 0.1))
    candidates, labels, correction = sampled_candidates(
        targets, n_items=10, n_uniform=20, log_q=log_q, generator=torch.Generator().manual_seed(0))
    assert candidates[:3].tolist() == [3, 5, 7]
    assert len(set(candidates.tolist())) == len(candidates)
    assert candidates[labels].tolist() == targets.tolist()
    np.testing.assert_allclose(correction.exp().numpy(), 4 * 0.1 + 20 / 10, rtol=1e-5)


@pytest.fixture(scope="module")
def small(ml):
    return ml.interactions[ml.interactions["user_id"] <= 60]


def test_loss_decreases_on_a_small_real_slice(ml, small):
    artifact = fit(small, ml.items, ml.users, tower=TowerConfig(dim=32, max_len=50),
                   train=TrainConfig(epochs=4, batch_size=8, patience=10))
    losses = [h["loss"] for h in artifact.metrics["history"]]
    assert losses[-1] < losses[0] - 0.1, losses


def test_sampled_softmax_with_mixed_negatives_also_learns(ml, small):
    artifact = fit(small, ml.items, ml.users, tower=TowerConfig(dim=16, max_len=50, encoder="gru"),
                   train=TrainConfig(epochs=3, batch_size=8, loss="sampled",
                                     uniform_negatives=128, patience=10))
    losses = [h["loss"] for h in artifact.metrics["history"]]
    assert losses[-1] < losses[0], losses


def test_same_seed_gives_identical_models(ml):
    tiny = ml.interactions[ml.interactions["user_id"] <= 15]
    config, train = TowerConfig(dim=16, max_len=20), TrainConfig(epochs=1, batch_size=4)
    first = fit(tiny, ml.items, ml.users, tower=config, train=train)
    second = fit(tiny, ml.items, ml.users, tower=config, train=train)
    np.testing.assert_array_equal(first.embed_items(ml.items), second.embed_items(ml.items))


def test_overrides_are_typed_and_unknown_keys_are_named():
    tower, train = TowerConfig(), TrainConfig()
    parse_overrides(["--dim=32", "--lr=0.01", "--use_user_id=true"], tower, train)
    assert (tower.dim, train.lr, tower.use_user_id) == (32, 0.01, True)
    with pytest.raises(ValueError, match="dimm"):
        parse_overrides(["--dimm=3"], tower, train)
    with pytest.raises(ValueError, match="epochs"):
        parse_overrides(["--epochs=many"], tower, train)


def test_future_labels_are_later_events_of_the_same_user_within_the_horizon():
    events = _events([(1, 10 + i, 100 * i) for i in range(12)])
    (chunk,) = prefix_chunks(events, max_len=16)
    vocab = Vocab.build(events, pd.DataFrame({"item_id": range(10, 22), "title": "x",
                                              "categories": [[]] * 12, "price": 1.0,
                                              "created_at": pd.Timestamp(0, tz="UTC")}),
                        title_buckets=8, profile_buckets=8)
    profiles = user_profiles(pd.DataFrame({"user_id": [1], "age": [30]})).set_index("user_id")
    batch = batch_chunks(vocab, [chunk], profiles, horizon=3, rng=np.random.default_rng(0))
    steps = (batch.future - batch.targets).numpy()  # indices follow the time order here
    assert ((steps >= 0) & (steps < 3)).all() and steps.max() > 0
