"""Towers fixtures: a slice of MovieLens-100K, its Feast store and training frame, built once."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from feature_repo.datasets import load
from towers import evaluate
from towers.features import examples, feature_store, with_features

MAX_LEN = 20  # short enough that both complete and truncated histories are common in the slice


@pytest.fixture(scope="session")
def ml(ml100k_dir):
    torch.set_num_threads(1)
    return load(f"movielens-100k:{ml100k_dir}")


@pytest.fixture(scope="session")
def small(ml):
    """The first 60 users' events, with the full catalogue and user table."""
    return dataclasses.replace(ml, interactions=ml.interactions[ml.interactions["user_id"] <= 60])


@pytest.fixture(scope="session")
def small_store(small, tmp_path_factory):
    return feature_store(small, MAX_LEN, tmp_path_factory.mktemp("towers"))


@pytest.fixture(scope="session")
def small_frame(small, small_store):
    """Feast training rows for every event of the slice (history_length = MAX_LEN)."""
    return examples(small_store, small.interactions)


@pytest.fixture(scope="session")
def tiny_split(small, small_store):
    """A LOO split of the first 15 users, its queries with Feast features, and its training rows."""
    split = with_features(evaluate.loo_split(small.interactions[small.interactions["user_id"] <= 15]),
                          small_store)
    return split, examples(small_store, split.train)
