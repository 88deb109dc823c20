"""Item popularity as an item-tower input: Feast's point-in-time counts, scoring each training
example on its own day, and serving as of the last training day."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.towers.conftest import MAX_LEN
from towers.artifact import Artifact
from towers.data import (
    DAY,
    Popularity,
    Vocab,
    batch_chunks,
    catalogue_content,
    frame_windows,
    unix_seconds,
)
from towers.model import TowerConfig, TwoTower
from towers.train import TrainConfig, fit

COUNTS = ["count_1d", "count_7d", "count_30d"]  # Feast's item_popularity view, in WINDOWS_DAYS order


def test_counts_equal_feasts_point_in_time_item_popularity_on_every_row(small_frame):
    items = small_frame["item_id"].to_numpy()
    days = unix_seconds(small_frame["event_timestamp"]) // DAY
    popularity = Popularity(items, unix_seconds(small_frame["event_timestamp"]))
    counts = np.zeros((len(small_frame), len(COUNTS)), dtype=np.int64)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        counts[rows] = popularity.counts(items[rows], [day])[0]
    feast = small_frame[COUNTS].to_numpy()
    assert (feast[:, 1] > 0).mean() > 0.2 and (feast[:, 0] == 0).any()  # nontrivial, both cases
    np.testing.assert_array_equal(counts, feast)


def test_buckets_are_zero_for_no_interactions_then_log2_and_capped():
    popularity = Popularity(np.repeat([1, 2, 3], [1, 5, 40_000]), np.zeros(40_006, dtype=np.int64))
    buckets = popularity.buckets(np.array([1, 2, 3, 4]), np.array([0, 1]))  # (K, C, W)
    assert buckets[0].eq(0).all()  # on the events' own day nothing is counted yet
    assert buckets[1, :, 0].tolist() == [1, 3, 15, 0]  # 1 -> 1, 5 -> 1 + 2, capped, none -> 0
    days = np.array([1, 0, 1])  # the full-softmax path caches each day's catalogue
    np.testing.assert_array_equal(popularity.catalogue(days, 4), popularity.buckets(range(5), days))


@pytest.fixture(scope="module")
def model_and_frame(ml, small_frame):
    frame = small_frame[small_frame["user_id"] <= 20].reset_index(drop=True)
    vocab = Vocab.build(frame, ml.items, title_buckets=64, profile_buckets=32)
    torch.manual_seed(0)
    model = TwoTower(TowerConfig(dim=16, max_len=MAX_LEN, item_popularity=True), vocab,
                     catalogue_content(vocab, ml.items)).eval()
    with torch.no_grad():  # a trained table is not near zero: make popularity matter
        model.item_tower.popularity.weight.normal_(std=0.5)
    popularity = Popularity(vocab.item_index(frame["item_id"].to_numpy()),
                            unix_seconds(frame["event_timestamp"]))
    return model, frame, popularity


def test_each_query_is_scored_against_the_catalogue_normalised_as_of_its_own_day(model_and_frame):
    model, frame, popularity = model_and_frame
    chunks = frame_windows(frame, MAX_LEN)[::3][:20]  # several users, several days
    candidates = torch.arange(1, len(model.vocab.item_ids) + 1)
    days, day = np.unique(np.concatenate([c.seconds for c in chunks]) // DAY, return_inverse=True)
    assert len(days) > 2
    buckets = popularity.buckets(candidates.numpy(), days)  # (K, C, W)
    items = model.item_tower
    with torch.no_grad():
        users = model.users(batch_chunks(model.vocab, chunks))  # (Q, D)
        fast = items.logits(users, candidates, buckets, torch.from_numpy(day), 0.1)
        base = items.represent(items.known(candidates))  # (C, D)
        slow = torch.stack([users[q] @ F.normalize(base + items.trend(buckets[k]), dim=-1).T
                            for q, k in enumerate(day)]) / 0.1  # (Q, C)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-5)
    assert (buckets[0] != buckets[-1]).any()  # the days really differ


def test_served_item_vectors_score_like_training_on_the_last_training_day(ml, small_frame):
    frame = small_frame[small_frame["user_id"] <= 15].reset_index(drop=True)
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN, item_popularity=True),
                   train=TrainConfig(epochs=1, batch_size=64))
    vocab, items = artifact.model.vocab, artifact.model.item_tower
    popularity = Popularity(vocab.item_index(frame["item_id"].to_numpy()),
                            unix_seconds(frame["event_timestamp"]))
    assert popularity.last_day == unix_seconds(frame["event_timestamp"]).max() // DAY
    catalogue = ml.items.set_index("item_id").loc[vocab.item_ids].reset_index()
    users = F.normalize(torch.randn(5, 16), dim=-1)
    candidates = torch.arange(1, len(vocab.item_ids) + 1)
    buckets = popularity.buckets(candidates.numpy(), [popularity.last_day])  # (1, C, W)
    assert buckets.sum() > 0
    with torch.no_grad():
        trained = items.logits(users, candidates, buckets, torch.zeros(5, dtype=torch.int64), 1.0)
    served = users @ torch.from_numpy(artifact.embed_items(catalogue)).T  # (5, C)
    torch.testing.assert_close(served, trained, atol=1e-5, rtol=1e-5)


def test_artifact_saved_before_popularity_and_query_gap_existed_still_loads(ml, small_frame, tmp_path):
    frame = small_frame[small_frame["user_id"] <= 10].reset_index(drop=True)
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN, dropout=0.3,
                                                      item_popularity=False, use_query_gap=False),
                   train=TrainConfig(epochs=1, batch_size=64))
    path = artifact.save(tmp_path / "old")
    meta = json.loads((path / "artifact.json").read_text())
    for key in ("item_popularity", "use_query_gap", "attention_dropout"):  # the layout written
        del meta["tower_config"][key]                                       # before these settings
    (path / "artifact.json").write_text(json.dumps(meta))
    loaded = Artifact.load(path)
    assert not loaded.config.item_popularity and not loaded.config.use_query_gap
    assert loaded.config.attention_dropout == 0.3  # then tied to `dropout`
    np.testing.assert_array_equal(loaded.embed_items(ml.items), artifact.embed_items(ml.items))
