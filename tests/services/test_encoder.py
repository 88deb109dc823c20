"""The served user tower: ONNX Runtime per history width, equal to the towers' own embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from services.encoder import UserEncoder
from towers.artifact import Artifact
from towers.data import catalogue_content
from towers.model import TowerConfig, TwoTower


def _frame(history: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [1], "event_timestamp": [pd.Timestamp("2025-06-01 12:00", tz="UTC")],
        "age": pd.array([31], dtype="Int64"), "profile_tokens": [["country=DE"]],
        "recent_item_ids": [history],
        "recent_timestamps": [[1_740_000_000 + 600 * i for i in range(len(history))]]})


@pytest.mark.parametrize("length", [0, 1, 16, 17, 50, 199, 260])
def test_served_user_tower_equals_the_towers_embedding(service, length):
    items = service.dataset.items["item_id"].to_numpy()
    frame = _frame(np.resize(items, length).tolist())
    served = UserEncoder(service.artifact)(frame)
    np.testing.assert_allclose(served, service.artifact.embed_users(frame)[0], atol=1e-5)


@pytest.mark.parametrize(("length", "age"), [(0, None), (5, 31), (50, None), (120, 45)])
def test_user_as_plain_columns_encodes_like_its_feast_frame(service, length, age):
    items = service.dataset.items["item_id"].to_numpy()
    frame = _frame(np.resize(items, length).tolist())
    frame["age"] = pd.array([age], dtype="Int64")
    columns = {"user_id": [1], "event_timestamp": [int(frame["event_timestamp"][0].timestamp())],
               "age": [age], "profile_tokens": [("country=DE",)],
               "recent_item_ids": frame["recent_item_ids"].tolist(),
               "recent_timestamps": frame["recent_timestamps"].tolist()}
    served = UserEncoder(service.artifact)(columns)
    np.testing.assert_allclose(served, service.artifact.embed_users(frame)[0], atol=1e-5)


@pytest.mark.parametrize(("kind", "max_len"), [("mean", 50), ("gru", 50), ("transformer", 300)])
def test_every_encoder_is_served_by_onnx_runtime_equal_to_its_embedding(service, caplog, kind,
                                                                          max_len):
    vocab = service.artifact.model.vocab
    torch.manual_seed(0)
    artifact = Artifact(TwoTower(TowerConfig(dim=16, max_len=max_len, encoder=kind), vocab,
                                 catalogue_content(vocab, service.dataset.items)).eval())
    with caplog.at_level("WARNING", logger="services.encoder"):
        served = UserEncoder(artifact)
    assert caplog.text == ""  # exported, not the PyTorch fallback
    items = service.dataset.items["item_id"].to_numpy()
    for length in (0, 3, max_len):  # 300: longer than the widest default bucket
        frame = _frame(np.resize(items, length).tolist())
        np.testing.assert_allclose(served(frame), artifact.embed_users(frame)[0], atol=1e-5)


def test_user_tower_is_served_by_onnx_runtime_not_the_pytorch_fallback(service, caplog):
    with caplog.at_level("WARNING", logger="services.encoder"):
        UserEncoder(service.artifact)
    assert [r.getMessage() for r in caplog.records] == []


def test_user_tower_the_exporter_cannot_handle_still_serves_in_pytorch(service, caplog,
                                                                      monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with caplog.at_level("WARNING", logger="services.encoder"):
        encoder = UserEncoder(service.artifact)
    assert "ONNX export failed" in caplog.text
    frame = _frame(service.dataset.items["item_id"].to_numpy()[:20].tolist())
    np.testing.assert_allclose(encoder(frame), service.artifact.embed_users(frame)[0], atol=1e-5)
