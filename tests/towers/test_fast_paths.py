"""The training step's fast paths equal the straightforward code they replace: packed windows
against per-chunk stacking, seen-item pairs against a (Q, C) mask, one catalogue pass against the
per-batch item lookups (EmbeddingBag's content bags against `catalogue`'s sparse products). The
references below are the code the fast paths replaced."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.towers.conftest import MAX_LEN
from towers.data import (
    PrefixChunk,
    UserBatch,
    Vocab,
    Windows,
    _context,
    _padded,
    _profile,
    batch_groups,
    catalogue_content,
    elapsed_bucket,
    frame_windows,
    gap_buckets,
    seen_columns,
)
from towers.model import TowerConfig, TwoTower


def per_chunk_batch(vocab: Vocab, chunks: list[PrefixChunk]) -> UserBatch:
    """The user side of `chunks` stacked one chunk at a time."""
    sizes = np.array([len(c.items) for c in chunks])
    index = vocab.item_index(np.concatenate([c.items for c in chunks]))
    seq = _padded(np.split(index, np.cumsum(sizes)[:-1]), sizes.max())
    gaps = _padded([gap_buckets(c.item_seconds) for c in chunks], sizes.max())
    lengths = torch.from_numpy(sizes)
    age, profile = _profile(vocab, pd.Series([c.age for c in chunks], dtype="object"),
                            pd.Series([c.profile_tokens for c in chunks], dtype="object"))
    seconds = np.concatenate([c.seconds for c in chunks])
    hour, weekday = _context(seconds)
    counts = [len(c.targets) for c in chunks]
    pos = np.concatenate([c.query_pos for c in chunks])
    last = np.concatenate([c.item_seconds[np.maximum(c.query_pos, 0)] if len(c.items)
                           else np.zeros(len(c.targets), np.int64) for c in chunks])
    return UserBatch(
        seq=seq, seq_mask=torch.arange(seq.shape[1]) < lengths[:, None], seq_gap=gaps,
        user=torch.from_numpy(vocab.user_index(np.array([c.user_id for c in chunks]))),
        age=age, profile=profile,
        query_row=torch.repeat_interleave(torch.arange(len(chunks)), torch.tensor(counts)),
        query_pos=torch.from_numpy(pos), hour=hour, weekday=weekday,
        query_gap=torch.from_numpy(np.where(pos >= 0, elapsed_bucket(seconds - last), 0)))


def seen_mask(users: UserBatch, columns: torch.Tensor, n_items: int) -> torch.Tensor:
    """(Q, C) True where candidate column c is an item query q has already seen."""
    C = len(columns)
    table = torch.full((n_items + 1,), C, dtype=torch.int64)
    table[columns] = torch.arange(C)
    seen = users.seq[users.query_row]
    valid = torch.arange(seen.shape[1]) <= users.query_pos[:, None]
    index = table[torch.where(valid, seen, 0)]
    mask = torch.zeros(len(seen), C + 1, dtype=torch.bool)
    return mask.scatter_(1, index, True)[:, :C]


@pytest.fixture(scope="module", params=[0, MAX_LEN // 2], ids=["exact", "strided"])
def setup(ml, small_frame, request):
    vocab = Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)
    chunks = frame_windows(small_frame, MAX_LEN, request.param)
    return vocab, chunks, Windows.build(vocab, chunks)


def test_a_packed_batch_equals_stacking_its_chunks_one_by_one(setup):
    vocab, chunks, windows = setup
    groups = batch_groups(windows, batch_size=64, rng=np.random.default_rng(0))
    first = [i for i, c in enumerate(chunks) if (c.query_pos < 0).any()]
    assert first and len(groups) > 20  # users' first events (no history) are in the slice
    for index in [*groups, np.array(first[:3]), np.arange(len(chunks))]:
        users, targets, seconds = windows.batch(index)
        expected = per_chunk_batch(vocab, [chunks[i] for i in index])
        for field in dataclasses.fields(UserBatch):
            got, want = getattr(users, field.name), getattr(expected, field.name)
            assert got.dtype == want.dtype, field.name
            torch.testing.assert_close(got, want, msg=field.name)
        np.testing.assert_array_equal(
            targets.numpy(), vocab.item_index(np.concatenate([chunks[i].targets for i in index])))
        np.testing.assert_array_equal(seconds, np.concatenate([chunks[i].seconds for i in index]))


def test_a_query_asked_between_its_events_knows_only_a_time_between_them(setup):
    vocab, chunks, windows = setup
    index = np.arange(len(chunks))
    at_event, targets, seconds = windows.batch(index)
    between, drawn_targets, drawn_seconds = windows.batch(index, np.random.default_rng(0))
    for field in dataclasses.fields(UserBatch):  # only the query's time differs
        if field.name not in {"hour", "weekday", "query_gap"}:
            torch.testing.assert_close(getattr(between, field.name), getattr(at_event, field.name))
    torch.testing.assert_close(drawn_targets, targets)
    np.testing.assert_array_equal(drawn_seconds, seconds)
    last = np.concatenate([c.item_seconds[np.maximum(c.query_pos, 0)] if len(c.items)
                           else c.seconds for c in chunks])
    history = np.concatenate([c.query_pos for c in chunks]) >= 0
    gap, event_gap = between.query_gap.numpy(), at_event.query_gap.numpy()
    assert (gap[~history] == 0).all() and (between.hour[~history] == at_event.hour[~history]).all()
    assert (gap[history] >= elapsed_bucket(np.zeros(1))[0]).all()  # at or after the last event,
    assert (gap <= event_gap).all()  # at or before its own
    same = seconds == last  # an event in the same second as the last one: asked at that second
    assert (between.hour[same] == at_event.hour[same]).all() and (gap[same] == event_gap[same]).all()
    assert (gap < event_gap).mean() > 0.2
    half, _, _ = windows.batch(index, np.random.default_rng(0), 0.5)  # the rest at their events
    assert 0.3 < (half.query_gap.numpy() < event_gap).mean() / (gap < event_gap).mean() < 0.7


def test_a_later_target_is_the_item_of_one_of_the_users_next_rows(setup):
    vocab, chunks, windows = setup
    index = np.arange(len(chunks))
    users, targets, seconds = windows.batch(index)
    rows = pd.DataFrame({"user": np.repeat([c.user_id for c in chunks],
                                           [len(c.targets) for c in chunks]),
                         "seconds": seconds, "row": np.concatenate([c.rows for c in chunks]),
                         "target": targets.numpy()})
    timeline = rows.sort_values(["user", "seconds", "row"])
    nexts = {user: group["target"].to_numpy() for user, group in timeline.groupby("user")}
    place = timeline.groupby("user").cumcount().reindex(rows.index).to_numpy()
    for horizon in (1, 5):
        later, drawn, drawn_seconds = windows.batch(index, np.random.default_rng(0), between=0,
                                                    later=1.0, horizon=horizon)
        for field in dataclasses.fields(UserBatch):  # the query is asked as it was
            torch.testing.assert_close(getattr(later, field.name), getattr(users, field.name))
        np.testing.assert_array_equal(drawn_seconds, seconds)
        allowed = [nexts[u][p:p + horizon] for u, p in zip(rows["user"], place, strict=True)]
        assert all(t in a for t, a in zip(drawn.numpy(), allowed, strict=True))
        changed = (drawn != targets).float().mean().item()
        assert changed == 0 if horizon == 1 else changed > 0.5
    _, half, _ = windows.batch(index, np.random.default_rng(0), between=0, later=0.5, horizon=5)
    assert 0.3 < (half != targets).float().mean().item() / changed < 0.7
    rng, expected = np.random.default_rng(0), np.random.default_rng(0)
    windows.batch(index, rng, between=0.5, later=0)  # at 0 the stream is what it was before
    expected.random(len(targets)), expected.random(len(targets))  # the between draws only
    assert rng.random() == expected.random()


def test_batch_groups_hold_every_window_once_in_batches_of_about_batch_size(setup):
    _, chunks, windows = setup
    groups = batch_groups(windows, batch_size=64, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(chunks)))
    rows = np.array([windows.rows()[g].sum() for g in groups])
    assert abs(np.median(rows) - 64) <= 4 and rows.max() < 2 * 64


@pytest.mark.parametrize("columns", ["all", "some"])
def test_seen_pairs_mask_what_the_seen_mask_did_but_the_label(setup, columns):
    vocab, chunks, windows = setup
    n_items = len(vocab.item_ids)
    users, targets, _ = windows.batch(np.arange(len(chunks)))
    candidates = torch.arange(1, n_items + 1) if columns == "all" else torch.unique(targets)
    labels = torch.searchsorted(candidates, targets)
    rows, cols = seen_columns(users, candidates, n_items, labels)
    expected = seen_mask(users, candidates, n_items)
    expected[torch.arange(len(labels)), labels] = False
    mask = torch.zeros_like(expected)
    mask[rows, cols] = True
    assert expected.sum() > 1000
    torch.testing.assert_close(mask, expected)


def test_one_catalogue_pass_gives_the_loss_and_gradients_of_per_batch_lookups(ml, setup):
    vocab, chunks, windows = setup
    n_items = len(vocab.item_ids)
    torch.manual_seed(0)
    model = TwoTower(TowerConfig(dim=16, max_len=MAX_LEN), vocab,
                     catalogue_content(vocab, ml.items)).eval()  # no dropout: equal draws
    users, targets, _ = windows.batch(np.arange(200))
    labels, rows = targets - 1, torch.arange(len(targets))
    candidates = torch.arange(1, n_items + 1)

    def old() -> torch.Tensor:
        u = model.users(users)
        logits = model.item_tower.logits(u, candidates, None, None, 0.1)
        mask = seen_mask(users, candidates, n_items)
        mask[rows, labels] = False
        return -logits.masked_fill(mask, -torch.inf).log_softmax(dim=-1)[rows, labels].sum()

    def new() -> torch.Tensor:
        items = model.item_tower
        table = items.catalogue()
        logits = items.logits(model.users(users, table), candidates, None, None, 0.1, table[1:])
        logits.index_put_(seen_columns(users, candidates, n_items, labels),
                          torch.tensor(-torch.inf))
        return F.cross_entropy(logits, labels, reduction="sum")

    grads = []
    for loss in (old, new):
        model.zero_grad()
        total = loss()
        total.backward()
        grads.append((total.detach(), [p.grad.clone() for p in model.parameters()
                                       if p.grad is not None]))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    assert len(grads[1][1]) == len(grads[0][1])
    for new_grad, old_grad in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(new_grad, old_grad, atol=1e-4, rtol=1e-3)  # sum order


def test_id_lookups_search_arrays_the_frozen_vocabulary_builds_once(ml, small_frame):
    vocab = Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)
    known, unknown = vocab.item_ids[3], max(vocab.item_ids) + 1
    np.testing.assert_array_equal(vocab.item_index(np.array([known, unknown, known])), [4, 0, 4])
    np.testing.assert_array_equal(vocab.user_index(np.array([vocab.user_ids[0], -1])), [1, 0])
    assert vocab._item_array is vocab._item_array  # built once, not at every lookup
    with pytest.raises(dataclasses.FrozenInstanceError):  # so the arrays cannot go stale
        vocab.item_ids = []
    assert Vocab(**vocab.to_dict()).item_index(np.array([known]))[0] == 4  # as an artifact loads it
