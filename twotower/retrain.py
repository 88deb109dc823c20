"""`twotower retrain`: the scheduled retraining job, run in this process on a data directory.

Reads the dataset plus the event log, trains, builds and checks a new index version, promotes it
only if every blocking check passed, then prunes old versions (keep 3).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from index.registry import Registry
from pipelines.defs.resources import PipelineSettings, RawTablesStore
from pipelines.defs.schedules import retraining_job
from pipelines.local import instance_for, materialize_graph
from twotower.demo import Check, checks_of, failure_cause


@dataclass(frozen=True)
class Retrained:
    success: bool
    cause: str  # ': step X: <error>' when the run failed, else ''
    checks: list[Check]
    live_index_version: int | None
    live_model_version: int | None


def retrain(home: Path, data: str | None = None, *, replace: bool = False, verbose: bool = False,
            run_config: dict | None = None) -> Retrained:
    """Run the retraining job on `home`: dataset spec `data`, default TWOTOWER_DATA, else the
    dataset the home's last run read. `replace` lets another dataset's features overwrite the
    home's (`index.home`); Dagster's log shows every step event only when `verbose`."""
    stored = RawTablesStore(data_dir=str(home)).manifest()
    data = data or os.environ.get("TWOTOWER_DATA") or (stored or {}).get("identity")
    settings = PipelineSettings(data_dir=home, **({"data": data} if data else {}))
    run_config = copy.deepcopy(run_config or {})  # the caller's settings win over these defaults
    run_config.setdefault("ops", {}).setdefault("feature_tables", {}).setdefault("config", {}) \
        .setdefault("replace", replace)
    run_config.setdefault("loggers", {}).setdefault(  # step events are DEBUG records
        "console", {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}})
    with instance_for(home) as instance:
        result = materialize_graph(settings, instance=instance, selection=retraining_job.selection,
                                   run_config=run_config, raise_on_error=False)
    registry = Registry(settings.registry_url, data_dir=home)
    try:
        live = registry.live()
    finally:
        registry.close()
    return Retrained(result.success, failure_cause(result), checks_of(result),
                     live.id if live else None, live.model_version_id if live else None)
