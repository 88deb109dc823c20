"""Shared fixtures: the real MovieLens 100K files and other expensive parts, built once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from feature_repo.datasets import Dataset, load
from pipelines.defs.resources import PipelineSettings
from pipelines.local import instance_for, materialize_graph

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K folder (read by path, never copied into the repo)."""
    path = Path(os.environ.get("TWOTOWER_ML100K", ROOT.parent / "shared" / "datasets" / "ml-100k"))
    if not (path / "u.data").is_file():
        raise FileNotFoundError(f"MovieLens 100K not found at {path}; set TWOTOWER_ML100K")
    return path


# -- the Dagster graph, materialized once per session on a slice of MovieLens 100K ------------------

GRAPH_RUN = {"ops": {"two_tower_model": {"config": {  # small and fast: 2 epochs of a mean encoder
    "max_minutes": 1.0, "tower": {"dim": 32, "encoder": "mean"},
    "train": {"epochs": 2, "popularity_prior": 0.1}}},  # served with a prior: a 33-d float32 index
    # Such towers trail Popularity on this slice: the gate is tested on its own (test_checks.py).
    "two_tower_model_towers_beat_popularity_on_validation": {"config": {
        "min_margin_over_popularity": -1.0}}}}


@dataclass
class Graph:
    """A data dir where the whole graph ran once and promoted a live version."""

    settings: PipelineSettings
    instance: DagsterInstance
    result: ExecuteInProcessResult
    dataset: Dataset


@pytest.fixture(scope="session")
def ml100k_slice(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every 8th MovieLens 100K user (~12k events) with the whole catalogue, as a `generic:` folder."""
    full = load(f"movielens-100k:{ml100k_dir}")
    folder = tmp_path_factory.mktemp("ml100k-slice")
    events = full.interactions[full.interactions["user_id"] % 8 == 0]
    events[["user_id", "item_id", "event_timestamp"]].to_parquet(folder / "interactions.parquet")
    full.users[full.users["user_id"] % 8 == 0].to_parquet(folder / "users.parquet")
    full.items.assign(categories=full.items["categories"].map("|".join)).to_parquet(
        folder / "items.parquet")
    return f"generic:{folder}"  # no stock file: the loader simulates one from these events


@pytest.fixture(scope="session")
def graph(ml100k_slice: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    settings = PipelineSettings(data_dir=tmp_path_factory.mktemp("graph"), data=ml100k_slice)
    with instance_for(settings.data_dir) as instance:
        result = materialize_graph(settings, instance=instance, run_config=GRAPH_RUN)
        yield Graph(settings, instance, result, result.output_for_node("raw_tables"))
