"""The end-to-end demo on one machine: the whole Dagster graph in-process, then recommendations.

`twotower demo` (and so `make demo`) runs it: every asset from raw tables to promotion, with the
blocking checks between them, on the embedded Qdrant Edge backend under the data directory. The
answers come from the service's own engine over the live version, so they are exactly what
`twotower serve` answers for the same users. Rerunning builds a new version and promotes it only
if every check passes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from pipelines.defs.resources import PipelineSettings, build_resources
from pipelines.local import DAGSTER_DIR, instance_for, materialize_graph
from services.engine import Engine, load_ranker
from services.schemas import RecommendationRequest

log = logging.getLogger(__name__)
METRICS = ("ndcg@10", "recall@10", "recall@100")  # the test window's, as the model records them


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_id: int
    title: str
    score: float


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    figures: dict[str, object]


@dataclass
class Demo:
    """What a run built and answered: the summary a person reads, and the recommendations."""

    recommendations: list[Recommendation] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)
    model_version: int | None = None
    index_version: int | None = None
    training: str = ""  # how training ended: steps, best step, what stopped it
    ranking: str = ""  # "ranker" or "retrieval order: <why>", as the service reports it


class PipelineFailed(RuntimeError):
    """The run failed; the message names the step, its cause and the failed checks."""

    def __init__(self, message: str, checks: list[Check]) -> None:
        super().__init__(message)
        self.checks = checks


def run_demo(spec: str, home: Path, *, users: int = 3, k: int = 5,
             train_minutes: float | None = None, tower: dict | None = None,
             train: dict | None = None, min_margin_over_popularity: float = 0.0,
             replace: bool = False, verbose: bool = False) -> Demo:
    """Build and promote everything under `home` for the dataset `spec`; recommend for a few users.

    `tower` and `train` set TowerConfig and TrainConfig fields (e.g. `{"encoder": "mean"}`);
    `train_minutes` caps the towers' training (none by default); they are promoted only if they beat
    Popularity on validation by more than `min_margin_over_popularity`; `replace` lets another
    dataset's features overwrite the home's (`index.home`). Dagster's log
    shows every step event when `verbose`; otherwise a progress bar counts the steps.
    """
    settings = PipelineSettings(data_dir=home, data=spec)
    towers = {"max_minutes": train_minutes, "tower": tower or {}, "train": train or {}}
    gate = {"min_margin_over_popularity": min_margin_over_popularity}
    run_config = {"ops": {"two_tower_model": {"config": towers},
                          "two_tower_model_towers_beat_popularity_on_validation": {"config": gate},
                          "feature_tables": {"config": {"replace": replace}}},
                  # quiet: a failure ends as PipelineFailed's one line, the summary says the rest
                  "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}},
                              "progress": {}}}  # Dagster starts only the loggers named here
    with instance_for(home) as instance, _StepBar(enabled=not verbose) as bar:
        result = materialize_graph(settings, instance=instance, raise_on_error=False,
                                   run_config=run_config, loggers={"progress": bar.logger()})
    checks = checks_of(result)
    if not result.success:
        failed = [c.name for c in checks if not c.passed]
        raise PipelineFailed(f"the pipeline run failed{failure_cause(result)} (failed checks: "
                             f"{', '.join(failed) or 'none'}); the previous live version, if any, "
                             f"keeps serving. Details: DAGSTER_HOME={home / DAGSTER_DIR}", checks)
    demo = _summary(settings, checks)
    dataset = result.output_for_node("raw_tables")
    chosen = dataset.interactions["user_id"].value_counts().index[:users].tolist()
    demo.recommendations = recommend(settings, chosen, titles=dataset.items.set_index("item_id")["title"],
                                     k=k)
    return demo


def checks_of(result: dg.ExecuteInProcessResult) -> list[Check]:
    """Every check the run evaluated, with its figures."""
    return [Check(c.check_name, c.passed, {key: v.value for key, v in c.metadata.items()})
            for c in result.get_asset_check_evaluations()]


def failure_cause(result: dg.ExecuteInProcessResult) -> str:
    """': step X: <the innermost error>' of the first failed step, or ''."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            message = error.message.strip().splitlines()[0]
            return f": step {event.step_key}: {error.cls_name}: {message.split(': ', 1)[-1]}"
    return ""


def _summary(settings: PipelineSettings, checks: list[Check]) -> Demo:
    """The live model and index versions, their test metrics and how training ended."""
    registry = build_resources(settings)["registry"]
    with registry.open() as versions:
        live = versions.live()
        model = versions.get_model(live.model_version_id)
    metrics = registry.model_store.evaluated(model.location).metrics  # the validated fit
    served = registry.model_store.load(model.location).metrics
    training = (f"{metrics['steps']} steps, {len(metrics['history'])} validations (best at step "
                f"{metrics['best_step']}), stopped by {metrics['stopped_by']}"
                + (" while validation still improved" if metrics.get("improving_at_stop") else "")
                + f"; popularity prior {metrics.get('popularity_prior', 0.0):g}"
                + (f"; served refit on every event: {served['steps']} steps, stopped by "
                   f"{served['refit_stopped_by']}" if "refit_stopped_by" in served else ""))
    test = metrics.get("test", {})
    return Demo(checks=checks, test={m: float(test[m]) for m in METRICS if m in test},
                model_version=model.id, index_version=live.id, training=training,
                ranking=load_ranker(model.location)[1])


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


class _StepBar(logging.Handler):
    """A tqdm bar over the run's steps, named after the running one (silent off a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        super().__init__(logging.DEBUG)
        self.bar = tqdm(desc="pipeline", unit="step", disable=not (enabled and sys.stderr.isatty()),
                        bar_format="{desc}: {n} steps done [{elapsed}]")

    def __enter__(self) -> _StepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None:
            return
        if event.is_step_start:
            self.bar.set_description(f"pipeline: {event.step_key}")
        elif event.is_step_success or event.is_step_failure or event.is_step_skipped:
            self.bar.update(1)

    def logger(self) -> dg.LoggerDefinition:
        def create(_context: dg.InitLoggerContext) -> logging.Logger:
            progress = logging.Logger("twotower.demo.progress", logging.DEBUG)
            progress.addHandler(self)
            return progress

        return dg.LoggerDefinition(create)
