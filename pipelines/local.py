"""The Dagster graph run in this process, on a data directory's own persistent instance.

`twotower demo`, `bench/pipeline.py` and the tests run the graph this way. Runs are recorded in
`<data dir>/dagster`, so `DAGSTER_HOME=<data dir>/dagster dagster dev` shows them.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipelines.defs.resources import PipelineSettings, build_resources

DAGSTER_DIR = "dagster"  # DAGSTER_HOME inside the data directory


def instance_for(home: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance in `<home>/dagster` (runs, event log, stored asset values),
    telemetry off."""
    folder = (home / DAGSTER_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(folder),
                                         overrides={"telemetry": {"enabled": False}})


def materialize_graph(settings: PipelineSettings, *, instance: dg.DagsterInstance,
                      selection: str | dg.AssetSelection = "*", run_config: dict | None = None,
                      raise_on_error: bool = True,
                      loggers: dict[str, dg.LoggerDefinition] | None = None
                      ) -> dg.ExecuteInProcessResult:
    """Materialize the selected assets and their checks in this process with `settings`' resources.

    `loggers` are added to Dagster's console logger (e.g. a progress display).
    """
    from pipelines.definitions import defs

    if not loggers:
        return dg.materialize([*defs.assets, *defs.asset_checks], selection=selection,
                              resources=build_resources(settings), instance=instance,
                              run_config=run_config, raise_on_error=raise_on_error)
    job = "twotower_graph"
    graph = dg.Definitions(jobs=[dg.define_asset_job(job, selection=selection)],
                           assets=[*defs.assets, *defs.asset_checks],
                           resources=build_resources(settings),
                           loggers={"console": dg.colored_console_logger, **loggers})
    return graph.resolve_job_def(job).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=raise_on_error)
