"""The model store's embeddings files: written whole, read back exactly, missing ones named."""

from __future__ import annotations

import numpy as np
import pytest

from index.model_store import ModelStore


def test_embeddings_round_trip_and_leave_no_scratch_file(tmp_path):
    store = ModelStore(tmp_path)
    ids, vectors = np.array([7, 3, 11]), np.random.default_rng(0).normal(size=(3, 4))
    path = store.write_embeddings(5, ids, vectors)
    store.write_embeddings(5, ids[:2], vectors[:2])  # a rewrite replaces the file
    read_ids, read_vectors = store.read_embeddings(5)
    assert path == tmp_path / "embeddings" / "model_5.parquet"
    assert read_ids.tolist() == [7, 3] and read_vectors.dtype == np.float32
    np.testing.assert_allclose(read_vectors, vectors[:2].astype(np.float32))
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_missing_embeddings_name_their_model_version(tmp_path):
    with pytest.raises(FileNotFoundError, match="model version 9"):
        ModelStore(tmp_path).read_embeddings(9)
