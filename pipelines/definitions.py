"""The Dagster code location: one `Definitions` object loaded from `pipelines/defs/`.

`dagster dev` (from the repository root) and `dagster asset materialize -m pipelines.definitions`
find it through `[tool.dagster]` in pyproject.toml; docs/pipelines.md describes the graph.
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs")
