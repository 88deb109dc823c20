"""The Feast repository works as Feast users expect: `feast apply`, `feast materialize`, online reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml

import feature_repo.store
from feature_repo.asof_store import STORE_TYPE
from feature_repo.datasets import DataError
from feature_repo.feature_services import two_tower_v1, user_online_v1
from feature_repo.store import (
    ONLINE_SERVICE,
    TRAINING_SERVICE,
    FeatureStoreConfig,
    _fill_absent_arrow,
    apply,
    online_user_features,
    open_store,
    render_repo,
)
from feature_repo.tables import write_feature_tables
from tests.utils.polling import eventually
from tests.utils.tables import make_dataset

ROOT = Path(__file__).resolve().parents[2]
FEAST = str(Path(sys.executable).parent / "feast")
# The CLI imports the offline store from this checkout's `feature_repo`, as pytest does.
CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_feast_cli_apply_materialize_then_online_history_is_the_latest(ml100k_dataset, tmp_path):
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    write_feature_tables(ml100k_dataset, repo / "data")
    for command in (["apply"], ["materialize", "1970-01-01T00:00:00", "1998-05-01T00:00:00"]):
        done = subprocess.run([FEAST, *command], cwd=repo, capture_output=True, text=True,
                              env=CLI_ENV)
        assert done.returncode == 0, done.stderr[-2000:]
    store = open_store(FeatureStoreConfig(repo_dir=repo))
    online = online_user_features(store, [1, 405]).set_index("user_id")
    events = ml100k_dataset.interactions
    for user in (1, 405):
        mine = events[events["user_id"] == user].sort_values("event_timestamp", kind="stable")
        assert list(online.loc[user, "recent_item_ids"]) == mine["item_id"].tolist()[-50:]
        assert online.loc[user, "event_count"] == len(mine)
    assert online.loc[1, "age"] == 24 and "occupation=technician" in online.loc[1, "profile_tokens"]


def test_unknown_user_online_has_empty_history(ml100k_store):
    from feature_repo.store import materialize

    materialize(ml100k_store, pd.Timestamp("1998-05-01", tz="UTC").to_pydatetime())
    online = online_user_features(ml100k_store, [999_999])
    assert len(online.loc[0, "recent_item_ids"]) == 0 and online.loc[0, "event_count"] == 0


def test_materialize_to_the_last_event_includes_it(tmp_path):
    from feature_repo.store import build_store, materialize

    events = [(1, 2, "2024-01-01 10:00:00"), (1, 3, "2024-01-02 10:00:00")]
    store = build_store(make_dataset(events), FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    materialize(store, pd.Timestamp("2024-01-02 10:00:00", tz="UTC").to_pydatetime())
    online = online_user_features(store, [1])
    assert list(online.loc[0, "recent_item_ids"]) == [2, 3] and online.loc[0, "event_count"] == 2


def _waiting_for_a_lock(pid: int) -> bool:
    """Whether process `pid` is blocked on a file lock (a `->` line of /proc/locks)."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def test_a_moved_repository_is_applied_by_one_process_at_a_time(tmp_path):
    """Each of a service's workers applies a moved repository again as it starts; together, one
    deleted the registry file another was replacing, and that worker failed to start."""
    from feature_repo.store import _apply, _applying, _moved, build_store, materialize

    events = [(1, 2, "2024-01-01 10:00:00"), (1, 3, "2024-01-02 10:00:00")]
    store = build_store(make_dataset(events), FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    materialize(store, pd.Timestamp("2024-01-02 10:00:00", tz="UTC").to_pydatetime())
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "repo", moved)
    shutil.rmtree(tmp_path / "repo")
    opening = f"from feature_repo.store import *; open_store(FeatureStoreConfig(repo_dir={str(moved)!r}))"
    with _applying(moved):  # a first worker applying it, its registry deleted and not yet rewritten
        (moved / "data" / "registry.db").unlink()
        worker = subprocess.Popen([sys.executable, "-c", opening], cwd=ROOT)
        assert eventually(lambda: _waiting_for_a_lock(worker.pid) or worker.poll() is not None, 120)
        assert worker.poll() is None  # it waits rather than read the half-applied repository
        _apply(moved.resolve())
    assert worker.wait(timeout=300) == 0
    store = open_store(FeatureStoreConfig(repo_dir=moved))
    assert not _moved(store, moved.resolve())
    assert list(online_user_features(store, [1]).loc[0, "recent_item_ids"]) == [2, 3]


def test_redis_online_store_and_sql_registry_are_configuration(tmp_path):
    config = FeatureStoreConfig(repo_dir=tmp_path, online_store="redis", redis_url="127.0.0.1:6390",
                                registry_url="postgresql+psycopg://u@127.0.0.1/feast")
    settings = yaml.safe_load((render_repo(config) / "feature_store.yaml").read_text())
    assert settings["online_store"] == {"type": "redis", "redis_type": "redis",
                                        "connection_string": "127.0.0.1:6390"}
    assert settings["registry"]["registry_type"] == "sql"
    assert settings["registry"]["path"] == "postgresql+psycopg://u@127.0.0.1/feast"
    assert settings["offline_store"] == {"type": STORE_TYPE}, "the ASOF join by default"
    stock = FeatureStoreConfig(repo_dir=tmp_path / "stock", offline_store="duckdb")
    assert yaml.safe_load((render_repo(stock) / "feature_store.yaml").read_text())[
        "offline_store"] == {"type": "duckdb"}
    assert sorted(p.name for p in tmp_path.glob("*.py")) == [
        "entities.py", "feature_services.py", "item_features.py", "user_features.py"]
    with pytest.raises(ValueError, match="rendered copy"):  # never rewrite the source tree's yaml
        render_repo(FeatureStoreConfig(online_store="redis"))


def test_redis_cluster_is_rendered_for_feast_to_read(tmp_path):
    from feast.infra.online_stores.redis import RedisType
    from feast.repo_config import load_repo_config

    nodes = "node1:6379,node2:6379,node3:6379,password=hunter2"
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path, online_store="redis", redis_url=nodes,
                                          redis_type="redis_cluster"))
    online = load_repo_config(repo, repo / "feature_store.yaml").online_store
    assert (online.redis_type, online.connection_string) == (RedisType.redis_cluster, nodes)


def test_failed_table_write_leaves_previous_tables_intact(tmp_path):
    good = make_dataset([(1, 2, "2024-01-01 10:00:00")])
    write_feature_tables(good, tmp_path)
    before = _files(tmp_path)
    assert {"dataset.json", "partitions.json", "user_profile.parquet",
            "user_history.parquet/2024-01-01.parquet"} <= set(before)
    bad = make_dataset([(1, 99, "2024-01-01 10:00:00")])  # item 99 is not in the catalogue
    with pytest.raises(DataError, match="unknown item_id 99"):
        write_feature_tables(bad, tmp_path)
    assert _files(tmp_path) == before, "no scratch files, no changed tables"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_definitions_file_is_rendered_and_applied(tmp_path, monkeypatch):
    source = tmp_path / "source"
    shutil.copytree(feature_repo.store.DEFINITIONS, source,
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    (source / "shops.py").write_text(
        'from feast import Entity, ValueType\n\n'
        'shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT64)\n')
    monkeypatch.setattr(feature_repo.store, "DEFINITIONS", source.resolve())
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    assert sorted(p.name for p in repo.glob("*.py")) == [
        "entities.py", "feature_services.py", "item_features.py", "shops.py", "user_features.py"]
    assert not (repo / "store.py").exists() and not (repo / "datasets").exists(), "not definitions"
    write_feature_tables(make_dataset([(1, 2, "2024-01-01 10:00:00")]), repo / "data")
    assert apply(repo).get_entity("shop").join_key == "shop_id"
    assert "shops" not in sys.modules, "the repository's modules are not left behind"


def test_services_named_in_the_store_are_the_definitions():
    assert (TRAINING_SERVICE, ONLINE_SERVICE) == (two_tower_v1.name, user_online_v1.name)


def test_absent_features_take_the_values_their_fields_declare():
    table = pa.table({"recent_item_ids": pa.array([None, [3]], pa.list_(pa.int64())),
                      "event_count": pa.array([None, None]),  # all-null columns come untyped
                      "count_7d": pa.array([None, 4], pa.int64()),
                      "quantity": pa.array([None, 1], pa.int64())})
    filled = _fill_absent_arrow(table).to_pydict()
    assert filled == {"recent_item_ids": [[], [3]], "event_count": [0, 0], "count_7d": [0, 4],
                      "quantity": [None, 1]}, "stock declares no fill: unknown stays null"


def test_a_second_feast_apply_changes_nothing_after_materialization(tmp_path, caplog):
    """Feast stamps sources when they are built; fixed stamps keep a re-apply from "updating"
    every materialized view (after at most one apply that replaces the first apply's stamps)."""
    import logging

    from feature_repo.datasets import load
    from feature_repo.store import apply, build_store, materialize

    data = load("synthetic:items=50,users=30,events=500,seed=1")
    store = build_store(data, FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    materialize(store, data.interactions["event_timestamp"].max().to_pydatetime())
    repo = Path(store.repo_path)
    with caplog.at_level(logging.INFO, logger="feature_repo.store"):
        apply(repo)
        caplog.clear()
        apply(repo)
    assert "No changes to registry" in caplog.text and "Updated" not in caplog.text


def test_the_checked_in_repository_without_tables_names_the_command_that_writes_them(tmp_path):
    from feature_repo.store import DEFINITIONS

    repo = tmp_path / "feature_repo"
    shutil.copytree(DEFINITIONS, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    done = subprocess.run([sys.executable, "-c", "import entities"], cwd=repo, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "python -m feature_repo.tables" in done.stderr


def test_feast_ui_imports():
    """`feast ui` serves the registry through Feast's gRPC registry server (grpcio-reflection)."""
    from feast.registry_server import RegistryServer
    from feast.ui_server import get_app

    assert callable(get_app) and RegistryServer.__name__ == "RegistryServer"
