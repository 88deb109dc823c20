"""The end-to-end demo on one machine: the whole Dagster graph in-process, then recommendations.

`twotower demo` (and so `make demo`) runs it: every asset from raw tables to promotion, with the
blocking checks between them, on the embedded Qdrant Edge backend under the data directory. The
answers come from the service's own engine over the live version, so they are exactly what
`twotower serve` answers for the same users. Rerunning builds a new version and promotes it only
if every check passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pipelines.defs.resources import PipelineSettings, build_resources
from pipelines.local import DAGSTER_DIR, instance_for, materialize_graph
from services.engine import Engine
from services.schemas import RecommendationRequest

log = logging.getLogger(__name__)
# What the demo's summary shows of the towers' training (metadata of the two_tower_model asset).
TRAINING_SUMMARY = ("model_version_id", "stopped_by", "improving_at_stop", "best_epoch", "steps",
                    "training_seconds", "val_ndcg@10", "popularity_val_ndcg@10",
                    "ease_val_ndcg@10", "margin_over_popularity", "margin_over_ease",
                    "test_ndcg@10")


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_id: int
    title: str
    score: float


def run_demo(spec: str, home: Path, *, users: int = 3, k: int = 5,
             train_minutes: float | None = None, tower: dict | None = None,
             train: dict | None = None, min_margin_over_popularity: float = 0.0
             ) -> list[Recommendation]:
    """Build and promote everything under `home` for the dataset `spec`; recommend for a few users.

    `tower` and `train` set TowerConfig and TrainConfig fields (e.g. `{"encoder": "mean"}`);
    `train_minutes` caps the towers' training (none by default); the towers are promoted only if
    they beat Popularity on validation by more than `min_margin_over_popularity`.
    `training_summary(home)` then says how that training ended and how it compared.
    """
    settings = PipelineSettings(data_dir=home, data=spec)
    towers = {"max_minutes": train_minutes, "tower": tower or {}, "train": train or {}}
    with instance_for(home) as instance:
        result = materialize_graph(settings, instance=instance, raise_on_error=False, run_config={
            "ops": {"two_tower_model": {"config": towers},
                    "two_tower_model_towers_beat_popularity_on_validation": {
                        "config": {"min_margin_over_popularity": min_margin_over_popularity}}},
            "loggers": {"console": {"config": {"log_level": "INFO"}}}})  # one line per step event
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    if not result.success:
        raise RuntimeError(f"the pipeline run failed (failed checks: {failed or 'none'}); the previous "
                           f"live version, if any, keeps serving. Details: DAGSTER_HOME={home / DAGSTER_DIR}")
    dataset = result.output_for_node("raw_tables")
    chosen = dataset.interactions["user_id"].value_counts().index[:users].tolist()
    return recommend(settings, chosen, titles=dataset.items.set_index("item_id")["title"], k=k)


def recommend(settings: PipelineSettings, user_ids: list[int], *, titles, k: int
              ) -> list[Recommendation]:
    """The service engine's answers (default filters: in stock, seen items excluded) for `user_ids`."""
    resources = build_resources(settings)
    with resources["registry"].open() as registry:
        engine = Engine(store=resources["feature_store"].open(), backend=registry.backend,
                             registry=registry)
        engine.refresh()
        answers = []
        for user_id in user_ids:
            for item in engine.recommend(RecommendationRequest(user_id=int(user_id), k=k)).items:
                answers.append(Recommendation(int(user_id), item.item_id, str(titles[item.item_id]),
                                              item.score))
    return answers


def training_summary(home: Path) -> dict:
    """The latest towers' training under `home`: what ended it, validation NDCG@10 beside
    Popularity's and EASE's with the margins, and test NDCG@10 (`TRAINING_SUMMARY` keys)."""
    with instance_for(home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("two_tower_model"))
    if event is None or event.asset_materialization is None:
        raise ValueError(f"{home}: no two_tower_model has been materialized there; run the demo first")
    metadata = event.asset_materialization.metadata
    return {key: metadata[key].value for key in TRAINING_SUMMARY if key in metadata}
