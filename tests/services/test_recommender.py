"""The engine's parts: the served (ONNX) user tower equals the towers' own, and the re-ranker's status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.store import FeatureStoreConfig, online_user_features, open_store
from services.encoder import UserEncoder
from services.online import OnlineFeatures
from services.recommender import load_ranker
from tests.services.api.test_versions import _improving_ranker
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


def test_ranker_that_does_not_improve_leaves_retrieval_order_and_says_why(tmp_path):
    ranker = _improving_ranker(candidates=10)
    ranker.improves = False
    ranker.save(tmp_path / "ranker")
    loaded, status = load_ranker(str(tmp_path))
    assert loaded is None
    assert status == ("retrieval order: the re-ranker does not improve NDCG@10 on the held-out "
                      "window (0.12 vs 0.1)")
    assert load_ranker(str(tmp_path / "missing"))[1] == \
        "retrieval order: no re-ranker trained for this model version"


def test_online_reads_equal_feasts_own_online_features(service):
    store = open_store(FeatureStoreConfig(repo_dir=service.home / "feature_repo"))
    users = service.dataset.interactions["user_id"].value_counts().index[20:25].tolist()
    expected = online_user_features(store, users)
    online = OnlineFeatures(store)
    for row in expected.itertuples():
        user = online.user(row.user_id)
        assert list(user.recent_item_ids) == list(row.recent_item_ids)
        assert list(user.recent_timestamps) == list(row.recent_timestamps)
        assert list(user.profile_tokens) == list(row.profile_tokens) and user.age == row.age
    assert not online.user(10**12).known
    item = int(service.dataset.items["item_id"].iloc[0])
    row = service.dataset.items.set_index("item_id").loc[item]
    found = online.items([item, 10**12])
    assert list(found) == [item] and list(found[item].categories) == list(row["categories"])
    stock = store.get_online_features(features=["item_stock:quantity"],
                                      entity_rows=[{"item_id": item}]).to_dict()["quantity"][0]
    assert found[item].stock == stock
