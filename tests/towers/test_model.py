"""Towers: output shapes and norms, cold items, the artifact round trip, configuration errors."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.towers.conftest import MAX_LEN
from towers.artifact import Artifact, upgrade_v1
from towers.data import Vocab, Windows, catalogue_content, encode_users, frame_windows
from towers.model import (
    Block,
    CausalTransformer,
    Dropout,
    MeanBag,
    TowerConfig,
    TwoTower,
    keep_mask,
)
from towers.train import TrainConfig, fit


@pytest.fixture(scope="module")
def slice_ds(ml, small_frame):
    return ml, small_frame[small_frame["user_id"] <= 40].reset_index(drop=True)


@pytest.fixture(scope="module")
def artifact(slice_ds) -> Artifact:
    ds, frame = slice_ds
    return fit(frame, ds.items, tower=TowerConfig(dim=16, max_len=MAX_LEN, use_user_id=True),
               train=TrainConfig(epochs=1, batch_size=256))


def test_user_and_item_vectors_have_config_dim_and_unit_norm(artifact, slice_ds):
    ds, frame = slice_ds
    users = artifact.embed_users(frame.head(50))
    items = artifact.embed_items(ds.items)
    assert users.shape == (50, 16) and items.shape == (len(ds.items), 16)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)


def test_user_without_history_or_profile_still_gets_a_unit_vector(artifact):
    frame = pd.DataFrame({"user_id": [10**9], "event_timestamp": pd.to_datetime(
        [0], unit="s", utc=True), "age": pd.array([pd.NA], dtype="Int64"),
        "profile_tokens": [[]], "recent_item_ids": [[]], "recent_timestamps": [[]]})
    vector = artifact.embed_users(frame)
    assert np.isfinite(vector).all()
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-5)


def test_user_id_dropout_trains_the_path_an_unknown_user_takes(artifact, slice_ds):
    """A training row whose ID is dropped is encoded exactly as a user the model does not know."""
    _, frame = slice_ds
    model = copy.deepcopy(artifact.model)
    model.user_tower.id_dropout = 0.5
    for module in model.modules():  # every other random draw off: only the ID may differ
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.item_tower.id_dropout = 0.0
    batch = encode_users(model.vocab, frame.head(60), MAX_LEN)
    assert (batch.user > 0).all()
    with torch.no_grad():
        model.eval()
        known = model.users(batch)
        unknown = model.users(dataclasses.replace(batch, user=torch.zeros_like(batch.user)))
        model.train()
        torch.manual_seed(0)
        trained = model.users(batch)
    as_known = torch.isclose(trained, known, atol=1e-6).all(dim=1)
    as_unknown = torch.isclose(trained, unknown, atol=1e-6).all(dim=1)
    assert (as_known | as_unknown).all()
    assert as_known.any() and as_unknown.any() and not (as_known & as_unknown).any()


def test_cold_item_gets_finite_content_dependent_embedding(artifact, slice_ds):
    ds, _ = slice_ds
    cold = pd.DataFrame({
        "item_id": [10**7, 10**7 + 1, 10**7 + 2],
        "title": pd.array(["Space Robots (1997)", "Space Robots (1997)", "Quiet Romance (1950)"],
                          dtype="string"),
        "categories": [["Sci-Fi", "Action"], ["Sci-Fi", "Action"], ["Romance", "Drama"]],
        "price": [9.99, 9.99, 3.5],
        "created_at": pd.to_datetime(["1997-05-01", "1997-05-01", "1950-01-01"], utc=True)})
    vectors = artifact.embed_items(cold)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # the id alone adds nothing
    assert np.abs(vectors[0] - vectors[2]).max() > 1e-3  # content changes the vector
    known = artifact.embed_items(ds.items.head(1))
    assert np.abs(known[0] - vectors[0]).max() > 1e-3


def test_saved_artifact_reloads_and_gives_identical_embeddings(artifact, slice_ds, tmp_path):
    ds, frame = slice_ds
    frame = frame.head(30)
    loaded = Artifact.load(artifact.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.embed_users(frame), artifact.embed_users(frame))
    np.testing.assert_array_equal(loaded.embed_items(ds.items), artifact.embed_items(ds.items))
    assert loaded.config == artifact.config
    assert loaded.fingerprint == artifact.fingerprint and len(loaded.fingerprint) == 64


def test_a_version_1_artifact_loads_with_torchs_encoder_names(artifact, slice_ds, tmp_path):
    """Version 1 saved torch's nn.TransformerEncoder weights; they load into the own blocks."""
    ds, frame = slice_ds
    path = artifact.save(tmp_path / "v1")
    v1_names = {".blocks.": ".blocks.layers.", ".qkv.weight": ".self_attn.in_proj_weight",
                ".qkv.bias": ".self_attn.in_proj_bias", ".proj.": ".self_attn.out_proj.",
                ".mlp.0.": ".linear1.", ".mlp.3.": ".linear2."}
    state = {}
    for name, value in torch.load(path / "weights.pt").items():
        if ".encoder.blocks." in name:
            for new, old in v1_names.items():
                name = name.replace(new, old)
        state[name] = value
    assert "user_tower.encoder.blocks.layers.1.self_attn.out_proj.weight" in state
    torch.save(state, path / "weights.pt")
    meta = json.loads((path / "artifact.json").read_text())
    (path / "artifact.json").write_text(json.dumps({**meta, "version": 1}))
    loaded = Artifact.load(path)
    np.testing.assert_array_equal(loaded.embed_users(frame.head(30)),
                                  artifact.embed_users(frame.head(30)))
    (path / "artifact.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="artifact version 99"):
        Artifact.load(path)


def test_loading_a_folder_without_artifact_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="artifact.json"):
        Artifact.load(tmp_path)


def test_config_rejects_unknown_encoder_by_name():
    with pytest.raises(ValueError, match="encoder"):
        TowerConfig(encoder="lstm")
    with pytest.raises(ValueError, match="layers"):
        TowerConfig(layers=0)


def _reference(encoder: CausalTransformer, heads: int) -> nn.TransformerEncoder:
    """torch's pre-norm encoder (the version-1 model) with `encoder`'s weights, randomised first."""
    with torch.no_grad():
        for param in encoder.blocks.parameters():  # no zero biases or unit norms to hide a mix-up
            param.normal_(0, 0.3)
    layer = nn.TransformerEncoderLayer(16, heads, dim_feedforward=16, dropout=0.2,
                                       activation="gelu", batch_first=True, norm_first=True)
    reference = nn.TransformerEncoder(layer, len(encoder.blocks), enable_nested_tensor=False)
    mine = encoder.blocks.state_dict()
    prefix = "user_tower.encoder.blocks."
    reference.load_state_dict({name: mine[upgrade_v1(prefix + name).removeprefix(prefix)]
                               for name in reference.state_dict()})
    return reference


@pytest.mark.parametrize("heads", [1, 2])
def test_own_blocks_equal_torchs_transformer_encoder_and_the_query_path_its_full_pass(heads):
    """Version-1 weights (renamed as `Artifact.load` does) give torch's own encoder's outputs,
    in the full causal pass and at the query positions only, in eval and training mode."""
    torch.manual_seed(0)
    encoder = CausalTransformer(TowerConfig(dim=16, max_len=12, heads=heads, layers=3))
    reference = _reference(encoder, heads)
    tokens = torch.randn(5, 12, 16)
    rows, pos = torch.tensor([0, 0, 1, 2, 3, 4, 4, 4]), torch.tensor([0, 11, 5, 3, 11, 1, 2, 7])
    causal = nn.Transformer.generate_square_subsequent_mask(12)

    def check() -> None:
        x = tokens + encoder.positions.weight
        expected = reference(x, mask=causal, is_causal=True)  # (B, L, D)
        full = x
        for block in encoder.blocks:
            full = block(full)
        torch.testing.assert_close(full, expected)
        torch.testing.assert_close(encoder(tokens, None, rows, pos),
                                   encoder.norm(expected)[rows, pos])

    reference.eval(), encoder.eval()
    with torch.no_grad():
        check()
    for module in [*encoder.modules(), *reference.modules()]:  # training mode, no randomness
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    for block in encoder.blocks:
        block.attn_dropout = 0.0
    reference.train(), encoder.train()
    check()


def test_a_seed_gives_the_blocks_the_weights_torchs_encoder_had():
    torch.manual_seed(0)
    nn.Embedding(12, 16)  # the positions come first in CausalTransformer
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=16, batch_first=True, norm_first=True)
    reference = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).state_dict()
    torch.manual_seed(0)
    mine = CausalTransformer(TowerConfig(dim=16, max_len=12, heads=2, layers=3)).blocks
    prefix = "user_tower.encoder.blocks."
    expected = {upgrade_v1(prefix + name).removeprefix(prefix): value
                for name, value in reference.items()}
    assert expected.keys() == mine.state_dict().keys()
    for name, value in mine.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


def test_block_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    block = Block(TowerConfig(dim=16, dropout=0.5))
    x = torch.randn(4, 10, 16)
    with torch.no_grad():
        assert not torch.equal(block.train()(x), block(x))
        torch.testing.assert_close(block.eval()(x), block(x))


def test_dropout_zeroes_a_share_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x, dropout = torch.ones(200_000), Dropout(0.2)
    out = dropout(x)
    assert abs((out == 0).float().mean().item() - 0.2) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.01
    assert torch.equal(dropout.eval()(x), x)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.8])
def test_a_keep_mask_keeps_its_share_on_each_16_bit_lane(share):
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([3, 50_001]), share)  # not a multiple of the four per draw
    assert mask.shape == (3, 50_001) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - share) < 0.005
    for lane in range(4):
        assert abs(mask.flatten()[lane::4].float().mean().item() - share) < 0.01, lane


def test_a_keep_mask_of_share_0_keeps_nothing_and_of_share_1_everything():
    assert not keep_mask(torch.Size([1000]), 0.0).any()
    assert keep_mask(torch.Size([1000]), 1.0).all()


@pytest.mark.parametrize("attention_dropout", [0.0, 0.5])
def test_attention_dropout_alone_changes_training_outputs_when_set(attention_dropout):
    torch.manual_seed(0)
    block = Block(TowerConfig(dim=16, dropout=0.0, attention_dropout=attention_dropout))
    x = torch.randn(4, 10, 16)
    with torch.no_grad():
        trained, evaluated = block.train()(x), block.eval()(x)
    assert torch.allclose(trained, evaluated) == (attention_dropout == 0)


def test_mean_bags_equal_embedding_bag_in_value_and_gradient():
    torch.manual_seed(0)
    tokens = torch.randint(0, 30, (40, 6))
    tokens[3] = 0  # all padding: a zero vector
    tokens[5] = torch.tensor([7, 7, 7, 2, 0, 0])  # a repeated token counts each time
    reference = nn.EmbeddingBag(30, 8, mode="mean", padding_idx=0)
    table = reference.weight.detach().clone().requires_grad_()
    upstream = torch.randn(40, 8)
    (reference(tokens) * upstream).sum().backward()
    bags = MeanBag(tokens, 30)(table)
    (bags * upstream).sum().backward()
    torch.testing.assert_close(bags, reference(tokens))
    torch.testing.assert_close(table.grad, reference.weight.grad)
    assert torch.equal(bags[3], torch.zeros(8))


def test_the_catalogue_follows_content_loaded_after_its_first_use(artifact):
    items = artifact.model.item_tower
    everything = torch.arange(len(items.known_price))
    with torch.no_grad():
        items.catalogue()
        items.load_state_dict({**items.state_dict(),
                               "known_title": items.known_title.roll(1, dims=0),
                               "known_categories": items.known_categories.roll(1, dims=0)})
        torch.testing.assert_close(items.catalogue(), items.represent(items.known(everything)))


@pytest.mark.parametrize("encoder", ["transformer", "mean", "gru"])
def test_the_user_towers_gradients_repeat_exactly_on_two_threads(ml, small_frame, encoder):
    """Indexing's gradient adds up on several threads in no fixed order; a fit must repeat."""
    vocab = Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)
    chunks = frame_windows(small_frame, MAX_LEN)
    users, _, _ = Windows.build(vocab, chunks).batch(np.arange(len(chunks)))
    order = torch.randperm(len(users.query_row), generator=torch.Generator().manual_seed(0))
    users = dataclasses.replace(users, **{name: getattr(users, name)[order] for name in
                                          ("query_row", "query_pos", "hour", "weekday", "query_gap")})
    model = TwoTower(TowerConfig(max_len=MAX_LEN, encoder=encoder), vocab,
                     catalogue_content(vocab, ml.items)).eval()  # no dropout: equal draws
    upstream = torch.randn(len(order), model.config.dim, generator=torch.Generator().manual_seed(1))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        (model.users(users) * upstream).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = gradients(), gradients()
    finally:
        torch.set_num_threads(before)
    assert "user_tower.users.weight" in first
    for name, gradient in first.items():
        assert torch.equal(gradient, second[name]), name
