"""Stage 2, training: the evaluation split, the towers (a registered model version) and the re-ranker.

The towers learn from events before the split's inner cut and stop early on the validation window,
where Popularity and EASE fitted on the same events are scored too: the towers must beat Popularity
there to be promoted (`checks.towers_beat_popularity_on_validation`). The re-ranker learns from the
towers' candidates for queries at cuts between the inner and the test cut; both are measured on the
test window, which neither has seen, and that test NDCG@10 is compared with the live version's.
"""

import time
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import field_validator

from feature_repo.datasets import Dataset
from index.home import FINGERPRINT
from index.model_store import ranker_dir
from pipelines.defs.features import feature_repository
from pipelines.defs.plots import figure, markdown_image, table
from pipelines.defs.resources import FeatureStoreResource, RegistryResource
from pipelines.defs.values import ModelVersionRef, TrainingExamples
from towers import baselines, evaluate
from towers.config import load_preset, override
from towers.features import with_features
from towers.model import TowerConfig
from towers.ranker import RankerConfig, train_ranker, window_queries
from towers.ranker.model import refuse_existing
from towers.train import TrainConfig, fit, refit

GROUP = "training"


@dg.asset(group_name=GROUP, deps=[feature_repository], kinds={"feast", "pandas"})
def evaluation_split(raw_tables: Dataset, feature_store: FeatureStoreResource) -> dg.Output[evaluate.Split]:
    """Train events, validation queries (inner cut) and test queries (outer cut), with Feast features.

    Each query carries the user's profile and history as Feast knows them at its lookup time.
    """
    split = with_features(evaluate.make_split(raw_tables, "temporal"), feature_store.open())
    notes = split.notes
    return dg.Output(split, metadata={
        "train_events": len(split.train), "test_cut": notes["cut"],
        "validation_cut": notes["validation"]["cut"], "validation_users": notes["validation"]["users"],
        "test_users": notes["users"], "test_targets": notes["targets"]})


class TowersConfig(dg.Config):
    """Per-run training knobs; `tower` and `train` set TowerConfig and TrainConfig fields, validated
    by those models when the run config is read."""

    preset: str = ""  # a TOML preset such as towers/configs/ml100k.toml
    max_minutes: float | None = None  # wall-clock cap on each fit (first, refit); none: schedules end them
    tower: dict[str, Any] = {}  # TowerConfig fields, e.g. {"encoder": "mean", "item_encoder": "sage"}
    train: dict[str, Any] = {}  # TrainConfig fields, e.g. {"epochs": 2}

    @field_validator("tower")
    @classmethod
    def _tower(cls, value: dict[str, Any]) -> dict[str, Any]:
        override([TowerConfig()], value)
        return value

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        override([TrainConfig()], value)
        return value


@dg.asset(group_name=GROUP, kinds={"pytorch"})
def two_tower_model(context: dg.AssetExecutionContext, config: TowersConfig,
                    training_examples: TrainingExamples,
                    raw_tables: Dataset, evaluation_split: evaluate.Split,
                    feature_store: FeatureStoreResource,
                    registry: RegistryResource) -> dg.Output[ModelVersionRef]:
    """User and item towers, saved as a model version in the registry.

    A first fit learns from the training examples before the validation cut (Feast rows, so the
    history window is the feature store's `history_length`) and stops early on the validation
    queries, on which Popularity and EASE are scored too (`baselines`); its test figures come from
    the test window. The checks and the re-ranker judge it. The version serves its refit on every
    example, the newest writes included, ended where validation had the first fit's best
    (`towers.train.refit`); it carries the first fit's figures.
    """
    tower, train = TowerConfig(), TrainConfig()
    if config.preset:
        tower, train = override([tower, train], load_preset(config.preset))
    [tower], [train] = override([tower], config.tower), override([train], config.train)
    if config.max_minutes is not None:
        train.max_minutes = config.max_minutes
    tower.max_len = feature_store.config.history_length  # the Feast rows hold this many items
    items, split = raw_tables.items, evaluation_split
    every = pd.read_parquet(training_examples.path)
    frame = every[every["event_timestamp"] < pd.Timestamp(split.notes["validation"]["cut"])]
    context.log.info("training on %d of the training examples (before %s)", len(frame),
                     split.notes["validation"]["cut"])
    first = fit(frame, items, tower=tower, train=train,
                validate=evaluate.Validator(split.validation, items))
    metrics = first.metrics
    if metrics["stopped_by"] != "early_stopping" and metrics["improving_at_stop"]:
        context.log.warning("the %s ended training while validation was still improving",
                            metrics["stopped_by"])
    started = time.perf_counter()
    metrics["baselines"] = baselines.validation_scores(split, items)
    test = evaluate.evaluate(evaluate.two_tower(first, items), split.test)
    metrics["test"] = test
    evaluation_seconds = time.perf_counter() - started
    context.log.info("refitting on all %d training examples", len(every))
    served = refit(first, every, items, tower=tower, train=train)
    served.metrics.update(baselines=metrics["baselines"], test=test)
    if served.metrics["refit_stopped_by"] == "cap":
        context.log.warning("max_minutes ended the refit at step %d, before the share of its "
                            "schedule where validation had its best: it serves a learning rate "
                            "above the validated best's", served.metrics["steps"])
    with registry.open() as reg:
        model = registry.model_store.save(
            reg, served, evaluated=first,
            config={"data": raw_tables.name, FINGERPRINT: raw_tables.fingerprint,
                    "protocol": "temporal", "tower": served.config.model_dump(),
                    "train": served.train_config})
    context.log.info("model version %d: test NDCG@10 %.4f", model.id, test["ndcg@10"])
    history = metrics["history"]
    return dg.Output(ModelVersionRef(model.id, model.location), metadata={
        "model_version_id": model.id, "location": dg.MetadataValue.path(model.location),
        "test_ndcg@10": test["ndcg@10"], "test_recall@10": test["recall@10"],
        "test_recall@100": test["recall@100"], "test_users": test["users"],
        **validation_metadata(metrics),
        "stopped_by": metrics["stopped_by"], "improving_at_stop": metrics["improving_at_stop"],
        "popularity_prior": metrics["popularity_prior"],
        "best_epoch": metrics["best_epoch"], "epochs": history[-1]["epoch"] + 1,
        "steps": metrics["steps"], "training_seconds": metrics["seconds_total"],
        "refit_examples": len(every), "refit_steps": served.metrics["steps"],
        "refit_stopped_by": served.metrics["refit_stopped_by"],
        "refit_seconds": served.metrics["refit_seconds"],
        "evaluation_seconds": round(evaluation_seconds, 2),
        "history": table(history), "training_curve": _curve(history)})


def validation_metadata(metrics: dict) -> dict[str, Any]:
    """The towers' validation NDCG@10 beside Popularity's and EASE's, and the margins."""
    scores = metrics["baselines"]
    towers = metrics["val"]
    result = {"val_ndcg@10": towers, "popularity_val_ndcg@10": scores["popularity"],
              "margin_over_popularity": towers - scores["popularity"]}
    if "ease" in scores:
        result |= {"ease_val_ndcg@10": scores["ease"], "ease_lambda": scores["ease_lambda"],
                   "margin_over_ease": towers - scores["ease"]}
    else:
        result["ease_val_ndcg@10"] = f"not scored: over {baselines.EASE_MAX_ITEMS} items"
    return result


def _curve(history: list[dict]) -> dg.MetadataValue:
    fig, loss_ax = figure()
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss", color="tab:blue")
    val_ax = loss_ax.twinx()
    val_ax.plot(epochs, [h["val"] for h in history], "s--", color="tab:orange")
    val_ax.set_ylabel("validation NDCG@10", color="tab:orange")
    loss_ax.set_title("training curve")
    return markdown_image(fig, "training curve")


@dg.asset(group_name=GROUP, kinds={"lightgbm"})
def reranker(context: dg.AssetExecutionContext, two_tower_model: ModelVersionRef, raw_tables: Dataset,
             evaluation_split: evaluate.Split, feature_store: FeatureStoreResource,
             registry: RegistryResource) -> dg.MaterializeResult:
    """The LambdaMART re-ranker over the towers' candidates, saved in the model version's ranker dir."""
    started = time.perf_counter()
    path = ranker_dir(two_tower_model.location)
    refuse_existing(path)  # before training, not after it
    # Trained on the candidates of the evaluated fit: the served refit has seen these windows.
    model = train_ranker(registry.model_store.evaluated(two_tower_model.location), raw_tables.items,
                         store=feature_store.open(), train=window_queries(evaluation_split.test_train),
                         holdout=evaluation_split.test, config=RankerConfig())
    model.save(path)
    if not model.improves:
        context.log.warning("the re-ranker does not beat retrieval order on the holdout beyond its "
                            "noise (gain's lower bound %+.4f): the service keeps retrieval order",
                            model.metrics["ndcg10_gain_low"])
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "improves": model.improves,
        **{k: v for k, v in model.metrics.items() if isinstance(v, int | float)},
        "seconds": round(time.perf_counter() - started, 2)})
