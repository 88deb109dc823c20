"""The `twotower` command is installed and documents its subcommands."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench._args import parse
from twotower.cli import main


def test_twotower_help_lists_commands():
    done = subprocess.run([str(Path(sys.executable).parent / "twotower"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("features", "demo", "eval", "bench"):
        assert command in done.stdout


def test_unknown_benchmark_is_named(capsys):
    with pytest.raises(SystemExit, match="no benchmark 'nope'"):
        main(["bench", "nope"])


def test_bench_overrides_take_their_defaults_types():
    defaults = {"items": 100, "plot": True, "ef": "64,128"}
    assert parse(["--items=5", "--plot=0", "--ef=32"], defaults) == {"items": 5, "plot": False, "ef": "32"}
    assert parse(["--plot=yes"], defaults)["plot"] is True
    with pytest.raises(SystemExit, match="plot='maybe': Input should be a valid boolean"):
        parse(["--plot=maybe"], defaults)
    with pytest.raises(SystemExit, match="unknown key 'size'; valid keys: ef, items, plot"):
        parse(["--size=3"], defaults)


def test_eval_writes_the_issue_metric_names_for_popularity_on_ml100k(ml100k_dir, tmp_path, capsys):
    out = tmp_path / "popularity.json"
    main(["eval", "--data", f"movielens-100k:{ml100k_dir}", "--protocol", "loo",
          "--model", "popularity", "--json", str(out)])
    result = json.loads(out.read_text())
    assert set(result) >= {"HR@10", "NDCG@10", "HR@100"}
    assert round(result["NDCG@10"], 3) == 0.045, "the published Popularity figure for this split"
    assert "NDCG@10" in capsys.readouterr().out


def test_two_tower_eval_reports_served_and_dense_metrics(tmp_path):
    from feature_repo.datasets import load
    from towers import evaluate
    from towers.features import examples, feature_store
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit

    spec = "synthetic:items=300,users=200,events=6000,seed=2"
    dataset = load(spec)
    split = evaluate.make_split(dataset, "loo")
    store = feature_store(dataset, TowerConfig().max_len, tmp_path)
    fit(examples(store, split.train), dataset.items,
        train=TrainConfig(epochs=2, max_minutes=0.5)).save(tmp_path / "model")
    out = tmp_path / "two-tower.json"
    main(["eval", "--data", spec, "--model", "two-tower", "--artifact", str(tmp_path / "model"),
          "--json", str(out)])
    result = json.loads(out.read_text())
    # Served through the int8 HNSW index with rescoring, the ranking matches exact search closely.
    assert result["NDCG@10"] > 0
    assert abs(result["NDCG@10"] - result["dense NDCG@10"]) < 0.01
    assert abs(result["HR@100"] - result["dense HR@100"]) < 0.02


def test_cold_start_eval_compares_towers_and_popularity_on_held_out_items(tmp_path):
    from feature_repo.datasets import load

    spec = "synthetic:items=150,users=80,events=2000,seed=3"
    out = tmp_path / "cold.json"
    main(["eval", "--data", spec, "--cold-start", "--json", str(out)])
    result = json.loads(out.read_text())
    interacted = load(spec).interactions["item_id"].nunique()
    assert result["cold_start"]["cold_items"] == round(0.1 * interacted)
    for model in ("two-tower", "popularity"):
        assert 0 <= result[f"{model} Recall@100"] <= 1
        assert result[f"{model} Recall@10"] <= result[f"{model} Recall@100"]


def test_bench_towers_ab_runs_on_a_small_dataset(ml100k_slice, capsys):
    """The A/B throughput benchmark end to end, this checkout against itself; no timing asserts
    (its figures go to docs/benchmarks.md)."""
    root = Path(__file__).resolve().parents[2]
    main(["bench", "towers", "--part=ab", f"--data={ml100k_slice}", f"--baseline={root}",
          "--steps=2", "--rounds=1", "--threads=1", "--batch_size=64"])
    *runs, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                      if line.startswith("{")]
    assert [run["checkout"] for run in runs] == ["baseline", "this"]
    assert set(summary["median"]) == {"baseline", "this"} and summary["rows"] >= 128
    for run in runs:
        assert run["examples_per_s"] > 0 and run["peak_rss_mb"] > 0 and math.isfinite(run["loss"])
