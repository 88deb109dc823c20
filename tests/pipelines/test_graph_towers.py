"""The GraphSAGE item encoder through the Dagster pipeline: a tiny fit, its graph leakage check,
and the embeddings the index is built from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.defs.checks import training_graph_holds_only_edges_before_each_example
from pipelines.defs.resources import PipelineSettings, build_resources
from pipelines.local import instance_for, materialize_graph
from towers import graph

RUN = {"ops": {"two_tower_model": {"config": {  # small and fast: 2 epochs of a mean encoder
    "tower": {"dim": 16, "encoder": "mean", "item_encoder": "sage"}, "train": {"epochs": 2}}},
    "two_tower_model_towers_beat_popularity_on_validation": {"config": {
        "min_margin_over_popularity": -1.0}}}}


@pytest.fixture(scope="module")
def run(ml100k_slice, tmp_path_factory):
    settings = PipelineSettings(data_dir=tmp_path_factory.mktemp("sage"), data=ml100k_slice)
    with instance_for(settings.data_dir) as instance:
        result = materialize_graph(settings, instance=instance, selection="*item_embeddings",
                                   run_config=RUN)
        yield settings, result


def test_a_sage_towers_run_passes_its_checks_with_a_graph_of_the_training_events(run):
    settings, result = run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values()), [n for n, e in checks.items() if not e.passed]
    leakage = {k: v.value for k, v in
               checks["training_graph_holds_only_edges_before_each_example"].metadata.items()}
    split = result.output_for_node("evaluation_split")
    events = result.output_for_node("raw_tables").interactions
    before = int((events["event_timestamp"] < pd.Timestamp(split.notes["validation"]["cut"])).sum())
    assert leakage["edges"] == leakage["training_events"] == before
    assert leakage["rows_checked"] == 300 and leakage["rows_reading_a_graph"] > 100
    model = build_resources(settings)["registry"].model_store.load(
        result.output_for_node("two_tower_model").location)
    assert model.config.item_encoder == "sage"


def test_the_index_is_built_from_the_served_graph_vectors(run):
    settings, result = run
    store = build_resources(settings)["registry"].model_store
    artifact = store.load(result.output_for_node("two_tower_model").location)
    ids, vectors = store.read_embeddings(result.output_for_node("item_embeddings").model_version_id)
    items = result.output_for_node("raw_tables").items.set_index("item_id").loc[ids].reset_index()
    np.testing.assert_allclose(vectors, artifact.embed_items(items), atol=1e-6)
    # The graph changes the vectors of items with edges: it is in what the index serves.
    with torch.no_grad():
        artifact.model.item_tower.encoder.to_items.lin_l.weight.zero_()
    assert not np.allclose(vectors, artifact.embed_items(items), atol=1e-3)


def test_the_graph_check_fails_a_model_whose_graph_holds_events_after_its_training_data(
        run, tmp_path):
    settings, result = run
    registry = build_resources(settings)["registry"]
    ref = result.output_for_node("two_tower_model")
    artifact = registry.model_store.load(ref.location)
    edges = artifact.model.item_tower.known_graph
    edges[graph.SECOND, -5:] += 30 * 86_400  # the newest edges moved into the validation window
    artifact.save(tmp_path / "leaky")
    leaky = type(ref)(ref.id, str(tmp_path / "leaky"))
    check = training_graph_holds_only_edges_before_each_example(
        leaky, result.output_for_node("raw_tables"), result.output_for_node("evaluation_split"),
        registry)
    assert not check.passed and check.metadata["edges_are_the_training_events"].value is False
