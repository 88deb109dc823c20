"""Embedding-drift measures on catalogues of any size."""

from __future__ import annotations

import numpy as np
import pytest

from index.quality import neighbour_overlap


@pytest.mark.parametrize("items", [1, 2, 5, 11, 40])
def test_unchanged_embeddings_keep_every_neighbour_whatever_the_catalogues_size(items):
    vectors = np.random.default_rng(0).normal(size=(items, 8))
    assert neighbour_overlap(vectors, vectors.copy()).tolist() == [1.0] * items

