"""The promotion checks fail on the defects they claim to catch (called directly on real outputs)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from index.model_store import EVALUATED
from pipelines.defs.checks import (
    BaselineGateConfig,
    towers_beat_popularity_on_validation,
    training_examples_have_no_leakage,
    training_loss_is_finite_and_decreasing,
)
from pipelines.defs.resources import build_resources
from pipelines.defs.values import ModelVersionRef, TrainingExamples
from towers import evaluate
from towers.artifact import Artifact
from towers.prior import PopularityPrior


def model_with_history(graph, tmp_path, losses: list[float], fit: str = EVALUATED) -> ModelVersionRef:
    """A copy of the graph's model whose evaluated fit (or, with `fit` "", served refit) recorded
    per-epoch losses `losses`."""
    model = graph.result.output_for_node("two_tower_model")
    location = tmp_path / "model"
    shutil.copytree(model.location, location)
    judged = location / fit / "artifact.json"
    meta = json.loads(judged.read_text())
    meta["metrics"]["history"] = [{"epoch": i, "loss": loss, "val": 0.0, "seconds": i}
                                  for i, loss in enumerate(losses)]
    judged.write_text(json.dumps(meta))
    return ModelVersionRef(model.id, str(location))


def test_loss_check_passes_a_loss_that_falls_below_chance(graph, tmp_path):
    model = model_with_history(graph, tmp_path, [6.0, 5.0])
    assert training_loss_is_finite_and_decreasing(model, build_resources(graph.settings)["registry"]).passed


def test_loss_check_fails_a_nan_or_a_rising_loss(graph, tmp_path):
    registry = build_resources(graph.settings)["registry"]
    for losses in ([6.0, float("nan")], [5.0, 5.5], [99.0]):
        result = training_loss_is_finite_and_decreasing(
            model_with_history(graph, tmp_path / str(losses), losses), registry)
        assert not result.passed, losses


def test_loss_check_fails_a_nan_in_the_served_refits_losses(graph, tmp_path):
    registry = build_resources(graph.settings)["registry"]
    result = training_loss_is_finite_and_decreasing(
        model_with_history(graph, tmp_path, [6.0, float("nan")], fit=""), registry)
    assert not result.passed and result.metadata["finite"].value
    assert not result.metadata["refit_finite"].value


def test_leakage_check_passes_the_feast_rows(graph):
    examples = graph.result.output_for_node("training_examples")
    result = training_examples_have_no_leakage(examples, graph.dataset,
                                               build_resources(graph.settings)["feature_store"])
    assert result.passed and result.metadata["rows_checked"].value == 300


def test_leakage_check_catches_a_history_that_includes_the_row_itself(graph, tmp_path):
    frame = pd.read_parquet(graph.result.output_for_node("training_examples").path)
    frame["recent_item_ids"] = [np.append(h, i)  # the row's own item leaks into its history
                                for h, i in zip(frame["recent_item_ids"], frame["item_id"], strict=True)]
    leaky = tmp_path / "leaky.parquet"
    frame.to_parquet(leaky)
    result = training_examples_have_no_leakage(TrainingExamples(str(leaky)), graph.dataset,
                                               build_resources(graph.settings)["feature_store"])
    assert not result.passed and result.metadata["history_mismatches"].value > 0


def popularity_gate(graph, model: ModelVersionRef, margin: float = 0.0):
    return towers_beat_popularity_on_validation(
        BaselineGateConfig(min_margin_over_popularity=margin), model, graph.dataset,
        graph.result.output_for_node("evaluation_split"), build_resources(graph.settings)["registry"])


def test_popularity_gate_compares_on_validation_and_reports_the_margin_over_ease(graph):
    result = popularity_gate(graph, graph.result.output_for_node("two_tower_model"))
    metadata = {k: v.value for k, v in result.metadata.items()}
    assert result.passed == (metadata["val_ndcg@10"] > metadata["popularity_val_ndcg@10"])
    assert metadata["margin_over_ease"] == metadata["val_ndcg@10"] - metadata["ease_val_ndcg@10"]
    assert metadata["ease_lambda"] > 0
    # the gate scores the evaluated towers as served, prior included, and reports them without it
    artifact = Artifact.load(Path(graph.result.output_for_node("two_tower_model").location, EVALUATED))
    assert metadata["popularity_prior"] == artifact.prior.weight == 0.1
    alone = dataclasses.replace(artifact, prior=PopularityPrior.off())
    validation = graph.result.output_for_node("evaluation_split").validation
    assert metadata["val_ndcg@10_without_prior"] == evaluate.evaluate(
        evaluate.two_tower(alone, graph.dataset.items), validation)["ndcg@10"]
    assert metadata["val_ndcg@10"] == evaluate.evaluate(
        evaluate.two_tower(artifact, graph.dataset.items), validation)["ndcg@10"]
    margin = metadata["margin_over_popularity"]
    assert popularity_gate(graph, graph.result.output_for_node("two_tower_model"), margin - 0.01).passed


def test_popularity_gate_fails_towers_that_do_not_beat_popularity(graph, tmp_path):
    model = graph.result.output_for_node("two_tower_model")
    artifact = Artifact.load(Path(model.location, EVALUATED))
    with torch.no_grad():  # every vector zero: all items tie, ranked in catalogue order
        for param in artifact.model.parameters():
            param.zero_()
    artifact.save(tmp_path / "blank")  # a version without a refit: its own towers are judged
    result = popularity_gate(graph, ModelVersionRef(model.id, str(tmp_path / "blank")))
    assert not result.passed
    assert result.metadata["margin_over_popularity"].value <= 0
