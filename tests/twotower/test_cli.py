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


def test_two_tower_eval_reports_served_and_dense_metrics(tmp_path, caplog):
    from feature_repo.datasets import load
    from towers import evaluate
    from towers.features import feature_store, with_features
    from towers.model import TowerConfig
    from towers.train import TrainConfig, fit_split

    spec = "synthetic:items=300,users=200,events=6000,seed=2"
    dataset = load(spec)
    store = feature_store(dataset, TowerConfig().max_len, tmp_path)
    split = with_features(evaluate.make_split(dataset, "loo"), store)
    fit_split(split, dataset.items, store,
              train=TrainConfig(epochs=2, max_minutes=0.5)).save(tmp_path / "model")
    out = tmp_path / "two-tower.json"
    main(["eval", "--data", spec, "--model", "two-tower", "--artifact", str(tmp_path / "model"),
          "--json", str(out)])
    result = json.loads(out.read_text())
    # Served through the int8 HNSW index with rescoring, the ranking matches exact search closely.
    assert result["NDCG@10"] > 0
    assert abs(result["NDCG@10"] - result["dense NDCG@10"]) < 0.01
    assert abs(result["HR@100"] - result["dense HR@100"]) < 0.02
    assert "fitted_on_this_split" not in result["training"] and "not fitted" not in caplog.text
    # On another split the model has trained on test targets (TEMPORAL's come from its training
    # events here): said, not scored as if honest
    main(["eval", "--data", spec, "--protocol", "temporal", "--model", "two-tower",
          "--artifact", str(tmp_path / "model"), "--json", str(out)])
    assert json.loads(out.read_text())["training"]["fitted_on_this_split"] is False
    assert f"--artifact {tmp_path / 'model'} was not fitted on the training part of this TEMPORAL" \
        in caplog.text


def test_cold_start_eval_compares_towers_and_popularity_on_held_out_items(tmp_path):
    from feature_repo.datasets import load

    spec = "synthetic:items=150,users=80,events=2000,seed=3"
    out, preset = tmp_path / "cold.json", tmp_path / "short.toml"
    preset.write_text("min_steps = 150\n")  # a schedule of 150 steps, not the default 1,000
    main(["eval", "--data", spec, "--cold-start", "--preset", str(preset), "--json", str(out)])
    result = json.loads(out.read_text())
    interacted = load(spec).interactions["item_id"].nunique()
    assert result["cold_start"]["cold_items"] == round(0.1 * interacted)
    assert 0 < result["cold_start"]["steps"] <= 150
    for model in ("two-tower", "popularity"):
        assert 0 <= result[f"{model} Recall@100"] <= 1
        assert result[f"{model} Recall@10"] <= result[f"{model} Recall@100"]


def test_eval_preset_errors_name_the_file_or_the_key(tmp_path):
    spec = "synthetic:items=20,users=10,events=100,seed=0"
    with pytest.raises(SystemExit, match=r"--preset .*missing\.toml: .*No such file"):
        main(["eval", "--data", spec, "--preset", str(tmp_path / "missing.toml")])
    broken = tmp_path / "broken.toml"
    broken.write_text("min_steps = \n")
    with pytest.raises(SystemExit, match=r"--preset .*broken\.toml: .*line 1"):
        main(["eval", "--data", spec, "--preset", str(broken)])
    preset = tmp_path / "preset.toml"
    preset.write_text('min_step = 10\n')
    with pytest.raises(SystemExit, match="unknown key 'min_step'; valid keys: .*min_steps"):
        main(["eval", "--data", spec, "--preset", str(preset)])
    preset.write_text('item_encoder = "sage"\nmin_steps = 0\n')
    with pytest.raises(SystemExit, match="min_steps=0: Input should be greater than or equal to 1"):
        main(["eval", "--data", spec, "--preset", str(preset)])
    preset.write_text('item_encoder = "sage"\n')  # --item-encoder wins over the preset
    with pytest.raises(SystemExit, match="item_encoder='gat'"):
        main(["eval", "--data", spec, "--preset", str(preset), "--item-encoder", "gat"])


@pytest.mark.parametrize(("options", "refused"), [
    (["--model", "ease", "--artifact", "model"], "--artifact does not apply here: it is a saved two-tower"),
    (["--model", "popularity", "--preset", "p.toml"], "--preset does not apply here"),
    (["--artifact", "model", "--item-encoder", "sage"], "--item-encoder does not apply here"),
    (["--cold-start", "--protocol", "temporal"], "--protocol does not apply here: --cold-start"),
    (["--cold-start", "--model", "ease"], "--model does not apply here: --cold-start"),
    (["--cold-start", "--artifact", "model"], "--artifact does not apply here"),
    (["--json", "no/such/folder/out.json"], "--json no/such/folder/out.json: no folder no/such/folder"),
])
def test_eval_refuses_an_option_it_would_ignore_before_reading_the_data(options, refused):
    with pytest.raises(SystemExit, match=refused):
        main(["eval", "--data", "generic:/no/such/folder", *options])


def _shop(folder, interactions):
    folder.mkdir()
    (folder / "interactions.csv").write_text(interactions)
    (folder / "items.csv").write_text("item_id,title\n10,A\n11,B\n")
    return f"generic:{folder}"


def test_serve_names_a_missing_setting_or_an_unbuilt_home_in_one_line(tmp_path, monkeypatch):
    for name in ("TWOTOWER_READ_KEYS", "TWOTOWER_WRITE_KEYS", "TWOTOWER_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWOTOWER_DATA_DIR", str(tmp_path))  # serve sets it: restored after the test
    with pytest.raises(SystemExit) as missing:
        main(["serve", "--home", str(tmp_path)])
    assert str(missing.value) == ("twotower serve: TWOTOWER_READ_KEYS: Field required; "
                                  "TWOTOWER_WRITE_KEYS: Field required")
    monkeypatch.setenv("TWOTOWER_READ_KEYS", "r" * 32)
    monkeypatch.setenv("TWOTOWER_WRITE_KEYS", "w" * 32)
    monkeypatch.setenv("TWOTOWER_INDEX__BACKEND", "server")
    monkeypatch.setenv("TWOTOWER_INDEX__TIMEOUT_S", "soon")
    with pytest.raises(SystemExit, match="twotower serve: TWOTOWER_INDEX__TIMEOUT_S: Input should be"):
        main(["serve", "--home", str(tmp_path)])  # the variable's name, without the backend's tag
    monkeypatch.delenv("TWOTOWER_INDEX__BACKEND")
    monkeypatch.delenv("TWOTOWER_INDEX__TIMEOUT_S")
    with pytest.raises(SystemExit, match=f"no feature repository in {tmp_path / 'feature_repo'}: "
                                         f"build the data directory first"):
        main(["serve", "--home", str(tmp_path)])


def test_retrain_reads_the_dataset_its_home_was_built_from_and_fails_in_one_line(tmp_path, monkeypatch,
                                                                                capfd):
    from pipelines.defs.resources import PipelineSettings
    from pipelines.local import instance_for, materialize_graph

    folder, home = tmp_path / "shop", tmp_path / "home"
    folder.mkdir()
    (folder / "items.csv").write_text("item_id,title\n10,A\n11,B\n")
    (folder / "interactions.csv").write_text("user_id,item_id,event_timestamp\n1,10,1700000000\n")
    with instance_for(home) as instance:
        materialize_graph(PipelineSettings(data_dir=home, data=f"generic:{folder}"), instance=instance,
                          selection=["raw_tables"])
    (folder / "interactions.csv").write_text("user_id,item_id,event_timestamp\n1,12,1700000000\n")
    monkeypatch.delenv("TWOTOWER_DATA", raising=False)
    capfd.readouterr()
    with pytest.raises(SystemExit, match=r"twotower retrain: the run failed: step raw_tables: DataError: "
                                         r".*shop/interactions.csv, column 'item_id', row 1: unknown"):
        main(["retrain", "--home", str(home)])
    assert "DEBUG" not in capfd.readouterr().err, "Dagster's step events are not shown without -v"


def test_data_check_prints_every_problem_as_a_table_and_exits_1(tmp_path, capsys):
    spec = _shop(tmp_path / "shop", "user_id,item_id,event_timestamp\nx,10,1700000000\n"
                                    "2,11,1700000000000\n3,12,1700000000\n")
    with pytest.raises(SystemExit, match=f"3 problems in {spec}"):
        main(["data", "check", "--data", spec])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["file", "column", "row", "problem"]
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["user_id", "1"], ["event_timestamp", "2"], ["item_id", "3"]]
    assert "read as Unix seconds is outside 1990-2100" in lines[2]


def test_data_check_of_good_data_says_so(tmp_path, capsys):
    spec = _shop(tmp_path / "shop", "user_id,item_id,event_timestamp\n1,10,1700000000\n")
    main(["data", "check", "--data", spec])
    assert capsys.readouterr().out == f"{spec}: no problems found\n"


def test_a_data_error_is_one_line_without_traceback_and_v_shows_it(tmp_path):
    spec = _shop(tmp_path / "shop", "user_id,item_id,event_timestamp\n1,10,yesterday\n")
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "twotower.cli", "features", "--data", spec,
               "--home", str(tmp_path / "home")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"twotower features: {tmp_path}/shop/interactions.csv, column 'event_timestamp', row 1: "
        "cannot parse timestamp 'yesterday'"]
    verbose = subprocess.run([*command[:3], "-v", *command[3:]], capture_output=True, text=True,
                             cwd=root)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_a_home_with_a_live_model_refuses_another_datasets_features(graph, tmp_path, capsys):
    """The home's live model serves the MovieLens slice: another dataset's features are refused
    with the fix in the message; the home's features stay as they were."""
    from feature_repo.tables import dataset_record

    data = graph.settings.data_dir / "feature_repo" / "data"
    before = dataset_record(data)
    with pytest.raises(SystemExit, match=r"twotower features: .* serves model version \d+ trained "
                       r"on another dataset .*Use a new --home for .*, or --replace"):
        main(["features", "--data", "synthetic:items=40,users=20,events=300,seed=1",
              "--home", str(graph.settings.data_dir)])
    assert dataset_record(data) == before
    main(["features", "--data", graph.settings.data, "--home", str(graph.settings.data_dir)])
    assert dataset_record(data) == before, "the same dataset again is fine"
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


def test_bench_towers_tables_times_each_optimizer_on_each_table_size(capsys):
    main(["bench", "towers", "--part=tables", "--rows=10,1000", "--steps=2", "--threads=1"])
    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                if line.startswith("{")]
    assert set(result["ms"]) == {"10", "1000"}  # JSON keys
    assert all(set(ms) == {"loop", "fused", "sparse"} and min(ms.values()) > 0
               for ms in result["ms"].values())


def test_bench_towers_scale_times_sparse_and_dense_id_tables_on_a_small_dataset(ml100k_slice,
                                                                                 capsys):
    """The scale benchmark end to end (figures in docs/benchmarks.md, no timing asserts): each
    run trains on the whole frame, its ID tables holding every user and item, for the steps asked."""
    root = Path(__file__).resolve().parents[2]
    main(["bench", "towers", "--part=scale", f"--data={ml100k_slice}", f"--baseline={root}",
          "--steps=3", "--threads=1"])
    *runs, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                      if line.startswith("{")]
    assert [run["checkout"] for run in runs] == ["this", "this, dense ID tables", "baseline"]
    assert set(summary["runs"]) == {run["checkout"] for run in runs}
    for run in runs:
        assert run["ms_per_step"] > 0 and run["peak_rss_mb"] > 0
        assert run["users"] > 20 and run["items"] > 100 and run["rows"] > 1000



def test_bench_towers_validation_times_its_parts_on_a_small_dataset(ml100k_slice, capsys):
    """The validation benchmark end to end (figures in docs/benchmarks.md, no timing asserts):
    one validation's parts and the prior's pick, in this checkout and the baseline."""
    root = Path(__file__).resolve().parents[2]
    main(["bench", "towers", "--part=validation", f"--data={ml100k_slice}", f"--baseline={root}",
          "--threads=1"])
    *runs, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                      if line.startswith("{")]
    assert [run["checkout"] for run in runs] == ["this", "baseline"]
    assert set(summary["runs"]) == {"this", "baseline"}
    for run in runs:
        assert run["queries"] > 20 and run["items"] > 100
        assert min(run[key] for key in ("embed_users_s", "embed_items_s", "validation_s",
                                        "prior_pick_per_weight_s", "prior_pick_by_prior_s")) >= 0
