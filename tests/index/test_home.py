"""One data directory, one dataset: another's features are refused while a live model serves."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_repo.datasets import Dataset
from index.home import FINGERPRINT, HomeError, check_home
from index.registry import Registry


def _dataset(name: str) -> Dataset:
    empty = pd.DataFrame()
    return Dataset(name, empty, empty, empty, empty, identity=f"generic:/shops/{name}")


def test_another_dataset_is_refused_only_while_a_live_model_serves_the_first(tmp_path):
    registry = Registry(data_dir=tmp_path)
    data = tmp_path / "feature_repo" / "data"
    shop, films = _dataset("shop"), _dataset("films")
    check_home(registry, data, films, replace=False)  # nothing live yet: any dataset may come
    model = registry.register_model("towers", config={FINGERPRINT: shop.fingerprint}, metrics={},
                                    location=str(tmp_path / "model"))
    version = registry.register_build(model_version_id=model.id, config={}, backend="edge",
                                      location=str(tmp_path / "index"))
    registry.mark_ready(version.id, item_count=1)
    registry.promote(version.id)
    check_home(registry, data, shop, replace=False)  # the same dataset again, e.g. grown
    with pytest.raises(HomeError, match=rf"{tmp_path} serves model version {model.id} trained on "
                       rf"another dataset \(fingerprint {shop.fingerprint}\); refusing to write "
                       r"films .* Use a new --home for films, or --replace"):
        check_home(registry, data, films, replace=False)
    check_home(registry, data, films, replace=True)
    registry.close()
