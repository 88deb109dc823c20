"""One path, two deployments: apply -> materialize -> train -> online read -> recommend.

`local` is the embedded default (SQLite online store, file registries); `redis+postgres` is the
scaled setup (Redis online store, Feast SQL registry and model/index registry in PostgreSQL), on
real throwaway servers. Each trains a tiny tower on its own store's training frame and answers
through the service's engine (`services.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import redis
import sqlalchemy as sa

from feature_repo.datasets import Dataset, load
from feature_repo.store import (
    ENTITY_COLUMNS,
    FeatureStoreConfig,
    build_store,
    materialize,
    online_user_features,
    training_frame,
)
from feature_repo.tables import write_feature_tables
from index import EdgeSettings, IndexSpec, build_version, open_backend
from index.catalogue import item_batch, latest_stock
from index.model_store import save_model
from index.registry import Registry
from services.engine import Engine
from services.schemas import RecommendationRequest
from towers.artifact import Artifact
from towers.train import TrainConfig, fit

SHOP = "synthetic:items=150,users=60,events=3000,seed=5"
USERS = [1, 2, 3]


@dataclass
class Deployment:
    """A built platform: the Feast store with its online rows, a registry with a live version."""

    store: object  # feast.FeatureStore
    registry: Registry
    towers: Artifact
    engine: Engine
    feast_registry_url: str | None


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return load(SHOP)


@pytest.fixture(scope="module", params=["local", "redis+postgres"])
def deployment(request, shop, tmp_path_factory):
    home: Path = tmp_path_factory.mktemp(request.param.replace("+", "-"))
    if request.param == "local":
        config, registry_url = FeatureStoreConfig(repo_dir=home / "feature_repo"), None
    else:
        redis_server = request.getfixturevalue("redis_server")
        postgres = request.getfixturevalue("postgres_server")
        config = FeatureStoreConfig(repo_dir=home / "feature_repo", online_store="redis",
                                    redis_url=redis_server.url,
                                    registry_url=postgres.create_database("feast"))
        registry_url = postgres.create_database("twotower")
    store = build_store(shop, config)
    materialize(store, shop.interactions["event_timestamp"].max().to_pydatetime())
    towers = fit(training_frame(store, shop.interactions[ENTITY_COLUMNS]), shop.items,
                 train=TrainConfig(epochs=1, max_minutes=0.1))

    registry = Registry(registry_url, data_dir=home, backend=open_backend(EdgeSettings(path=home / "index")))
    model = save_model(registry, towers, home / "models", config={"data": SHOP})
    vectors = towers.embed_items(shop.items)
    build_version(item_batch(shop.items, vectors, latest_stock(shop.stock)), registry=registry,
                  spec=IndexSpec(dim=vectors.shape[1]), model_version_id=model.id, promote=True)
    engine = Engine(store=store, backend=registry.backend, registry=registry)
    engine.refresh()
    yield Deployment(store, registry, towers, engine, config.registry_url)
    engine.close()
    registry.backend.close()
    registry.close()


def _history(shop: Dataset, user: int) -> list[int]:
    """The user's item ids, oldest first (ties in the order they were logged)."""
    events = shop.interactions.sort_values("event_timestamp", kind="stable")
    return events.loc[events["user_id"] == user, "item_id"].tolist()


def test_online_features_are_each_users_latest_history(deployment, shop):
    frame = online_user_features(deployment.store, USERS).set_index("user_id")
    for user in USERS:
        history = _history(shop, user)
        assert frame.loc[user, "event_count"] == len(history)
        assert list(frame.loc[user, "recent_item_ids"]) == history[-50:]


def test_recommends_unseen_in_stock_items_with_the_live_model(deployment, shop):
    live = deployment.registry.live()
    assert live is not None and live.item_count == len(shop.items)
    stock = latest_stock(shop.stock)
    for user in USERS:
        answer = deployment.engine.recommend(RecommendationRequest(user_id=user, k=5))
        assert (answer.model_version, answer.index_version) == (live.model_version_id, live.id)
        assert not answer.cold_start
        seen = set(_history(shop, user)[-50:])
        ids = [item.item_id for item in answer.items]
        assert len(ids) == 5 and all(stock.get(i, 0) > 0 and i not in seen for i in ids)
        assert np.all(np.diff([item.score for item in answer.items]) <= 1e-6), "best first"


def test_the_live_model_is_loaded_from_its_registered_location(deployment, shop):
    loaded = Artifact.load(deployment.registry.live_model().location)
    assert np.allclose(loaded.embed_items(shop.items), deployment.towers.embed_items(shop.items), atol=1e-6)


@pytest.mark.parametrize("deployment", ["redis+postgres"], indirect=True)
def test_redis_and_postgres_hold_the_rows(deployment, redis_server, shop):
    assert redis.Redis(port=redis_server.port).dbsize() == len(shop.users) + len(shop.items)
    with sa.create_engine(deployment.feast_registry_url).connect() as feast_db:
        views = feast_db.execute(sa.text("SELECT feature_view_name FROM feature_views")).scalars()
        assert {"user_profile", "user_history", "item_content"} <= set(views)
    with deployment.registry.engine.connect() as registry_db:
        assert deployment.registry.engine.dialect.name == "postgresql"
        assert registry_db.execute(sa.text("SELECT count(*) FROM index_versions "
                                           "WHERE status = 'live'")).scalar() == 1


def test_a_rewritten_static_row_replaces_the_online_one_stamped_the_same(deployment, shop):
    """Item content is stamped 1970 whatever its version: materializing a rebuilt table updates it."""
    item = int(shop.items["item_id"].iloc[0])
    items = shop.items.assign(price=np.where(shop.items["item_id"] == item, 12345.0, shop.items["price"]))
    write_feature_tables(replace(shop, items=items), Path(deployment.store.repo_path) / "data")
    materialize(deployment.store, shop.interactions["event_timestamp"].max().to_pydatetime())
    read = deployment.store.get_online_features(features=["item_content:price"],
                                                entity_rows=[{"item_id": item}]).to_dict()
    assert read["price"] == [12345.0]
