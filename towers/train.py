"""The training loop: softmax over items with temperature, early stopping, and an artifact at the end.

`fit(interactions, items, users, tower=..., train=...)` trains on every prefix of every user's
sequence at once (see `data.prefix_chunks`) and returns an `Artifact`. Loss: full softmax over the
catalogue when it is small, otherwise in-batch sampled softmax with logQ correction, optionally
mixed with uniform negatives.

CLI: `python -m towers.train --dataset=movielens-100k:PATH --protocol=loo [--preset=FILE]
[--key=value ...] [--out=DIR]` trains, evaluates the test split and prints one result line.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from towers.artifact import Artifact, fingerprint
from towers.data import (
    Vocab,
    catalogue_content,
    iterate_batches,
    prefix_chunks,
    sampled_candidates,
    seen_mask,
    user_profiles,
)
from towers.model import TowerConfig, TwoTower, score

if TYPE_CHECKING:  # evaluate imports this module's artifacts; annotations only
    from feature_repo.datasets import Dataset
    from towers.evaluate import Split

log = logging.getLogger(__name__)

LOSSES = ("auto", "full", "sampled")


@dataclass
class TrainConfig:
    """Optimisation; saved with every artifact."""

    epochs: int = 200  # an upper bound: early stopping ends real runs far sooner
    batch_size: int = 16  # user windows per step; each carries up to max_len targets
    lr: float = 5e-3  # Adam; 1e-2 learned no faster, 2e-3 needed twice the epochs
    weight_decay: float = 0.0  # dropout already regularises; decay hurt the ID tables
    temperature: float = 0.1  # on unit vectors; 0.05 learned slower, 0.2 plateaued lower
    loss: str = "auto"  # auto = full softmax if the catalogue has <= full_softmax_max_items
    full_softmax_max_items: int = 20_000  # (Q, N) logits stay small on CPU below this
    uniform_negatives: int = 0  # mixed negatives added to the in-batch ones (sampled loss only)
    future_horizon: int = 0  # >0: also predict a random one of the next N events (0 = off)
    future_weight: float = 1.0  # weight of that loss next to the next-event loss
    mask_seen: bool = True  # seen items are filtered at serving, so they are not negatives either
    patience: int = 3  # validations without improvement before stopping
    max_minutes: float = 10.0  # wall-clock cap on one fit
    seed: int = 0
    log_every: int = 50  # steps between log lines

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss: {self.loss!r} is not one of {LOSSES}")


Validate = Callable[[Artifact], float]  # higher is better, e.g. validation NDCG@10


def fit(interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, *,
        tower: TowerConfig | None = None, train: TrainConfig | None = None,
        validate: Validate | None = None) -> Artifact:
    """Train both towers on `interactions` and return the best artifact seen by `validate`."""
    tower, train = tower or TowerConfig(), train or TrainConfig()
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    generator = torch.Generator().manual_seed(train.seed)
    vocab = Vocab.build(interactions, items, title_buckets=tower.title_buckets,
                        profile_buckets=tower.profile_buckets)
    model = TwoTower(tower, vocab, catalogue_content(vocab, items))
    chunks = prefix_chunks(interactions, tower.max_len)
    profiles = user_profiles(users).set_index("user_id")
    n_items = len(vocab.item_ids)
    counts = np.bincount(vocab.item_index(interactions["item_id"].to_numpy()),
                         minlength=n_items + 1)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum())).float()  # (N + 1,)
    full = train.loss == "full" or (train.loss == "auto" and n_items <= train.full_softmax_max_items)
    all_items = torch.arange(1, n_items + 1)
    targets_per_batch = sum(len(c.targets) for c in chunks) / np.ceil(len(chunks) / train.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    log.info("training on %d events, %d users, %d items, %d windows, %s softmax",
             len(interactions), len(vocab.user_ids), n_items, len(chunks),
             "full" if full else "sampled")

    started, step, bad, best_seconds = time.perf_counter(), 0, 0, 0.0
    best: tuple[float, int, dict] = (-np.inf, -1, copy.deepcopy(model.state_dict()))
    history = []
    quiet = not sys.stderr.isatty()
    for epoch in tqdm(range(train.epochs), desc="epochs", disable=quiet):
        model.train()
        tick, seen, losses = time.perf_counter(), 0, []
        for batch in iterate_batches(vocab, chunks, profiles, batch_size=train.batch_size, rng=rng,
                                     horizon=train.future_horizon):
            u = model.users(batch.users)  # (Q, D)
            if full:
                candidates, labels = all_items, batch.targets - 1
                logits = score(u, model.catalogue()[1:], train.temperature)  # (Q, N)
            else:
                both = batch.targets if batch.future is None else torch.cat([batch.targets,
                                                                            batch.future])
                candidates, labels, correction = sampled_candidates(
                    both, n_items=n_items, n_uniform=train.uniform_negatives,
                    log_q=log_q, generator=generator)
                v = model.item_tower(model.item_tower.known(candidates))  # (C, D)
                logits = score(u, v, train.temperature) - correction  # (Q, C)
            rows = torch.arange(len(u))
            future_labels = None
            if batch.future is not None:
                future_labels = batch.future - 1 if full else labels[len(u):]
                labels = labels[:len(u)]
            if train.mask_seen:
                mask = seen_mask(batch.users, candidates, n_items)  # (Q, C)
                mask[rows, labels] = False
                if future_labels is not None:
                    mask[rows, future_labels] = False
                logits = logits.masked_fill(mask, -torch.inf)
            log_p = logits.log_softmax(dim=-1)  # (Q, C)
            total = -log_p[rows, labels].sum()
            if future_labels is not None:
                total = total - train.future_weight * log_p[rows, future_labels].sum()
            loss = total.detach() / len(labels)
            optimizer.zero_grad(set_to_none=True)
            # Batches hold windows of similar length, so their target counts differ tenfold:
            # dividing by a constant rather than the batch's count weights every target alike.
            (total / targets_per_batch).backward()
            optimizer.step()
            step += 1
            seen += len(batch.targets)
            losses.append(loss.item())
            if step % train.log_every == 0:
                ms = 1000 * (time.perf_counter() - tick) / max(len(losses), 1)
                log.info("step %d loss %.4f lr %.1e %.0f ms/step %.0f examples/s", step,
                         loss.item(), train.lr, ms, seen / (time.perf_counter() - tick))
        elapsed = time.perf_counter() - started
        metric = validate(Artifact(model)) if validate else -float(np.mean(losses))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": metric,
                        "seconds": round(elapsed, 1)})
        log.info("epoch %d loss %.4f val %.4f (%.0f s)", epoch, np.mean(losses), metric, elapsed)
        if validate is None or metric > best[0]:  # without validation keep the last epoch
            best, bad = (metric, epoch, copy.deepcopy(model.state_dict())), 0
            best_seconds = elapsed
        else:
            bad += 1
        if bad >= train.patience or elapsed > 60 * train.max_minutes:
            break
    model.load_state_dict(best[2])
    model.eval()
    metrics = {"val": best[0], "best_epoch": best[1], "seconds_to_best": round(best_seconds, 1),
               "seconds_total": round(time.perf_counter() - started, 1), "history": history}
    return Artifact(model, metrics, fingerprint(interactions, items), dataclasses.asdict(train))


# ---------------------------------------------------------------- CLI

def parse_overrides(args: list[str], *configs: object) -> None:
    """Apply `--key=value` to whichever config has the field, converting to the field's type."""
    for arg in args:
        key, sep, raw = arg.removeprefix("--").partition("=")
        target = next((c for c in configs if key in {f.name for f in dataclasses.fields(c)}), None)
        if not arg.startswith("--") or not sep or target is None:
            raise ValueError(f"unknown option {arg!r}: expected --key=value with key one of "
                             f"{sorted(f.name for c in configs for f in dataclasses.fields(c))}")
        kind = type(getattr(target, key))
        try:
            value = (raw.lower() in {"1", "true", "yes"}) if kind is bool else kind(raw)
        except ValueError:
            raise ValueError(f"option {key}: {raw!r} is not a {kind.__name__}") from None
        setattr(target, key, value)
    for config in configs:
        config.__post_init__()


def fit_split(ds: Dataset, split: Split, *, tower: TowerConfig | None = None,
              train: TrainConfig | None = None) -> Artifact:
    """Train with early stopping on the split's validation; TEMPORAL then refits up to the test cut."""
    from towers import evaluate

    train = train or TrainConfig()
    artifact = fit(split.train, ds.items, ds.users, tower=tower, train=train,
                   validate=evaluate.validator(split.validation, ds.items))
    if split.test_train is not split.train:  # TEMPORAL: refit on everything before the test cut
        first = artifact.metrics
        refit = dataclasses.replace(train, epochs=first["best_epoch"] + 1)
        artifact = fit(split.test_train, ds.items, ds.users, tower=tower, train=refit)
        artifact.metrics.update(val=first["val"], best_epoch=first["best_epoch"],
                                seconds_to_best=first["seconds_to_best"],
                                refit_seconds=artifact.metrics["seconds_total"])
    return artifact


def main(argv: list[str] | None = None) -> None:
    from feature_repo.datasets import load
    from towers import evaluate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args = dict(dataset="movielens-100k:../shared/datasets/ml-100k", protocol="loo", preset="",
                out="")
    rest = []
    for arg in sys.argv[1:] if argv is None else argv:
        key = arg.removeprefix("--").partition("=")[0]
        if key in args:
            args[key] = arg.partition("=")[2]
        else:
            rest.append(arg)
    tower, train = TowerConfig(), TrainConfig()
    if args["preset"]:
        preset = tomllib.loads(Path(args["preset"]).read_text())
        parse_overrides([f"--{k}={v}" for k, v in preset.items()], tower, train)
    parse_overrides(rest, tower, train)
    ds = load(args["dataset"])
    split = evaluate.make_split(ds, args["protocol"])
    artifact = fit_split(ds, split, tower=tower, train=train)
    recommend = evaluate.two_tower(artifact, ds.items)
    test = evaluate.evaluate(recommend, split.test)
    artifact.metrics.update(test=test, dataset=args["dataset"], protocol=args["protocol"],
                            split=split.notes)
    if args["out"]:
        artifact.save(args["out"])
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in test.items()}
    line = (f"two-tower {args['protocol']} {result} best_epoch={artifact.metrics['best_epoch']} "
            f"seconds_to_best={artifact.metrics['seconds_to_best']}")
    print(line)  # noqa: T201 (CLI entry point)


if __name__ == "__main__":
    main()
