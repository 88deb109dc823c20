"""The model store: embeddings written whole, read back exactly, missing ones named; pruning
reclaims the directories and embeddings of models no index version uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update

from index import IndexSpec, build_version
from index.model_store import UNBUILT_MODEL_GRACE, ModelStore, prune_versions
from index.registry import ModelVersion
from tests.index.conftest import DIM, open_live_index, random_items


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


def test_pruning_reclaims_unused_model_directories_and_embeddings(tmp_path):
    live = open_live_index("edge", tmp_path, random_items(40))
    registry, store = live.registry, ModelStore(tmp_path)
    models = []
    for n in range(4):  # model n: a directory, an embeddings file and one index version
        location = store.models_dir / f"m{n}"
        location.mkdir(parents=True)
        model = registry.register_model("towers", location=str(location))
        store.write_embeddings(model.id, np.arange(3), np.ones((3, DIM)))
        version = build_version(random_items(40, seed=n + 1, first_id=1000 * (n + 1)),
                                registry=registry, spec=IndexSpec(dim=DIM), model_version_id=model.id)
        models.append((model, version))
    registry.promote(models[1][1].id)  # model 1 live, the first live version its rollback target
    registry.promote(models[3][1].id)  # model 3 live, model 1's version the rollback target

    pruned = prune_versions(registry, store, keep=0)

    unused = [live.model_version_id, models[0][0].id, models[2][0].id]  # the first live one too
    assert sorted(pruned["model_versions"]) == sorted(unused)
    for n, (model, _) in enumerate(models):
        kept = n in (1, 3)
        assert (store.models_dir / f"m{n}").is_dir() == kept
        assert store.embeddings_path(model.id).is_file() == kept
    assert {m.id for m in registry.models()} == {models[1][0].id, models[3][0].id}
    live.backend.close()
    registry.close()


def test_a_model_no_index_was_built_from_yet_is_kept_for_a_day(tmp_path):
    """Two runs at once: the one that started first is still building from its model when the
    other one, finished first, prunes. Its model stays; a day later, abandoned, it goes."""
    live = open_live_index("edge", tmp_path, random_items(40))
    registry, store = live.registry, ModelStore(tmp_path)
    (store.models_dir / "early").mkdir(parents=True)
    early = registry.register_model("towers", location=str(store.models_dir / "early"))
    later = registry.register_model("towers", location=str(store.models_dir / "later"))
    version = build_version(random_items(40, seed=2, first_id=1000), registry=registry,
                            spec=IndexSpec(dim=DIM), model_version_id=later.id)
    registry.promote(version.id)

    assert prune_versions(registry, store, keep=0)["model_versions"] == []
    assert (store.models_dir / "early").is_dir()

    with registry.engine.begin() as db:
        db.execute(update(ModelVersion).where(ModelVersion.id == early.id)
                   .values(created_at=datetime.now(UTC) - UNBUILT_MODEL_GRACE - timedelta(hours=1)))
    assert prune_versions(registry, store, keep=0)["model_versions"] == [early.id]
    assert not (store.models_dir / "early").exists()
    live.backend.close()
    registry.close()
