"""Benchmark: wall time of every asset (and check) and of the whole Dagster graph, in-process.

    twotower bench pipeline --data=movielens-100k:../shared/datasets/ml-100k
    twotower bench pipeline --data=synthetic:items=100000,users=100000,events=1000000

Runs `pipelines.local.materialize_graph` on a fresh data directory (embedded Qdrant Edge, SQLite)
and reads each step's start and end from the run's step statistics. Training is capped by max_minutes.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; bench/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"data": "movielens-100k:../shared/datasets/ml-100k", "max_minutes": 5.0, "seed": 0}


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its end, from the run's step statistics."""
    return {stat.step_key: round(stat.end_time - stat.start_time, 1)
            for stat in instance.get_run_step_stats(run_id) if stat.end_time and stat.start_time}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    import torch

    from pipelines.defs.resources import PipelineSettings
    from pipelines.local import instance_for, materialize_graph

    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(config["seed"])
    with tempfile.TemporaryDirectory() as home:
        settings = PipelineSettings(data_dir=Path(home), data=config["data"])
        started = time.perf_counter()
        with instance_for(Path(home)) as instance:
            result = materialize_graph(settings, instance=instance, raise_on_error=False, run_config={
                "ops": {"two_tower_model": {"config": {"max_minutes": config["max_minutes"],
                                                       "train": {"seed": config["seed"]}}}}})
            total = round(time.perf_counter() - started, 1)
            steps = step_seconds(instance, result.run_id)
    failed = {e.check_name: {k: v.value for k, v in e.metadata.items()}
              for e in result.get_asset_check_evaluations() if not e.passed}
    print(json.dumps({"data": config["data"], "max_minutes": config["max_minutes"],
                      "success": result.success, "total_s": total, "steps_s": steps,
                      "failed_checks": failed}, default=str))


if __name__ == "__main__":
    main()
