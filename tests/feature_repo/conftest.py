"""Feast stores over temporary copies of the repository, built once per test run."""

from __future__ import annotations

import pytest

from feature_repo.datasets import load
from feature_repo.store import FeatureStoreConfig, build_store


@pytest.fixture(scope="session")
def ml100k_dataset(ml100k_dir):
    return load(f"movielens-100k:{ml100k_dir}")


@pytest.fixture(scope="session")
def ml100k_store(ml100k_dataset, tmp_path_factory):
    repo = tmp_path_factory.mktemp("ml100k") / "feature_repo"
    return build_store(ml100k_dataset, FeatureStoreConfig(repo_dir=repo))
