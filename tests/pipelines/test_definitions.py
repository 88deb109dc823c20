"""The Dagster definitions: they load, every job resolves, the graph promotes only checked versions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, build_schedule_context, validate_run_config

from index import SearchFilters
from index.registry import Registry, Status
from pipelines.definitions import defs
from pipelines.defs.resources import build_resources
from pipelines.defs.values import ItemEmbeddings, ModelVersionRef
from pipelines.local import materialize_graph
from towers.artifact import Artifact
from twotower.demo import recommend

CHECKS = {"training_examples_have_no_leakage", "training_graph_holds_only_edges_before_each_example",
          "training_loss_is_finite_and_decreasing",
          "towers_beat_popularity_on_validation", "ndcg_holds_against_live",
          "item_embeddings_are_finite", "item_index_holds_the_catalogue",
          "item_index_recall_meets_target", "in_stock_items_are_searchable"}


def open_registry(graph) -> Registry:
    return build_resources(graph.settings)["registry"]


def new_embeddings(graph) -> tuple[ItemEmbeddings, np.ndarray, np.ndarray]:
    """The graph run's item embeddings value, and the ids and vectors the model store reads for it."""
    value = graph.result.output_for_node("item_embeddings")
    return value, *open_registry(graph).model_store.read_embeddings(value.model_version_id)


def test_definitions_load_and_every_job_resolves():
    names = {job.name for job in defs.resolve_all_job_defs()}
    assert {"retraining_job", "daily_features_job", "online_features_job", "stock_update_job",
            "new_items_job"} <= names
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == CHECKS
    assert {s.name for s in defs.sensors} == {"stock_log_sensor", "catalogue_sensor"}
    assert {s.name for s in defs.schedules} == {"retraining_schedule", "daily_features_schedule",
                                                "online_features_schedule"}


def test_the_incremental_schedule_asks_for_a_valid_incremental_run():
    schedule = defs.resolve_schedule_def("online_features_schedule")
    tick = datetime(2026, 1, 1, 5, tzinfo=UTC)
    request = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests[0]
    config = request.run_config["ops"]["online_features"]["config"]
    assert config["incremental"] is True and config["end"].startswith("2026-01-01T05:00")
    validate_run_config(defs.resolve_job_def("online_features_job"), request.run_config)


def test_the_whole_graph_ends_with_a_checked_live_version_that_answers(graph):
    evaluations = graph.result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == CHECKS
    assert all(e.passed for e in evaluations)
    with open_registry(graph).open() as registry:
        live = registry.live()
        assert live is not None and live.item_count == len(graph.dataset.items)
        model = registry.get_model(live.model_version_id)
        assert Artifact.load(model.location).config.dim == 32, "the run's override was used"
        assert Path(model.location, "ranker", "ranker.json").is_file(), "the re-ranker beside its towers"
        assert graph.result.output_for_node("two_tower_model") == ModelVersionRef(model.id, model.location)
    users = graph.dataset.interactions["user_id"].value_counts().index[:2].tolist()
    answers = recommend(graph.settings, users, titles=graph.dataset.items.set_index("item_id")["title"],
                        k=5)
    assert len(answers) == 10 and len({a.item_id for a in answers}) > 1


def test_the_model_store_holds_the_runs_towers_and_embeddings(graph):
    model = graph.result.output_for_node("two_tower_model")
    embeddings, ids, vectors = new_embeddings(graph)
    store = open_registry(graph).model_store
    assert embeddings == ItemEmbeddings(model.id, store.embeddings_path(model.id))
    artifact = store.load(model.location)
    assert artifact is store.load(model.location), "loaded once, then shared"
    served = 32 + artifact.prior.extra_dims  # the served vectors: a popularity prior adds one
    assert sorted(ids) == sorted(graph.dataset.items["item_id"]) and vectors.shape == (len(ids), served)


def test_the_version_serves_a_refit_on_every_event_and_keeps_the_fit_it_was_judged_by(graph):
    model = graph.result.output_for_node("two_tower_model")
    store = open_registry(graph).model_store
    served, evaluated = store.load(model.location), store.evaluated(model.location)
    split = graph.result.output_for_node("evaluation_split")
    cut = pd.Timestamp(split.notes["validation"]["cut"]).timestamp()
    last = graph.dataset.interactions["event_timestamp"].max().timestamp()
    assert evaluated.prior.as_of < cut <= served.prior.as_of == int(last)  # the newest events too
    assert len(served.model.vocab.user_ids) > len(evaluated.model.vocab.user_ids)
    for key in ("val", "best_step", "test", "baselines"):  # the figures are the evaluated fit's
        assert served.metrics[key] == evaluated.metrics[key]
    assert served.metrics["refit_share"] == evaluated.metrics["best_step"] / evaluated.metrics[
        "schedule_steps"]


def rebuild_index_from(graph, ids, vectors, selection: str):
    """Rerun `selection` with the model's embeddings file replaced by (ids, vectors), then restore it.

    Returns the run's result and the id of the index version live before it.
    """
    embeddings = graph.result.output_for_node("item_embeddings")
    original = pq.read_table(embeddings.path)
    with open_registry(graph).open() as registry:
        live_before = registry.live().id
    open_registry(graph).model_store.write_embeddings(embeddings.model_version_id, ids, vectors)
    try:
        result = materialize_graph(graph.settings, instance=graph.instance, selection=selection,
                                   raise_on_error=False)
    finally:
        pq.write_table(original, embeddings.path)
    return result, live_before


def test_a_failing_check_blocks_promotion_and_the_live_version_keeps_serving(graph):
    _, ids, vectors = new_embeddings(graph)
    # One catalogue item lost its vector: the build succeeds, the item count check fails.
    result, live_before = rebuild_index_from(graph, ids[1:], vectors[1:], "item_index*")
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert not result.success and failed == {"item_index_holds_the_catalogue"}
    with open_registry(graph).open() as registry:
        assert registry.live().id == live_before
        blocked = registry.versions()[-1]
        assert blocked.status == Status.READY and blocked.item_count == len(ids) - 1
        assert registry.backend.search(vectors[0], k=3, filters=SearchFilters(in_stock_only=False))


def test_promotion_run_alone_refuses_a_version_whose_checks_failed_or_were_skipped(graph):
    _, ids, vectors = new_embeddings(graph)
    built, live_before = rebuild_index_from(graph, ids[1:], vectors[1:], "item_index")
    assert not built.success  # its item count check failed
    alone = materialize_graph(graph.settings, instance=graph.instance,
                              selection=["live_index_version"], raise_on_error=False)
    assert not alone.success
    assert "item_index_holds_the_catalogue" in str(alone.all_events)
    unchecked = materialize_graph(graph.settings, instance=graph.instance,
                                  selection=AssetSelection.assets("item_index").without_checks())
    assert unchecked.success and not unchecked.get_asset_check_evaluations()
    alone = materialize_graph(graph.settings, instance=graph.instance,
                              selection=["live_index_version"], raise_on_error=False)
    # A new build whose checks did not run: the passes on earlier builds do not count.
    assert not alone.success and "item_index_recall_meets_target" in str(alone.all_events)
    with open_registry(graph).open() as registry:
        assert registry.live().id == live_before


def test_promotion_run_alone_refuses_an_index_older_than_its_inputs(graph):
    with open_registry(graph).open() as registry:
        live_before = registry.live().id
    built = materialize_graph(graph.settings, instance=graph.instance,
                              selection=["item_embeddings", "item_index"])
    assert built.success and all(e.passed for e in built.get_asset_check_evaluations())
    # New embeddings (as new towers would bring) after the index: its checks passed, on older ones.
    assert materialize_graph(graph.settings, instance=graph.instance,
                             selection=["item_embeddings"]).success
    alone = materialize_graph(graph.settings, instance=graph.instance,
                              selection=["live_index_version"], raise_on_error=False)
    assert not alone.success and "item_index is older than item_embeddings" in str(alone.all_events)
    with open_registry(graph).open() as registry:
        assert registry.live().id == live_before


def test_a_nan_embedding_fails_the_build_and_the_live_version_keeps_serving(graph):
    _, ids, vectors = new_embeddings(graph)
    corrupted = vectors.copy()
    corrupted[3, 0] = np.nan
    result, live_before = rebuild_index_from(graph, ids, corrupted, "item_index+")
    assert not result.success
    with open_registry(graph).open() as registry:
        assert registry.live().id == live_before
        failed = registry.versions()[-1]
        assert failed.status == Status.FAILED and f"item_id {ids[3]}" in failed.error
        assert registry.backend.search(vectors[0], k=3, filters=SearchFilters(in_stock_only=False))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_check_is_blocking(name):
    spec = next(s for c in defs.asset_checks for s in c.check_specs if s.name == name)
    assert spec.blocking


def test_the_index_versions_metadata_gives_dim_compression_bytes_per_item_and_served_recall(graph):
    [materialization] = graph.result.asset_materializations_for_node("item_index")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    model = graph.result.output_for_node("two_tower_model")
    assert open_registry(graph).model_store.load(model.location).prior.weight == 0.1
    # int8 cannot hold the prior's coordinate: the 33-d vectors are kept as float32
    assert metadata["dim"] == 33 and metadata["compression"] == "none"
    assert metadata["bytes_per_item_disk"] > 4 * 33
    assert 0.5 <= metadata["recall@10_served"] <= 1.0
