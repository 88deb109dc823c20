"""The Feast online store on Redis Cluster (`redis_type="redis_cluster"`), on a real one-node cluster."""

from __future__ import annotations

import redis

from feature_repo.datasets import load
from feature_repo.store import FeatureStoreConfig, build_store, materialize, online_user_features
from tests.utils.servers import start_redis_cluster

SHOP = "synthetic:items=40,users=12,events=300,seed=3"


def test_materialized_features_are_read_back_from_a_redis_cluster(tmp_path):
    shop = load(SHOP)
    server = start_redis_cluster()
    try:
        store = build_store(shop, FeatureStoreConfig(repo_dir=tmp_path / "repo", online_store="redis",
                                                     redis_type="redis_cluster", redis_url=server.url))
        materialize(store, shop.interactions["event_timestamp"].max().to_pydatetime())
        users = [1, 2, 3]
        online = online_user_features(store, users).set_index("user_id")
        counts = shop.interactions["user_id"].value_counts()
        assert [online.loc[u, "event_count"] for u in users] == [counts.get(u, 0) for u in users]
        cluster = redis.Redis(port=server.port)
        assert cluster.cluster("info")["cluster_state"] == "ok"
        assert cluster.dbsize() == len(shop.users) + len(shop.items)
    finally:
        server.stop()
