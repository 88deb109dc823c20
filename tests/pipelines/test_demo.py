"""The end-to-end job `make demo` runs: features, towers, a live index, recommendations."""

from __future__ import annotations

from feature_repo.datasets import load
from pipelines.demo import run_demo
from pipelines.registry import Registry

SHOP = "synthetic:items=150,users=60,events=3000,seed=5"


def test_demo_recommends_unseen_in_stock_items_from_a_live_index(tmp_path):
    recommendations = run_demo(SHOP, tmp_path, users=2, k=5, train_minutes=0.2)
    dataset = load(SHOP)
    assert len(recommendations) == 10 and len({r.user_id for r in recommendations}) == 2
    latest = dataset.stock.drop_duplicates("item_id", keep="last").set_index("item_id")["quantity"]
    events = dataset.interactions
    for rec in recommendations:
        assert latest[rec.item_id] > 0, "out-of-stock items are filtered"
        seen = events.loc[events["user_id"] == rec.user_id, "item_id"].tail(50)
        assert rec.item_id not in set(seen), "recently seen items are excluded"
    registry = Registry(data_dir=tmp_path)
    assert registry.live() is not None and registry.live().item_count == 150
    registry.close()
