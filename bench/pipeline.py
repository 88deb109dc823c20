"""Benchmark: the Dagster graph in-process; the whole graph, or the features' daily run against a rebuild.

    twotower bench pipeline --data=movielens-100k:../shared/datasets/ml-100k
    twotower bench pipeline --data=synthetic:items=100000,users=100000,events=1000000
    twotower bench pipeline --mode=daily --data=synthetic:shop-1m --new_events=100000

`graph` runs `pipelines.local.materialize_graph` over everything on a fresh data directory (embedded
Qdrant Edge, SQLite) and reads each step's start and end from the run's step statistics; training is
capped by max_minutes.

`daily` times the features stage twice in one process, on one data directory:
1. the full rebuild: raw tables, every day's feature tables, `feast apply`, the training examples of
   every event, the online store loaded up to the last event;
2. `new_events` interactions on the day after the last are written to the service's event log (one
   SQL insert: setup, not timed), then the daily job (`daily_features_job`: raw tables, the day's
   feature tables and training examples, the online store loaded incrementally).
The dataset is first written as a `generic:` parquet folder, which both runs load (a synthetic
shop would otherwise be generated anew by each). Also printed: training-frame rows per second of
both runs and, on `stock_rows` sampled events, of Feast's stock join against the ASOF join on the
same tables.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere; bench/ is not an installed package

from bench._args import parse  # noqa: E402 (after the path insert)

DEFAULTS = {"data": "movielens-100k:../shared/datasets/ml-100k", "max_minutes": 5.0, "seed": 0,
            "mode": "graph", "new_events": 100_000, "stock_rows": 50_000}
FEATURES = ["raw_tables", "feature_tables", "feature_repository", "training_examples", "online_features"]


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its end, from the run's step statistics."""
    return {stat.step_key: round(stat.end_time - stat.start_time, 1)
            for stat in instance.get_run_step_stats(run_id) if stat.end_time and stat.start_time}


def whole_graph(config: dict) -> dict:
    import torch

    from pipelines.defs.resources import PipelineSettings
    from pipelines.local import instance_for, materialize_graph

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
    return {"data": config["data"], "max_minutes": config["max_minutes"], "success": result.success,
            "total_s": total, "steps_s": steps, "failed_checks": failed}


def write_generic(dataset, folder: Path) -> str:
    """The dataset as a `generic:` folder of parquet tables."""
    folder.mkdir(parents=True)
    for name in ("interactions", "items", "users", "stock"):
        getattr(dataset, name).to_parquet(folder / f"{name}.parquet")
    return f"generic:{folder}"


def new_day(dataset, count: int, seed: int) -> list[dict]:
    """`count` interactions on the day after the dataset's last event: users and items drawn like
    its events, at whole seconds (so some share an instant)."""
    rng = np.random.default_rng(seed)
    day = dataset.last_event.floor("D") + pd.Timedelta(days=1)
    drawn = dataset.interactions.iloc[rng.integers(0, len(dataset.interactions), size=count)]
    other = dataset.interactions.iloc[rng.integers(0, len(dataset.interactions), size=count)]
    seconds = np.sort(rng.integers(0, 86_400, size=count))
    return [{"user_id": int(u), "item_id": int(i), "ts": (day + pd.Timedelta(seconds=int(s))).isoformat()}
            for u, i, s in zip(drawn["user_id"], other["item_id"], seconds, strict=True)]


def day_end(bodies: list[dict]) -> str:
    """The midnight after the new day: the daily job loads the online store up to it."""
    return (pd.Timestamp(bodies[-1]["ts"]).floor("D") + pd.Timedelta(days=1)).isoformat()


def log_events(home: Path, bodies: list[dict]) -> None:
    """Write interactions into the service's event log in one transaction."""
    from sqlalchemy import insert

    from index.events import EventLog, events

    log = EventLog(data_dir=home)
    now = datetime.now(UTC)
    with log.engine.begin() as db:
        db.execute(insert(events), [{"key": f"bench-day-{n}", "kind": "interaction", "body": body,
                                     "logged_at": now} for n, body in enumerate(bodies)])
    log.close()


def frame_rows_per_s(repo: Path, entities: pd.DataFrame) -> dict[str, int]:
    """Training-frame rows per second of Feast's stock join and of the ASOF join, same rows."""
    from feature_repo.store import FeatureStoreConfig, open_store, training_frame

    rates = {}
    for kind in ("duckdb", "asof"):
        store = open_store(FeatureStoreConfig(repo_dir=repo, offline_store=kind))
        started = time.perf_counter()
        # Feast's join fans out over each user's rows: it ran in chunks of 25,000 rows on main.
        training_frame(store, entities, chunk_rows=25_000 if kind == "duckdb" else 500_000)
        rates[kind] = round(len(entities) / (time.perf_counter() - started))
    return rates


def metadata_of(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def daily_against_rebuild(config: dict) -> dict:
    from feature_repo.datasets import load
    from feature_repo.store import ENTITY_COLUMNS
    from pipelines.defs.resources import PipelineSettings
    from pipelines.defs.schedules import daily_features_job
    from pipelines.local import instance_for, materialize_graph

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        dataset = load(config["data"])
        settings = PipelineSettings(data_dir=home / "home", data=write_generic(dataset, home / "dataset"))
        bodies = new_day(dataset, config["new_events"], config["seed"])
        sample = dataset.interactions[ENTITY_COLUMNS].sample(
            min(config["stock_rows"], len(dataset.interactions)), random_state=config["seed"])
        del dataset
        runs = {}
        with instance_for(settings.data_dir) as instance:
            for name, selection, run_config in (
                    ("rebuild", FEATURES, None),
                    ("daily", daily_features_job.selection, {"ops": {"online_features": {"config": {
                        "incremental": True, "end": day_end(bodies)}}}})):
                if name == "daily":
                    log_events(settings.data_dir, bodies)
                started = time.perf_counter()
                result = materialize_graph(settings, instance=instance, selection=selection,
                                           run_config=run_config)
                seconds = time.perf_counter() - started
                examples = metadata_of(result, "training_examples")
                runs[name] = {"total_s": round(seconds, 1), "steps_s": step_seconds(instance, result.run_id),
                              "days_recomputed": metadata_of(result, "feature_tables")["days_recomputed"],
                              "frame_rows": examples["rows_joined"],
                              "frame_rows_per_s": (round(examples["rows_joined"] / examples["seconds"])
                                                   if examples["rows_joined"] else 0),
                              "checks_passed": all(e.passed for e in result.get_asset_check_evaluations())}
        stock_sample = frame_rows_per_s(settings.data_dir / "feature_repo", sample)
    return {"data": config["data"], "new_events": config["new_events"], **runs,
            "speedup": round(runs["rebuild"]["total_s"] / runs["daily"]["total_s"], 1),
            "sample_rows": len(sample), "sample_frame_rows_per_s": stock_sample}


def main(argv: list[str] | None = None) -> None:
    config = parse(sys.argv[1:] if argv is None else argv, DEFAULTS)
    logging.basicConfig(level=logging.WARNING)
    if config["mode"] not in ("graph", "daily"):
        raise SystemExit(f"--mode={config['mode']!r}: graph or daily")
    run = whole_graph if config["mode"] == "graph" else daily_against_rebuild
    print(json.dumps(run(config), default=str))


if __name__ == "__main__":
    main()
