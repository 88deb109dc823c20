"""The end-to-end demo on one machine: the whole Dagster graph in-process, then recommendations.

`twotower demo` (and so `make demo`) runs it: every asset from raw tables to promotion, with the
blocking checks between them, on the embedded Qdrant Edge backend under the data directory. The
runs are recorded in `<data dir>/dagster`, so `DAGSTER_HOME=<data dir>/dagster dagster dev` shows
them. Rerunning builds a new version and promotes it only if every check passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from feature_repo.store import online_user_features
from pipelines.defs.resources import PipelineSettings, build_resources
from pipelines.index import SearchFilters
from pipelines.registry import Registry
from towers.artifact import Artifact

log = logging.getLogger(__name__)

DAGSTER_DIR = "dagster"  # DAGSTER_HOME inside the data directory


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_id: int
    title: str
    score: float


def instance_for(home: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance in `<home>/dagster` (runs, event log, stored asset values)."""
    folder = (home / DAGSTER_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(folder))


def materialize_graph(settings: PipelineSettings, *, instance: dg.DagsterInstance,
                      selection: str = "*", run_config: dict | None = None,
                      raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize the selected assets and their checks in this process with `settings`' resources."""
    from pipelines.definitions import defs

    return dg.materialize([*defs.assets, *defs.asset_checks], selection=selection,
                          resources=build_resources(settings), instance=instance,
                          run_config=run_config, raise_on_error=raise_on_error)


def run_demo(spec: str, home: Path, *, users: int = 3, k: int = 5, train_minutes: float = 1.0,
             overrides: tuple[str, ...] = ()) -> list[Recommendation]:
    """Build and promote everything under `home` for the dataset `spec`; recommend for a few users.

    `overrides` are `key=value` settings of the towers (e.g. `encoder=mean`).
    """
    settings = PipelineSettings(data_dir=home, data=spec)
    resources = build_resources(settings)
    towers = {"max_minutes": train_minutes, "overrides": list(overrides)}
    with instance_for(home) as instance:
        result = materialize_graph(settings, instance=instance, raise_on_error=False, run_config={
            "ops": {"two_tower_model": {"config": towers}},
            "loggers": {"console": {"config": {"log_level": "INFO"}}}})  # one line per step event
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    if not result.success:
        raise RuntimeError(f"the pipeline run failed (failed checks: {failed or 'none'}); the previous "
                           f"live version, if any, keeps serving. Details: DAGSTER_HOME={home / DAGSTER_DIR}")
    dataset, store = result.output_for_node("raw_tables"), resources["feature_store"].open()
    with resources["registry"].open() as registry:
        return recommend(registry, store, dataset.interactions, dataset.items, users=users, k=k)


def recommend(registry: Registry, store, interactions: pd.DataFrame, items: pd.DataFrame, *,
              users: int, k: int) -> list[Recommendation]:
    """Top-k unseen in-stock items from the live version for the `users` most active users."""
    artifact = Artifact.load(registry.live_model().location)
    chosen = interactions["user_id"].value_counts().index[:users].tolist()
    frame = online_user_features(store, chosen)
    frame["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    titles = items.set_index("item_id")["title"]
    answers = []
    for row, vector in zip(frame.itertuples(), artifact.embed_users(frame), strict=True):
        seen = frozenset(int(i) for i in row.recent_item_ids)
        for hit in registry.store.search(vector, k=k, filters=SearchFilters(exclude_ids=seen)):
            answers.append(Recommendation(row.user_id, hit.item_id, str(titles[hit.item_id]), hit.score))
    return answers
