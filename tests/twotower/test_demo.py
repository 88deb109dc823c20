"""The demo `make demo` runs: the whole graph in-process, then recommendations from the live version."""

from __future__ import annotations

import secrets
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from index.catalogue import latest_stock
from index.registry import ModelVersion, Registry, Status
from services.client import RecommenderClient
from tests.utils.servers import twotower_service
from twotower.demo import recommend, run_demo, training_summary

# As the graph fixture: the same NDCG, so it promotes (such towers trail Popularity on the slice).
FAST = {"tower": {"dim": 32, "encoder": "mean"}, "train": {"epochs": 2},
        "min_margin_over_popularity": -1.0}


def test_rerunning_the_demo_promotes_a_new_checked_version_and_recommends_from_it(graph):
    registry = Registry(data_dir=graph.settings.data_dir)
    live_before = registry.live().id

    recommendations = run_demo(graph.settings.data, graph.settings.data_dir, users=2, k=5,
                               train_minutes=1.0, **FAST)

    live = registry.live()
    assert live.id > live_before and registry.get(live_before).status == Status.RETIRED
    with Session(registry.engine) as session:
        assert live.model_version_id == session.scalar(select(func.max(ModelVersion.id)))
    registry.close()
    assert len(recommendations) == 10 and len({r.user_id for r in recommendations}) == 2
    summary = training_summary(graph.settings.data_dir)  # the towers just promoted
    assert summary["model_version_id"] == live.model_version_id
    assert summary["stopped_by"] in {"early_stopping", "budget", "cap"}
    assert {"margin_over_popularity", "margin_over_ease", "val_ndcg@10"} <= set(summary)
    stock, events = latest_stock(graph.dataset.stock), graph.dataset.interactions
    for rec in recommendations:
        assert stock[rec.item_id] > 0, "out-of-stock items are filtered"
        mine = events[events["user_id"] == rec.user_id].sort_values("event_timestamp", kind="stable")
        seen = mine["item_id"].tail(50)  # the last 50 by time, as the service reads them
        assert rec.item_id not in set(seen), "recently seen items are excluded"


def test_demo_answers_are_what_the_service_answers_for_the_same_users(graph, tmp_path):
    users = graph.dataset.interactions["user_id"].value_counts().index[:3].tolist()
    titles = graph.dataset.items.set_index("item_id")["title"]
    keys = {"TWOTOWER_READ_KEYS": secrets.token_urlsafe(16),
            "TWOTOWER_WRITE_KEYS": secrets.token_urlsafe(16)}
    for _attempt in range(2):  # the user tower reads the request's hour: both answers in one hour
        hour = time.gmtime().tm_hour
        # A Qdrant Edge shard has one owner process: the service answers and exits, then the demo.
        with (twotower_service(graph.settings.data_dir, keys, tmp_path / "serve.log") as server,
              RecommenderClient(server.url, api_key=keys["TWOTOWER_READ_KEYS"]) as client):
            served = [(user, item.item_id, item.score)
                      for user in users for item in client.recommend(user, k=5).items]
        demo = [(r.user_id, r.item_id, r.score)
                for r in recommend(graph.settings, users, titles=titles, k=5)]
        if time.gmtime().tm_hour == hour:
            break
    assert len(demo) == 15
    assert [(u, i) for u, i, _ in demo] == [(u, i) for u, i, _ in served]
    assert [s for _, _, s in demo] == pytest.approx([s for _, _, s in served], abs=1e-5)
