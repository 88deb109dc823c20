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
    """The persistent Dagster instance in `<home>/dagster` (runs, event log, stored asset values)."""
    folder = (home / DAGSTER_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(folder))


def materialize_graph(settings: PipelineSettings, *, instance: dg.DagsterInstance,
                      selection: str | dg.AssetSelection = "*", run_config: dict | None = None,
                      raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize the selected assets and their checks in this process with `settings`' resources."""
    from pipelines.definitions import defs

    return dg.materialize([*defs.assets, *defs.asset_checks], selection=selection,
                          resources=build_resources(settings), instance=instance,
                          run_config=run_config, raise_on_error=raise_on_error)
