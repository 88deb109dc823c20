"""The demo `make demo` runs: the whole graph in-process, then recommendations from the live version."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from index.catalogue import latest_stock
from index.registry import ModelVersion, Registry, Status
from twotower.demo import run_demo

# As the graph fixture: the same NDCG, so it promotes.
FAST = {"tower": {"dim": 32, "encoder": "mean"}, "train": {"epochs": 2}}


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
    stock, events = latest_stock(graph.dataset.stock), graph.dataset.interactions
    for rec in recommendations:
        assert stock[rec.item_id] > 0, "out-of-stock items are filtered"
        seen = events.loc[events["user_id"] == rec.user_id, "item_id"].tail(50)
        assert rec.item_id not in set(seen), "recently seen items are excluded"
