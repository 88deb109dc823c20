"""Monitoring assets: their numbers and plots reach the asset metadata."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pipelines.defs.monitoring import LATENCY_METRIC, latency_buckets


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
