"""Monitoring assets: their numbers and plots reach the asset metadata."""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pipelines.defs.monitoring import LATENCY_METRIC, embedding_drift, latency_buckets
from pipelines.defs.resources import build_resources


def materialization_metadata(graph, asset: str) -> dict:
    events = [e for e in graph.result.get_asset_materialization_events()
              if e.asset_key.to_user_string() == asset]
    return events[-1].step_materialization_data.materialization.metadata


def test_index_recall_reports_a_sweep_and_a_plot(graph):
    metadata = materialization_metadata(graph, "index_recall")
    assert metadata["recall@10_as_served"].value >= 0.97
    assert "| 256 |" in metadata["sweep"].value
    assert metadata["tradeoff"].value.startswith("![recall vs speed](data:image/png;base64,")


def test_training_curve_is_an_inline_png(graph):
    metadata = materialization_metadata(graph, "two_tower_model")
    assert metadata["training_curve"].value.startswith("![training curve](data:image/png;base64,")
    assert metadata["epochs"].value == 2


def test_latency_buckets_sum_the_service_histogram_over_routes():
    registry = CollectorRegistry()
    latency = Histogram(LATENCY_METRIC, "latency", ["route"], buckets=(0.005, 0.05, 0.5),
                        registry=registry)
    for seconds, route in ((0.001, "a"), (0.01, "a"), (0.01, "b"), (1.0, "b")):
        latency.labels(route).observe(seconds)
    name, bounds, counts = latency_buckets(generate_latest(registry).decode())
    assert name == LATENCY_METRIC and bounds == [0.005, 0.05, 0.5, float("inf")]
    assert counts == [1, 3, 3, 4]


def test_latency_buckets_ignore_other_histograms():
    registry = CollectorRegistry()
    Histogram("something_else_seconds", "other", registry=registry).observe(0.1)
    assert latency_buckets(generate_latest(registry).decode()) is None


def test_drift_compares_the_towers_own_vectors_without_the_priors_coordinate(graph):
    embeddings = graph.result.output_for_node("item_embeddings")
    build = dataclasses.replace(graph.result.output_for_node("item_index"),  # against itself
                                previous_model_version_id=embeddings.model_version_id)
    registry = build_resources(graph.settings)["registry"]
    assert registry.model_store.read_embeddings(embeddings.model_version_id)[1].shape[1] == 33
    [output] = embedding_drift(dg.build_asset_context(), embeddings, build, registry)
    metadata = {k: getattr(v, "value", v) for k, v in output.metadata.items()}
    assert metadata["neighbour_overlap_mean"] == 1.0 and metadata["neighbours_changed_share"] == 0.0
    assert metadata["new_norm_mean"] == pytest.approx(1.0, abs=1e-4)  # unit: the prior's coordinate is off
    assert metadata["new_pair_similarity_mean"] == metadata["live_pair_similarity_mean"]
