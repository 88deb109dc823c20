"""`twotower bench tradeoff` end to end on a tiny shop: pieces cached and resumed, the default rule,
the table and the plot. No timing asserts: the figures go to docs/benchmarks.md."""

from __future__ import annotations

import json

import pytest

from bench import tradeoff

TINY = ["--data=synthetic:items=300,users=200,events=6000,seed=0", "--protocols=loo", "--dims=8,16",
        "--compressions=none,int8", "--pca=16:8", "--nested=16", "--prefixes=8,16",
        "--train=min_steps=10,decay_epochs=1", "--tower=encoder=mean", "--items=2000", "--queries=20",
        "--latency_users=10"]


def test_the_sweep_resumes_from_its_cache_and_marks_the_smallest_row_near_the_best(tmp_path, capsys):
    cache, plot, rows_json = tmp_path / "cache", tmp_path / "tradeoff.png", tmp_path / "rows.json"
    args = [*TINY, f"--cache={cache}"]
    first = tradeoff.main([*args, "--pieces=1"])
    assert first["computed"] == 1 and len(list(cache.glob("*.json"))) == 1

    full = tradeoff.main([*args, f"--plot={plot}", f"--json={rows_json}"])
    pieces = tradeoff.plan(tradeoff.parse(args, tradeoff.DEFAULTS))
    # 3 models (8d, 16d, nested16), 5 served configurations x 2 compressions, 2 dims x 2 at scale
    assert [p.kind for p in pieces].count("model") == 3 and len(pieces) == 3 + 10 + 4
    assert full["computed"] == len(pieces) - 1 and full["missing"] == 0
    rows = full["rows"]
    assert {(r["config"], r["compression"]) for r in rows} == {
        (c, q) for c in ("8d", "16d", "16d>pca8", "nested16@8", "nested16@16") for q in ("none", "int8")}
    for row in rows:
        assert 0 <= row["loo_ndcg@10"] <= 1 and 0 <= row["loo_recall_vs_exact"] <= 1
        assert row["ram_bytes_per_item"] > 0 and row["disk_bytes_per_item"] > 0 and row["p99_ms"] > 0
        assert row["train_s"] > 0 and row["user_tower_p50_ms"] > 0
        assert row["scale_source"] == f"{row['dim']}d loo model", "shared by served dimension"
    best = max(r["loo_ndcg@10"] for r in rows)
    near = [r for r in rows if r["loo_ndcg@10"] >= 0.99 * best]
    assert full["default"]["ram_bytes_per_item"] == min(r["ram_bytes_per_item"] for r in near)
    assert plot.stat().st_size > 10_000 and json.loads(rows_json.read_text()) == rows
    out = capsys.readouterr().out
    assert "**(default)**" in out and "RAM 100M GB" in out

    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = tradeoff.main(args)
    assert again["computed"] == 0 and again["rows"] == rows
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps, "nothing recomputed"

    # A change to the towers' code invalidates every piece that depends on a model: all of them.
    changed = tradeoff.plan(tradeoff.parse(args, tradeoff.DEFAULTS), code="another-towers-code")
    assert not any((cache / f"{p.key}.json").exists() for p in changed)


def row(config: str, ndcg: float | None, ram: int | None) -> dict:
    return {"config": config, "loo_ndcg@10": ndcg, "ram_bytes_per_item": ram}


def test_the_default_is_the_fewest_bytes_within_the_tolerance_of_the_best():
    rows = [row("256d", 0.1000, 1500), row("64d", 0.0991, 400), row("32d", 0.0989, 300),
            row("16d", 0.0900, 100), row("8d", None, 50), row("16d>pca8", 0.0950, None)]
    assert tradeoff.choose_default(rows, "loo_ndcg@10", 0.01)["config"] == "64d", \
        "0.0989 is 1.1% below the best 0.1000; rows without the metric take no part"
    assert tradeoff.choose_default(rows, "loo_ndcg@10", 0.02)["config"] == "32d"
    assert tradeoff.choose_default(rows, "loo_ndcg@10", 0.06) is None, "16d>pca8 is near but unmeasured"
    assert tradeoff.choose_default([row("8d", None, 50)], "loo_ndcg@10", 0.01) is None


def test_a_bad_pca_pair_is_named():
    with pytest.raises(SystemExit, match="'64:128' is not SOURCE:TARGET"):
        tradeoff.configurations(tradeoff.parse(["--pca=64:128"], tradeoff.DEFAULTS))
