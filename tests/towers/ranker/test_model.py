"""The re-ranker model: save/load, scoring as LightGBM predicts, and the feature layout it checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from towers.ranker.features import FEATURES
from towers.ranker.model import Ranker


def test_saved_ranker_scores_identically_after_load(synthetic_ranker, synthetic, tmp_path):
    loaded = Ranker.load(synthetic_ranker.save(tmp_path / "ranker"))
    x = synthetic(3, 5).features
    np.testing.assert_array_equal(loaded.score(x), synthetic_ranker.score(x))
    assert (loaded.metrics, loaded.improves) == (synthetic_ranker.metrics, True)


def test_a_saved_ranker_is_never_replaced_and_a_failed_save_leaves_nothing(synthetic_ranker,
                                                                           tmp_path, monkeypatch):
    path = synthetic_ranker.save(tmp_path / "ranker")
    other = Ranker(synthetic_ranker.booster, {"ndcg10_gain_low": -1.0}, improves=False)
    with pytest.raises(FileExistsError, match="never replaced"):
        other.save(path)
    assert Ranker.load(path).improves, "the first one stays whole"

    def write_until_the_disk_fills(file, content):
        if file.name == "ranker.json":  # model.txt is written first
            raise OSError("disk full")
        file.write_text(content)
    monkeypatch.setattr("towers.ranker.model.atomic_write", write_until_the_disk_fills)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path / "second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranker"], "no partial ranker, no tmp"


def test_a_ranker_saved_with_another_feature_layout_is_refused(synthetic_ranker, tmp_path):
    path = synthetic_ranker.save(tmp_path / "ranker")
    meta = json.loads((path / "ranker.json").read_text())
    meta["features"] = list(reversed(FEATURES))
    (path / "ranker.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="ranker version 1 with features"):
        Ranker.load(path)


def test_score_equals_lightgbms_own_predict(synthetic_ranker, synthetic):
    x = synthetic(3, 7).features
    np.testing.assert_array_equal(synthetic_ranker.score(x), synthetic_ranker.booster.predict(x))


def test_scoring_a_matrix_of_the_wrong_width_names_features(synthetic_ranker):
    with pytest.raises(ValueError, match="features: shape"):
        synthetic_ranker.score(np.zeros((5, len(FEATURES) - 1)))
