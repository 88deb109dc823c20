"""Benchmark: two-tower training speed and quality, A/B training throughput, user-tower latency.

    twotower bench towers --part=train --artifact=/tmp/towers-loo   # LOO fit, saves the model
    twotower bench towers --part=latency --artifact=/tmp/towers-loo # p50/p99 per request
    twotower bench towers --part=ab --baseline=/tmp/base --data=movielens-1m:PATH  # A/B throughput
    twotower bench towers --part=scale --data=synthetic:items=1000000,users=1000000,events=3000000,seed=0
    twotower bench towers --part=validation --data=synthetic:items=100000,users=20000,events=300000,seed=0
    twotower bench towers --part=tables  # one ID table's optimizer step by its rows

`train` reports the Feast store and training-frame build times, the fit's wall time to its best
validation epoch and in total, its validation NDCG@10 per epoch, and its examples/second;
`latency` embeds one LOO test user at a time in eager mode (`no_grad`), under
`torch.inference_mode`, and with `torch.compile`.

`ab` compares training throughput of this checkout with another (`--baseline`, e.g. a
`git worktree add` of main) in one run: one fit epoch of the same LOO training rows (users drawn
until `steps` batches), in a fresh process per fit, the two checkouts alternating for `rounds`
rounds (ABBA order), so both see the same machine load. Each fit reports examples/s, ms/step and
the process's peak RSS; the summary gives medians and the speedup.

`scale` trains on the whole LOO training frame, so the ID tables hold every user and item: the
first `steps` steps, with the ID tables' sparse updates (`TrainConfig.sparse_ids_above`) and
without, and the `--baseline` checkout's defaults when one is given; each in a fresh process, it
reports the fit's own ms/step (the mean over those steps) and the peak RSS.

`validation` times one validation of the split's validation queries on untrained towers (the
cost does not depend on the weights): embedding the users, the catalogue, the whole validation,
and picking the prior's weight, in a fresh process of this checkout and of `--baseline`.

`tables` times one ID table of each size in `rows` alone (7,680 lookups a step, a batch's targets,
negatives and histories): Adam as a loop, Adam fused, and sparse gradients with `SparseAdam`.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# An `ab` fit process imports the towers of the checkout it measures.
sys.path.insert(0, os.environ.get("BENCH_TOWERS_CHECKOUT", str(ROOT)))

# threads: torch intra-op threads (the machine has 2 cores); requests: timed single-user calls
# after `warmup` untimed ones; max_minutes caps the fit like TrainConfig does; baseline, steps,
# rounds, batch_size: the `ab` part's other checkout, batches per fit, fits per checkout, rows per
# batch.
DEFAULTS = {"part": "train", "data": "movielens-100k:../shared/datasets/ml-100k", "threads": 2,
            "artifact": "", "requests": 1000, "warmup": 50, "max_minutes": 10.0, "seed": 0,
            "baseline": "", "steps": 60, "rounds": 3, "batch_size": 768,
            "rows": "1500,20000,100000,200000,500000,1000000"}


def train(config: dict, ds, split, store) -> dict:
    from towers import evaluate
    from towers.features import examples
    from towers.train import TrainConfig, fit_split

    started = time.perf_counter()
    examples(store, split.test_train)  # timed alone; fit_split looks the frame up again
    frame_s = time.perf_counter() - started
    artifact = fit_split(split, ds.items, store,
                         train=TrainConfig(max_minutes=config["max_minutes"], seed=config["seed"]))
    if config["artifact"]:
        artifact.save(config["artifact"])
    history = artifact.metrics["history"]
    test = evaluate.evaluate(evaluate.two_tower(artifact, ds.items), split.test)
    return {"frame_s": round(frame_s, 1), "seconds_to_best": artifact.metrics["seconds_to_best"],
            "seconds_total": artifact.metrics["seconds_total"], "epochs": len(history),
            "best_epoch": artifact.metrics["best_epoch"],
            "val_ndcg@10": [round(h["val"], 4) for h in history],  # per epoch
            "examples_per_s": round(float(np.mean([h["examples_per_s"] for h in history]))),
            "test_ndcg@10": round(test["ndcg@10"], 4), "test_hr@10": round(test["hr@10"], 4)}


def _percentiles(fn, requests: list, warmup: int) -> dict:
    for request in requests[:warmup]:
        fn(request)
    times = []
    for request in requests[warmup:]:
        started = time.perf_counter()
        fn(request)
        times.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3)}


def latency(config: dict, split, artifact) -> dict:
    import torch

    from towers.data import encode_users

    model, frame = artifact.model.eval(), split.test.frame
    rows = [frame.iloc[[i % len(frame)]] for i in range(config["warmup"] + config["requests"])]
    batches = [encode_users(model.vocab, row, artifact.config.max_len) for row in rows]

    def no_grad(batch):
        with torch.no_grad():
            return model.users(batch)

    def inference(batch):
        with torch.inference_mode():
            return model.users(batch)

    result = {"end_to_end_eager": _percentiles(artifact.embed_users, rows, config["warmup"]),
              "encode": _percentiles(lambda r: encode_users(model.vocab, r,
                                                            artifact.config.max_len),
                                     rows, config["warmup"]),
              "forward_eager": _percentiles(no_grad, batches, config["warmup"]),
              "forward_inference_mode": _percentiles(inference, batches, config["warmup"])}
    try:
        compiled = torch.compile(model.user_tower, dynamic=True)

        def compiled_call(batch):
            with torch.inference_mode():
                return compiled(batch, model.item_tower)

        expected = inference(batches[0])
        torch.testing.assert_close(compiled_call(batches[0]), expected, atol=1e-5, rtol=1e-4)
        result["forward_compiled"] = _percentiles(compiled_call, batches, config["warmup"])
    except Exception as error:  # noqa: BLE001 (a benchmark reports what does not work)
        result["forward_compiled"] = f"failed: {type(error).__name__}: {str(error)[:120]}"
    return result


def epoch(config: dict) -> dict:
    """One epoch of `fit` on a saved frame, in this process (the checkout on sys.path)."""
    import pandas as pd
    import torch

    from towers.train import TrainConfig, fit

    torch.set_num_threads(config["threads"])
    frame, items = pd.read_parquet(config["frame"]), pd.read_pickle(config["items"])
    train = TrainConfig(epochs=1, decay_epochs=0, batch_size=config["batch_size"],
                        max_minutes=1e6, seed=config["seed"])
    [history] = fit(frame, items, train=train).metrics["history"]
    steps = math.ceil(len(frame) / train.batch_size)  # batch_groups' count, to a batch
    return {"examples_per_s": history["examples_per_s"],
            "ms_per_step": round(1000 * len(frame) / history["examples_per_s"] / steps, 1),
            "loss": round(history["loss"], 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def ab(config: dict, ds, split, store, home: str) -> dict:
    """Alternating one-epoch fits of the baseline checkout and this one on the same rows."""
    from towers.features import examples

    if not config["baseline"]:
        raise SystemExit("--part=ab: pass --baseline=CHECKOUT (e.g. a git worktree of main)")
    rng = np.random.default_rng(config["seed"])
    users = rng.permutation(split.train["user_id"].unique())
    rows = split.train.groupby("user_id").size()[users].cumsum()
    enough = rows.searchsorted(config["steps"] * config["batch_size"]) + 1
    frame = examples(store, split.train[split.train["user_id"].isin(users[:enough])])
    paths = _inputs(home, frame, ds.items)
    checkouts = {"baseline": str(Path(config["baseline"]).resolve()), "this": str(ROOT)}
    runs = {name: [] for name in checkouts}
    for r in range(config["rounds"]):
        for name in list(checkouts)[::1 if r % 2 == 0 else -1]:  # ABBA: drift hits both alike
            runs[name].append(_in_process("epoch", {**config, **paths}, checkouts[name]))
            print(json.dumps({"round": r, "checkout": name, **runs[name][-1]}), flush=True)
    median = {name: {key: float(np.median([run[key] for run in result])) for key in result[0]}
              for name, result in runs.items()}
    return {"rows": len(frame), "users": int(enough), "checkouts": checkouts, "median": median,
            "speedup": round(median["this"]["examples_per_s"]
                             / median["baseline"]["examples_per_s"], 2)}


def tables(config: dict) -> dict:
    """Median ms of an optimizer step on one (rows x 64) ID table, by optimizer."""
    import torch

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])

    def step_ms(rows: int, kind: str) -> float:
        table = torch.nn.Embedding(rows + 1, 64, padding_idx=0, sparse=kind == "sparse")
        optimizer = (torch.optim.SparseAdam(table.parameters(), lr=1e-3) if kind == "sparse" else
                     torch.optim.Adam(table.parameters(), lr=1e-3, fused=kind == "fused"))
        times = []
        for _ in range(5 + config["steps"]):  # the first 5 warm up
            ids = torch.randint(1, rows + 1, (7680,))
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            table(ids).pow(2).sum().backward()
            optimizer.step()
            times.append(1000 * (time.perf_counter() - started))
        return round(float(np.median(times[5:])), 2)

    return {int(rows): {kind: step_ms(int(rows), kind) for kind in ("loop", "fused", "sparse")}
            for rows in config["rows"].split(",")}


class _Enough(Exception):
    """Raised from the fit's log once a `scale` run has timed its steps."""


def steps(config: dict) -> dict:
    """The first `steps` steps of a fit on a saved frame, timed by the fit's own log lines."""
    import logging

    import pandas as pd
    import torch

    from towers.train import TrainConfig, fit

    torch.set_num_threads(config["threads"])
    frame, items = pd.read_parquet(config["frame"]), pd.read_pickle(config["items"])
    seen: dict = {}

    def timed(record: logging.LogRecord) -> bool:
        if record.msg.startswith("training on"):  # rows, users, items, ...
            seen.update(zip(("rows", "users", "items"), record.args[:3], strict=True))
        elif record.msg.startswith("step "):  # step, loss, lr, mean ms/step since the start
            seen["ms_per_step"] = round(record.args[3], 1)
            if record.args[0] >= config["steps"]:
                raise _Enough
        return True

    logger = logging.getLogger("towers.train")
    logger.setLevel(logging.INFO)
    logger.addFilter(timed)  # a logger's filter runs in the training loop: _Enough ends the fit
    try:
        fit(frame, items, train=TrainConfig(log_every=min(20, config["steps"]),
                                            validate_steps=10**9, seed=config["seed"],
                                            **config["train"]))
    except _Enough:
        pass
    return {**seen, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def scale(config: dict, ds, split, store, home: str) -> dict:
    """`steps` of fits on the whole training frame: sparse ID tables or not, and the baseline."""
    from towers.features import examples

    paths = _inputs(home, examples(store, split.train), ds.items)
    return {"runs": _checkouts(config, "steps", {**paths, "train": {}}, {
        "this": {}, "this, dense ID tables": {"train": {"sparse_ids_above": 10**12}}})}


def validation_parts(config: dict) -> dict:
    """Seconds of one validation's parts and of the prior's pick, on untrained towers: the cost
    does not depend on the weights."""
    import dataclasses
    import pickle

    import pandas as pd
    import torch

    from towers import evaluate
    from towers.artifact import Artifact
    from towers.data import Vocab, catalogue_content
    from towers.encoders import item_encoder_inputs
    from towers.model import TowerConfig, TwoTower
    from towers.prior import WEIGHTS, PopularityPrior

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    frame, items = pd.read_parquet(config["frame"]), pd.read_pickle(config["items"])
    queries = pickle.loads(Path(config["queries"]).read_bytes())
    tower = TowerConfig()
    vocab = Vocab.build(frame, items, title_buckets=tower.title_buckets,
                        profile_buckets=tower.profile_buckets)
    model = TwoTower(tower, vocab, catalogue_content(vocab, items)
                     | item_encoder_inputs(tower, vocab, frame))
    counts = np.bincount(vocab.item_index(frame["item_id"].to_numpy()),
                         minlength=len(vocab.item_ids) + 1)
    artifact = Artifact(model, prior=PopularityPrior(0.0, counts))

    def seconds(work) -> float:
        started = time.perf_counter()
        work()
        return round(time.perf_counter() - started, 2)

    def validate(weight: float) -> None:
        served = dataclasses.replace(artifact, prior=artifact.prior.with_weight(weight))
        evaluate.evaluate(evaluate.two_tower(served, items), queries)

    result = {"queries": len(queries.frame), "items": len(items),
              "embed_users_s": seconds(lambda: artifact.embed_users(queries.frame)),
              "embed_items_s": seconds(lambda: artifact.embed_items(items)),
              "validation_s": seconds(lambda: validate(0.0)),
              "prior_pick_per_weight_s": seconds(lambda: [validate(w) for w in WEIGHTS])}
    if hasattr(evaluate, "Validator"):  # this checkout: one embedding for every weight
        result["prior_pick_by_prior_s"] = seconds(
            lambda: evaluate.Validator(queries, items).by_prior(artifact, WEIGHTS))
    return {**result, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def validation(config: dict, ds, split, store, home: str) -> dict:
    """`validation_parts` on the split's validation queries, for this checkout and the baseline."""
    import pickle

    from towers.features import examples

    paths = {**_inputs(home, examples(store, split.train), ds.items),
             "queries": f"{home}/validation-queries.pkl"}
    Path(paths["queries"]).write_bytes(pickle.dumps(split.validation))
    return {"runs": _checkouts(config, "validation_parts", paths, {"this": {}})}


def _checkouts(config: dict, work: str, paths: dict, runs: dict) -> dict:
    """`work` of each run (its config additions) in a fresh process of this checkout, and of the
    `--baseline` checkout's defaults when one is given."""
    runs = {name: (ROOT, extra) for name, extra in runs.items()}
    if config["baseline"]:
        runs["baseline"] = (Path(config["baseline"]).resolve(), {})
    results = {}
    for name, (checkout, extra) in runs.items():
        results[name] = _in_process(work, {**config, **paths, **extra}, checkout)
        print(json.dumps({"checkout": name, **results[name]}), flush=True)
    return results


def _inputs(home: str, frame, items) -> dict:
    """Training rows and catalogue written for the measuring processes to read: their paths."""
    paths = {"frame": f"{home}/frame.parquet", "items": f"{home}/items.pkl"}
    frame.to_parquet(paths["frame"])
    items.to_pickle(paths["items"])
    return paths


def _in_process(work: str, config: dict, checkout: str | Path) -> dict:
    """`WORK[work](config)` in a fresh process that imports the towers of `checkout`."""
    done = subprocess.run([sys.executable, __file__, work, json.dumps(config)],
                          env={**os.environ, "BENCH_TOWERS_CHECKOUT": str(checkout)},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


WORK = {"epoch": epoch, "steps": steps, "validation_parts": validation_parts}  # subprocesses


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in WORK:  # an `ab`, `scale` or `validation` process
        print(json.dumps(WORK[argv[0]](json.loads(argv[1]))))
        return
    from bench._args import parse

    config = parse(argv, DEFAULTS)
    if config["part"] == "tables":  # no data
        print(json.dumps({"part": "tables", "threads": config["threads"], "ms": tables(config)}))
        return
    import torch

    from feature_repo.datasets import load
    from towers import evaluate
    from towers.artifact import Artifact
    from towers.features import feature_store, with_features
    from towers.model import TowerConfig

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    ds = load(config["data"])
    artifact = Artifact.load(config["artifact"]) if config["part"] == "latency" else None
    max_len = artifact.config.max_len if artifact else TowerConfig().max_len
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        store = feature_store(ds, max_len, home)
        store_s = time.perf_counter() - started
        split = with_features(evaluate.make_split(ds, "loo"), store)
        if config["part"] == "train":
            result = {"store_s": round(store_s, 1), **train(config, ds, split, store)}
        elif config["part"] == "latency":
            result = latency(config, split, artifact)
        elif config["part"] == "ab":
            result = ab(config, ds, split, store, home)
        elif config["part"] == "scale":
            result = scale(config, ds, split, store, home)
        elif config["part"] == "validation":
            result = validation(config, ds, split, store, home)
        else:
            raise SystemExit(f"--part={config['part']}: choose train, latency, ab, scale, "
                             "validation or tables")
    print(json.dumps({"part": config["part"], "data": config["data"],
                      "threads": config["threads"], **result}))


if __name__ == "__main__":
    main()
