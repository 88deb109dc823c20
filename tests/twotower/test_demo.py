"""The demo `make demo` runs: the whole graph in-process, then recommendations from the live version."""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feature_repo.datasets import Dataset
from index.catalogue import latest_stock
from index.events import EventLog, with_events
from index.registry import ModelVersion, Registry, Status
from services.client import RecommenderClient
from tests.utils.servers import twotower_service
from twotower.demo import PipelineFailed, recommend, run_demo

# As the graph fixture: the same NDCG, so it promotes (such towers trail Popularity on the slice).
FAST = {"tower": {"dim": 32, "encoder": "mean"}, "train": {"epochs": 2},
        "min_margin_over_popularity": -1.0}


def written(dataset: Dataset, home: Path) -> Dataset:
    """The dataset with what other tests wrote into the home's log (a new item, stock, ...)."""
    log = EventLog(data_dir=home)
    try:
        return with_events(dataset, log.read())
    finally:
        log.close()


def test_rerunning_the_demo_promotes_a_new_checked_version_and_recommends_from_it(graph, tmp_path):
    home = tmp_path / "home"  # a copy: the session's graph keeps its live version for other tests
    shutil.copytree(graph.settings.data_dir, home)
    registry = Registry(data_dir=home)
    live_before = registry.live().id

    demo = run_demo(graph.settings.data, home, users=2, k=5, **FAST)
    recommendations = demo.recommendations

    live = registry.live()
    assert live.id > live_before and registry.get(live_before).status == Status.RETIRED
    with Session(registry.engine) as session:
        assert live.model_version_id == session.scalar(select(func.max(ModelVersion.id)))
    registry.close()
    assert (demo.model_version, demo.index_version) == (live.model_version_id, live.id)
    assert demo.checks and all(c.passed for c in demo.checks)
    assert set(demo.test) == {"ndcg@10", "recall@10", "recall@100"}
    assert demo.training.split()[1] == "steps," and "stopped by budget" in demo.training
    gate = next(c for c in demo.checks if c.name == "towers_beat_popularity_on_validation")
    assert {"margin_over_popularity", "margin_over_ease"} <= set(gate.figures)
    assert len(recommendations) == 10 and len({r.user_id for r in recommendations}) == 2
    data = written(graph.dataset, home)
    stock = latest_stock(data.stock)
    events = data.interactions.sort_values("event_timestamp", kind="stable")  # as histories
    for rec in recommendations:
        assert stock[rec.item_id] > 0, "out-of-stock items are filtered"
        mine = events[events["user_id"] == rec.user_id].sort_values("event_timestamp", kind="stable")
        assert rec.item_id not in set(mine["item_id"]), "seen items are excluded, however old"


def test_demo_answers_are_what_the_service_answers_for_the_same_users(graph, tmp_path):
    users = graph.dataset.interactions["user_id"].value_counts().index[:3].tolist()
    titles = written(graph.dataset, graph.settings.data_dir).items.set_index("item_id")["title"]
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


def test_the_demo_runs_on_twenty_items_and_prints_a_summary_and_the_next_commands(tmp_path, capsys):
    """Cut-offs (Recall@100) and the re-ranker's candidates (30) are deeper than the catalogue."""
    from twotower.cli import main

    main(["demo", "--data", "synthetic:items=20,users=40,events=800,seed=5",
          "--home", str(tmp_path / "home")])
    out = capsys.readouterr().out
    assert "checks: " in out and " 0 failed" in out
    assert "test window: NDCG@10 " in out and "Recall@100 " in out
    assert "live: model version 1, index version 1; training: " in out and "; ranking: " in out
    assert f"twotower serve --home {tmp_path / 'home'}" in out and "dagster dev" in out
    # the UI's runs read and write the demo's data directory and dataset
    assert f"TWOTOWER_DATA_DIR={(tmp_path / 'home').resolve()}" in out
    assert "TWOTOWER_DATA=synthetic:items=20,users=40,events=800,seed=5 dagster dev" in out
    assert out.count("\nuser ") == 3


def test_a_failed_run_names_the_step_and_its_cause_in_one_line(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id,event_timestamp\n1,10,1700000000\n")
    (folder / "items.csv").write_text("item_id,title\n11,B\n")
    with pytest.raises(PipelineFailed, match=r"the pipeline run failed: step raw_tables: DataError: "
                       r".*interactions.csv, column 'item_id', row 1: unknown item_id 10"):
        run_demo(f"generic:{folder}", tmp_path / "home")
