"""Throwaway Redis and PostgreSQL servers on loopback, one of each per test run, and a Redis of a
test's own with a shop published on it.

A missing binary fails the tests that need it (CI installs both: `.ci/install-servers.sh`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_repo.datasets import Dataset, load
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from tests.services.conftest import Service, promote_version
from tests.utils.servers import PostgresServer, RedisServer, start_postgres, start_redis
from towers.features import examples
from towers.model import TowerConfig
from towers.train import TrainConfig, fit

SHOP = "synthetic:items=200,users=60,events=3000,seed=7"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own: the session's is shared by tests that count its keys."""
    server = start_redis()
    yield server
    server.stop()


def redis_shop(home: Path, redis: RedisServer) -> tuple[Dataset, FeatureStoreConfig]:
    """A small shop under `home` with its online store on `redis`: towers trained, an index
    version live."""
    dataset = load(SHOP)
    config = FeatureStoreConfig(repo_dir=home / "feature_repo", online_store="redis",
                                redis_url=redis.url)
    store = build_store(dataset, config)
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(dim=16, max_len=50), train=TrainConfig(epochs=1, max_minutes=0.1))
    promote_version(Service("", home, dataset, artifact, "", ""))
    return dataset, config
