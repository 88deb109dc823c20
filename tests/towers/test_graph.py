"""The GraphSAGE item encoder: no edge at or after an example's time reaches it, served vectors
equal the training-time ones for the same graph, and items without edges keep their content vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.towers.conftest import MAX_LEN
from towers import graph
from towers.artifact import Artifact
from towers.data import Vocab, Windows, catalogue_content, frame_windows, unix_seconds
from towers.encoders import item_encoder_inputs
from towers.model import TowerConfig, TwoTower

SNAPSHOTS = 4


@pytest.fixture(scope="module")
def vocab(ml, small_frame):
    return Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)


def sage_model(config: TowerConfig, vocab: Vocab, items, edges: torch.Tensor,
               seed: int = 0) -> TwoTower:
    """A GraphSAGE two-tower over `edges`, its weights a function of `seed` (eval mode)."""
    torch.manual_seed(seed)
    model = TwoTower(config, vocab, catalogue_content(vocab, items) | {"graph": edges}).eval()
    with torch.no_grad():  # trained weights are not near zero: make the neighbourhood matter
        for conv in (model.item_tower.encoder.to_users, model.item_tower.encoder.to_items):
            conv.lin_l.weight.normal_(std=0.5)
    return model


@pytest.fixture(scope="module")
def config():
    return TowerConfig(dim=16, max_len=MAX_LEN, item_encoder="sage", graph_snapshots=SNAPSHOTS)


@pytest.fixture(scope="module")
def edges(config, vocab, small_frame):
    return item_encoder_inputs(config, vocab, small_frame)["graph"]  # (3, E)


def test_every_training_row_reads_only_edges_strictly_before_its_time(vocab, small_frame, edges):
    """The queries of the training batches (as `fit` draws them) against the snapshots they read."""
    windows = Windows.build(vocab, frame_windows(small_frame, MAX_LEN))
    _, targets, seconds = windows.batch(np.arange(len(windows)))
    times = edges[graph.SECOND].numpy()
    visible = graph.visible_edges(times, SNAPSHOTS, seconds)  # (Q,)
    assert len(seconds) == len(small_frame) and (visible > 0).mean() > 0.5  # most rows read a graph
    last = times[np.maximum(visible - 1, 0)]
    assert (last[visible > 0] < seconds[visible > 0]).all()
    # Nontrivial: the snapshot cuts are edge times, so edges at exactly a query's time exist.
    assert np.isin(seconds, graph.snapshot_cuts(times, SNAPSHOTS)).sum() > 0


def test_training_logits_do_not_change_when_edges_at_or_after_the_query_time_do(
        config, vocab, ml, edges):
    """Rewire every edge at or after time t (keeping the times, hence the cuts): queries at t and
    before score exactly as before, later ones do not (so a leak would show)."""
    times = edges[graph.SECOND].numpy()
    cuts = graph.snapshot_cuts(times, SNAPSHOTS)
    t = int(cuts[1])
    late = times >= t
    rewired = edges.clone()
    generator = torch.Generator().manual_seed(1)
    rewired[graph.USER, late] = torch.randint(1, len(vocab.user_ids) + 1, (int(late.sum()),),
                                              generator=generator)
    rewired[graph.ITEM, late] = torch.randint(1, len(vocab.item_ids) + 1, (int(late.sum()),),
                                              generator=generator)
    seconds = np.array([int(times[0]), int(cuts[0]), t - 1, t, t, int(cuts[2]), int(times[-1])])
    users = torch.nn.functional.normalize(torch.randn(len(seconds), config.dim), dim=-1)
    candidates = torch.arange(1, len(vocab.item_ids) + 1)
    with torch.no_grad():
        before, after = (sage_model(config, vocab, ml.items, e).item_tower.logits(
            users, candidates, None, None, 1.0, seconds=seconds) for e in (edges, rewired))
    early = torch.from_numpy(seconds <= t)
    torch.testing.assert_close(before[early], after[early], rtol=0, atol=0)
    assert not torch.allclose(before[~early], after[~early])


def test_served_item_vectors_equal_the_training_time_ones_for_the_same_graph(
        config, vocab, ml, edges, tmp_path):
    """Each snapshot's training-time scores equal scoring the vectors served (saved, loaded and
    embedded as an index build does) by a model holding exactly that snapshot's edges."""
    times = edges[graph.SECOND].numpy()
    cuts = graph.snapshot_cuts(times, SNAPSHOTS)
    sizes = graph.snapshot_sizes(times, cuts)
    trained = sage_model(config, vocab, ml.items, edges)
    users = torch.nn.functional.normalize(torch.randn(3, config.dim), dim=-1)
    candidates = torch.arange(1, len(vocab.item_ids) + 1)
    catalogue = ml.items.set_index("item_id").loc[vocab.item_ids].reset_index()
    for snapshot, size in enumerate(sizes):
        at = np.full(3, cuts[snapshot - 1] if snapshot else times[0] - 1)
        with torch.no_grad():
            training = trained.item_tower.logits(users, candidates, None, None, 0.1, seconds=at)
        served_model = sage_model(config, vocab, ml.items, edges[:, :size].clone())
        served_model.load_state_dict(trained.state_dict() | {
            "item_tower.known_graph": edges[:, :size]})
        path = Artifact(served_model).save(tmp_path / str(snapshot))
        served = torch.from_numpy(Artifact.load(path).embed_items(catalogue))  # (N, D)
        torch.testing.assert_close(training, users @ served.T / 0.1, rtol=1e-5, atol=1e-5)


def test_items_without_edges_keep_their_content_vector(config, vocab, ml, edges):
    """A catalogue item never interacted with, and a new one, embed as without the encoder."""
    model = sage_model(config, vocab, ml.items, edges)
    plain = TowerConfig(**config.model_dump() | {"item_encoder": "content"})
    content = TwoTower(plain, vocab, catalogue_content(vocab, ml.items)).eval()
    content.load_state_dict({k: v for k, v in model.state_dict().items()
                             if not k.startswith("item_tower.encoder") and "graph" not in k})
    unseen = ml.items[~ml.items["item_id"].isin(vocab.item_ids)].head(20)
    assert len(unseen) == 20
    np.testing.assert_array_equal(Artifact(model).embed_items(unseen),
                                  Artifact(content).embed_items(unseen))
    seen = ml.items[ml.items["item_id"].isin(vocab.item_ids)].head(20)
    assert not np.allclose(Artifact(model).embed_items(seen), Artifact(content).embed_items(seen))


def test_edges_are_the_frames_events_in_time_order(vocab, small_frame, edges):
    seconds = unix_seconds(small_frame["event_timestamp"])
    assert edges.shape == (3, len(small_frame))
    assert (np.diff(edges[graph.SECOND].numpy()) >= 0).all()
    pairs = sorted(zip(vocab.user_index(small_frame["user_id"].to_numpy()).tolist(),
                       vocab.item_index(small_frame["item_id"].to_numpy()).tolist(),
                       seconds.tolist(), strict=True))
    assert sorted(map(tuple, edges.T.tolist())) == pairs


def test_unknown_encoders_are_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"item_encoder 'gat' is not registered.*'sage'"):
        TowerConfig(item_encoder="gat")
    with pytest.raises(ValueError, match=r"encoder 'lstm' is not registered.*'transformer'"):
        TowerConfig(encoder="lstm")
