"""The `twotower` command is installed and documents its subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import main


def test_twotower_help_lists_commands():
    done = subprocess.run([str(Path(sys.executable).parent / "twotower"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("features", "demo", "eval", "bench"):
        assert command in done.stdout


def test_unknown_benchmark_is_named(capsys):
    with pytest.raises(SystemExit, match="no benchmark 'nope'"):
        main(["bench", "nope"])


def test_eval_writes_the_issue_metric_names_for_popularity_on_ml100k(ml100k_dir, tmp_path, capsys):
    out = tmp_path / "popularity.json"
    main(["eval", "--data", f"movielens-100k:{ml100k_dir}", "--protocol", "loo",
          "--model", "popularity", "--json", str(out)])
    result = json.loads(out.read_text())
    assert set(result) >= {"HR@10", "NDCG@10", "HR@100"}
    assert round(result["NDCG@10"], 3) == 0.045, "the published Popularity figure for this split"
    assert "NDCG@10" in capsys.readouterr().out
