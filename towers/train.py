"""The training loop: softmax over items with temperature, early stopping, and an artifact at the end.

`fit(frame, items, tower=..., train=...)` trains on a Feast training frame, every row's prefix at
once (see `data.frame_windows`), and returns an `Artifact`. Loss: full softmax over the catalogue
when it is small, otherwise in-batch sampled softmax with logQ correction, optionally mixed with
uniform negatives. Under torchrun each rank trains on a share of the batches (gloo all-reduce).
The budget is counted in optimizer steps (`plan`), the same defaults for 150 items or a million
events; what ended a fit (`stopped_by`) is in its metrics, and a warning says when a budget or a
cap cut it while validation was still improving.

CLI: `python -m towers.train --dataset=movielens-100k:PATH --protocol=loo [--preset=FILE]
[--key=value ...] [--out=DIR] [--threads=N]` trains, evaluates the test split and prints one
result line; `torchrun --nproc_per_node=2 -m towers.train ...` does the same on two CPU processes.
"""

from __future__ import annotations

import copy
import fractions
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, model_validator
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from feature_repo.datasets.contract import DAY
from towers import evaluate
from towers.artifact import Artifact, fingerprint
from towers.config import Config, Count, Fraction, Share, parse_cli
from towers.data import (
    Popularity,
    Vocab,
    Windows,
    batch_groups,
    catalogue_content,
    frame_windows,
    sampled_candidates,
    seen_columns,
    unix_seconds,
)
from towers.encoders import item_encoder_inputs
from towers.hard_negatives import HardNegatives
from towers.model import TowerConfig, TwoTower
from towers.multitask import LikedHead, liked_rows, twin_pairs
from towers.nested import NestedDims, check_nested_dims, nested_loss
from towers.prior import WEIGHTS, PopularityPrior

log = logging.getLogger(__name__)
TRAINED_ON_SPLIT = "trained_on_split"  # an artifact's metric: `trained_on_split` of what fitted it

Loss = Literal["auto", "full", "sampled"]
StopReason = Literal["early_stopping", "budget", "cap"]
STOP_REASONS: tuple[StopReason, ...] = ("early_stopping", "budget", "cap")


class TrainConfig(Config):
    """Optimisation; saved with every artifact. Why each default: docs/towers-notes.md.

    The lr warms up linearly to `lr` over `warmup_epochs`, then decays (cosine) to 0 at
    `decay_epochs`, where training ends. These are schedule epochs: one pass over the data, or
    as many steps as make the whole schedule `min_steps` long when a pass has fewer than
    `min_steps / decay_epochs`; a schedule longer than `epochs` passes is squeezed into them.
    `decay_epochs=0` keeps the lr constant and leaves the end to `epochs` and early stopping.
    Validation runs every pass, or every few passes so that `validate_steps` steps lie between.
    """

    epochs: Count = 1000  # passes at most, a safety bound: the schedule ends runs far sooner
    batch_size: Count = 768  # rows (queries) per step: the old 16 windows' average
    lr: PositiveFloat = 5e-3  # Adam's peak: the fastest of the rates tried to reach the best NDCG
    warmup_epochs: NonNegativeFloat = 0.5  # Adam's first steps on fresh embeddings are unstable
    # 6 cut ml-1m-dev while improving, 20 ML-100K: 30 is above 20 on validation of every set
    # (notes: issue 18, parts b and j)
    decay_epochs: NonNegativeFloat = 30.0
    min_steps: Count = 1000  # the schedule's least optimizer steps: small data gets enough updates
    # Share of a long history's window whose positions are queries too: a row then sees its
    # newest (1 - share) * max_len .. max_len events (data.frame_windows); 0: all of them.
    # 0.25: above 0.5 on LOO validation of both MovieLens sets (notes: issue 18, part i).
    window_queries: Share = 0.25
    validate_steps: Count = 100  # steps between validations at least: patience counts real progress
    weight_decay: NonNegativeFloat = 0.0  # dropout already regularises; decay hurt the ID tables
    # An ID table with more rows gets sparse gradients and a lazy Adam (no decay): a dense step
    # reads and writes every row, 93 ms at 1M x 64 against 5 ms (docs/benchmarks.md)
    sparse_ids_above: NonNegativeInt = 100_000
    temperature: PositiveFloat = 0.05  # on unit vectors: above 0.1 on validation, both MovieLens sets
    learn_temperature: bool = False  # `temperature` is then the start of a learned one (Temperature)
    loss: Loss = "auto"  # auto = full softmax if the catalogue has <= full_softmax_max_items
    full_softmax_max_items: Count = 20_000  # (Q, N) logits stay small on CPU below this
    uniform_negatives: NonNegativeInt = 0  # mixed into the in-batch ones (sampled loss only)
    hard_negatives: NonNegativeInt = 0  # per query, near its positive (sampled loss; hard_negatives.py)
    hard_pool: Count = 50  # the nearest items they come from early on; the schedule narrows it
    liked_weight: NonNegativeFloat = 0.0  # of a "liked" head's loss on the user tower (multitask.py)
    liked_min_weight: float = 4.0  # an event's weight (e.g. rating) from which it counts as liked
    # Horizon, in schedule epochs, of a moving average of the weights (an EMA, `ema_updates`)
    # that is what is validated and kept; 0: the optimizer's own weights. 3: ties them on
    # validation on every set and reaches its best passes sooner (notes: issue 18, part e).
    ema_epochs: NonNegativeFloat = 3.0
    mask_seen: bool = True  # seen items are filtered at serving, so they are not negatives either
    # Share of training rows asked at a uniform time between the previous event and theirs, the
    # rest at their own: a request may come right before its event or long before it. 0.5 and 1
    # tie on validation and beat 0 on ml-1m-dev by 0.014 (notes: issue 18, part f).
    query_between: Fraction = 0.5
    # Share of training rows whose target is one of their user's next `later_horizon` events
    # (their own included), drawn at random: the user vector learns what the user does over a
    # horizon, not only next. Off: it lifts TEMPORAL and costs LOO (notes: issue 18, part g).
    later_targets: Fraction = 0.0
    later_horizon: Count = 50
    # Weight of the served popularity prior (towers/prior.py); None: the one of prior.WEIGHTS that
    # validates best, 0 without validation. It lifts TEMPORAL on both MovieLens sets by about
    # 0.03 and is 0 or small on LOO (notes: issue 18, part m).
    popularity_prior: NonNegativeFloat | None = None
    # Validations without gain that stop a run, counted past min_steps and mid-decay; before
    # mid-decay twice as many stop it too.
    patience: Count = 5
    max_minutes: PositiveFloat | None = None  # checked each pass; none: a busy machine ends no run early
    seed: int = 0  # any fixed seed: runs on as many threads repeat exactly
    nested_dims: NestedDims = ()  # prefixes also trained to rank alone, e.g. 16,32,64 (towers/nested.py)
    log_every: Count = 50  # steps between log lines: a few per epoch on ML-100K

    @model_validator(mode="after")
    def _liked_rows_keep_their_targets(self) -> TrainConfig:
        if self.later_targets and self.liked_weight:
            raise ValueError("later_targets and liked_weight: a liked row's label is its own event; "
                             "set one of them to 0")
        return self

    @model_validator(mode="after")
    def _warmup_before_decay(self) -> TrainConfig:
        if self.decay_epochs and not self.warmup_epochs < self.decay_epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be below "
                             f"decay_epochs={self.decay_epochs}")
        return self


def learning_rate(train: TrainConfig, progress: float) -> float:
    """The lr after `progress` epochs: linear warmup, then cosine decay to 0 at decay_epochs."""
    if progress < train.warmup_epochs:
        return train.lr * progress / train.warmup_epochs
    if not train.decay_epochs:
        return train.lr
    done = min((progress - train.warmup_epochs) / (train.decay_epochs - train.warmup_epochs), 1.0)
    return train.lr * 0.5 * (1 + math.cos(math.pi * done))


@dataclass(frozen=True)
class Plan:
    """A fit's schedule in optimizer steps, fixed once the steps per pass are known."""

    steps: int  # where the schedule ends
    steps_per_epoch: float  # per schedule epoch: one pass, or more on small data
    end: int  # where training ends: `steps`, or sooner with an end share below 1


def plan(train: TrainConfig, steps_per_pass: int, end_share: fractions.Fraction | float = 1) -> Plan:
    """`decay_epochs` passes, stretched to `min_steps` steps and cut at `epochs` passes; training
    ends after `end_share` of them (rounded up, at least one step)."""
    budget = train.epochs * steps_per_pass
    if not train.decay_epochs:  # a flat lr: `epochs` and early stopping end the run
        steps, per_epoch = budget, float(steps_per_pass)
    else:
        steps = min(max(math.ceil(train.decay_epochs * steps_per_pass), train.min_steps), budget)
        per_epoch = steps / train.decay_epochs
    return Plan(steps, per_epoch, min(steps, max(1, math.ceil(end_share * steps))))


EMA_UPDATES = 100  # moving-average updates per horizon: fewer cost less, more change nothing


def ema_updates(horizon_steps: float) -> tuple[int, float]:
    """(every how many steps, decay per update) of a moving average over `horizon_steps` steps.

    An update reads and writes every weight (~45 ms a step for a 1M-item ID table), so a long
    horizon is sampled `EMA_UPDATES` times, each update decaying by the skipped steps' product.
    """
    every = max(1, round(horizon_steps / EMA_UPDATES))
    return every, (1 - 1 / max(horizon_steps, 1)) ** every


def fit(frame: pd.DataFrame | str | Path, items: pd.DataFrame, *, tower: TowerConfig | None = None,
        train: TrainConfig | None = None, validate: evaluate.Validator | None = None,
        end_share: fractions.Fraction | float = 1) -> Artifact:
    """Train both towers on a Feast training frame and return the best artifact seen by `validate`.

    Args:
        frame: `feature_repo.store.training_frame` rows (or the parquet `write_training_frame`
            wrote): one (user_id, item_id, event_timestamp) per training event with its user
            features; the Feast store's history_length must equal `tower.max_len`.
        items: the catalogue's content (item_id, title, categories, price, created_at).
        end_share: the share of the schedule after which training ends (a refit ends where its
            first fit's best was); the learning rate follows the whole schedule.

    Under `torchrun` (an initialised process group) every rank trains on its share of each
    epoch's batches and gradients are averaged, so all ranks hold the same weights.

    The metrics say what ended the run (`stopped_by`: the schedule's end, `end_share` of it or
    `epochs` is "budget", `max_minutes` is "cap") and whether validation was still improving then
    (`improving_at_stop`); a budget or cap that cuts an improving run, or a cap, logs a warning.
    """
    tower, train = tower or TowerConfig(), train or TrainConfig()
    check_nested_dims(train.nested_dims, tower.dim, item_popularity=tower.item_popularity,
                      item_encoder=tower.item_encoder)
    if not isinstance(frame, pd.DataFrame):
        frame = pd.read_parquet(frame)
    rank, world = _distributed()
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    # Query times are drawn per rank from a stream of their own: the shared `rng` orders the
    # batches and must stay in step on every rank (one process keeps one stream, as measured).
    asked = rng if world == 1 else np.random.default_rng([train.seed, rank])
    generator = torch.Generator().manual_seed(train.seed)
    vocab = Vocab.build(frame, items, title_buckets=tower.title_buckets,
                        profile_buckets=tower.profile_buckets)
    windows = Windows.build(vocab, frame_windows(
        frame, tower.max_len, int(train.window_queries * tower.max_len)))
    n_items = len(vocab.item_ids)
    targets_all = vocab.item_index(frame["item_id"].to_numpy())
    event_seconds = unix_seconds(frame["event_timestamp"])
    popularity = Popularity(targets_all, event_seconds)
    content = catalogue_content(vocab, items) | item_encoder_inputs(tower, vocab, frame)
    if tower.item_popularity:  # served as of the newest training day (the index build)
        content["popularity"] = popularity.buckets(np.arange(n_items + 1),
                                                   [popularity.last_day])[0]  # (N + 1, W)
    model = TwoTower(tower, vocab, content)
    counts = np.bincount(targets_all, minlength=n_items + 1)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum())).float()  # (N + 1,)
    full = train.loss == "full" or (train.loss == "auto" and n_items <= train.full_softmax_max_items)
    all_items = torch.arange(1, n_items + 1)
    if train.hard_negatives and full:
        raise ValueError("hard_negatives: the full softmax already scores every item; "
                         "set loss='sampled' to use them")
    hard = HardNegatives(train.hard_negatives, train.hard_pool) if train.hard_negatives else None
    liked = liked_rows(frame, train.liked_min_weight) if train.liked_weight else None
    head = LikedHead(tower.dim) if train.liked_weight else None
    temperature = Temperature(train.temperature, learned=train.learn_temperature)
    params = [*model.parameters(), *temperature.parameters(),
              *(head.parameters() if head is not None else ())]
    optimizers = _optimizers(params, _sparse_id_tables(model, train.sparse_ids_above, world), train)
    ema: AveragedModel | None = None  # set with the schedule, whose epochs give its horizon
    ema_every = 1  # steps between its updates
    kept = model  # what is validated and returned: the model or its moving average
    log.info("training on %d rows, %d users, %d items, %d windows, %s softmax, %d rank(s)",
             len(frame), len(vocab.user_ids), n_items, len(windows), "full" if full else "sampled",
             world)

    started, step, waited, since_best, best_seconds, lr = time.perf_counter(), 0, 0, 0, 0.0, 0.0
    best: tuple[float, int, int, dict] = (-np.inf, -1, 0, copy.deepcopy(kept.state_dict()))
    history: list[dict] = []
    schedule: Plan | None = None  # set once the first pass's batches are known
    stop: StopReason | None = None
    validated = 0  # the step of the last validation
    tick, seen, losses = time.perf_counter(), 0, []
    quiet = not sys.stderr.isatty() or rank > 0
    for epoch in tqdm(range(train.epochs), desc="epochs", disable=quiet):
        model.train()
        groups = batch_groups(windows, batch_size=train.batch_size, rng=rng)
        mine = groups[rank:len(groups) // world * world:world]
        if schedule is None:
            schedule = plan(train, len(mine), end_share)
            log.info("schedule: %d steps (%g schedule epochs of %.0f steps; %d steps a pass)%s",
                     schedule.steps, train.decay_epochs, schedule.steps_per_epoch, len(mine),
                     f", ending at step {schedule.end}" if schedule.end < schedule.steps else "")
            if train.ema_epochs:
                ema_every, decay = ema_updates(train.ema_epochs * schedule.steps_per_epoch)
                ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
                kept = ema.module
        for group in mine:
            if step >= schedule.end:
                break
            lr = learning_rate(train, (step + 1) / schedule.steps_per_epoch)
            for optimizer in optimizers:
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
            users, targets, seconds = windows.batch(
                group, asked if train.query_between or train.later_targets else None,
                train.query_between, train.later_targets, train.later_horizon)
            if hard is not None and step % train.validate_steps == 0:  # the current vectors
                with torch.no_grad():
                    model.eval()  # no dropout in what is mined
                    hard.mine(model.item_tower.catalogue())  # (N + 1, D)
                    model.train()
            if full:  # every item's representation once, for the history and the candidates
                candidates, labels, correction = all_items, targets - 1, None
                table = model.item_tower.catalogue()  # (N + 1, D)
                u, represented = model.users(users, table), table[1:]  # (Q, D), (N, D)
            else:
                candidates, labels, correction = sampled_candidates(
                    targets, n_items=n_items, n_uniform=train.uniform_negatives,
                    log_q=log_q, generator=generator, hard=None if hard is None else hard.draw(
                        targets, step / schedule.steps, generator))
                u, represented = model.users(users), None  # (Q, D)
            days, day = np.unique(seconds // DAY, return_inverse=True)  # (K,), (Q,)
            if not tower.item_popularity:
                buckets = None
            elif full:  # the catalogue on each day, cached
                buckets = popularity.catalogue(days, n_items)[:, 1:]  # (K, N, W)
            else:
                buckets = popularity.buckets(candidates.numpy(), days)  # (K, C, W)
            masked = seen_columns(users, candidates, n_items, labels) if train.mask_seen else None
            scored, index, weights, hidden = u, np.arange(len(targets)), None, masked
            if head is not None:  # liked rows are scored a second time, through their own head
                keep = np.flatnonzero(liked[windows.frame_rows[windows.queries(group)[1]]])
                scored, index = torch.cat([u, head(u[keep])]), np.concatenate([index, keep])
                weights = torch.cat([torch.ones(len(targets)),
                                     torch.full((len(keep),), train.liked_weight)])  # (R,)
                hidden = twin_pairs(masked, keep, len(targets)) if masked is not None else None
            logits = model.item_tower.logits(scored, candidates, buckets, torch.from_numpy(day[index]),
                                              temperature(), represented, seconds[index])  # (R, C)
            if correction is not None:
                logits = logits - correction  # (R, C)
            if hidden is not None:  # in place: the matmul's backward does not need its output
                logits.index_put_(hidden, torch.tensor(-torch.inf))
            if weights is None:
                total = F.cross_entropy(logits, labels, reduction="sum")  # (R, C) -> ()
            else:
                total = (F.cross_entropy(logits, labels[index], reduction="none") * weights).sum()
            if train.nested_dims:
                vectors = represented if represented is not None else model.item_tower.represent(
                    model.item_tower.known(candidates))  # (C, D)
                total = total + nested_loss(u, vectors, labels, train.nested_dims, temperature(),
                                            correction, masked)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            # Batches hold windows of similar length, so their row counts differ: dividing by a
            # constant rather than the batch's count weights every row alike.
            (total / train.batch_size).backward()
            if world > 1:
                _average_gradients(params, world)
            for optimizer in optimizers:
                optimizer.step()
            step += 1
            if ema is not None and step % ema_every == 0:
                ema.update_parameters(model)
            seen += len(targets)
            losses.append(total.item() / len(targets))
            if step % train.log_every == 0:
                ms = 1000 * (time.perf_counter() - tick) / max(len(losses), 1)
                log.info("step %d loss %.4f lr %.1e %.0f ms/step %.0f examples/s", step,
                         losses[-1], lr, ms, world * seen / (time.perf_counter() - tick))
        elapsed = time.perf_counter() - started
        ended = step >= schedule.end or epoch == train.epochs - 1
        capped = train.max_minutes is not None and elapsed > 60 * train.max_minutes
        if not (ended or capped or step - validated >= train.validate_steps):
            continue
        validated = step
        metric = validate(Artifact(kept)) if validate else -float(np.mean(losses))
        history.append({"epoch": epoch, "step": step, "lr": lr, "loss": float(np.mean(losses)),
                        "temperature": temperature.value(),
                        "val": metric, "seconds": round(elapsed, 1),
                        "examples_per_s": round(world * seen / (time.perf_counter() - tick))})
        log.info("epoch %d step %d loss %.4f val %.4f temperature %.4f (%.0f s)", epoch, step,
                 np.mean(losses), metric, history[-1]["temperature"], elapsed)
        # Patience counts validations from min_steps and, under a decay, from its midpoint on: at
        # a high lr validation is noisy, and a long schedule's best comes as the lr falls. Before
        # the midpoint twice the patience ends a run too: large sparse data can overfit from its
        # first passes on (notes: issue 18, part r).
        past_min = step >= min(train.min_steps, schedule.steps)
        settled = past_min and (not train.decay_epochs or lr <= train.lr / 2)
        if validate is None or metric > best[0]:  # without validation keep the last epoch
            best, waited, since_best = (metric, epoch, step, copy.deepcopy(kept.state_dict())), 0, 0
            best_seconds = elapsed
        else:
            waited += settled
            since_best += past_min
        tick, seen, losses = time.perf_counter(), 0, []
        patient = waited >= train.patience or since_best >= 2 * train.patience
        stop = _agreed("budget" if ended else "early_stopping" if patient else
                       "cap" if capped else None, world)
        if stop:
            break
    assert stop is not None and schedule is not None  # the last pass always ends the run
    improving = validate is not None and best[2] == step  # the last validation was the best
    if stop == "cap":
        log.warning("max_minutes=%g ended training at step %d of the schedule's %d (epoch %d)%s",
                    train.max_minutes, step, schedule.steps, epoch,
                    ", validation still improving" if improving else "")
    elif stop == "budget" and improving:
        log.warning("the budget ended training at step %d (epoch %d) with validation still "
                    "improving (%.4f): more min_steps, decay_epochs or epochs may help", step,
                    epoch, best[0])
    model.load_state_dict(best[3])
    model.eval()
    metrics = {"val": best[0], "best_epoch": best[1], "best_step": best[2], "steps": step,
               "schedule_steps": schedule.steps, "stopped_by": stop,
               "improving_at_stop": improving, "seconds_to_best": round(best_seconds, 1),
               "temperature": temperature.value(),
               "seconds_total": round(time.perf_counter() - started, 1), "ranks": world,
               "history": history}
    artifact = Artifact(model, metrics, fingerprint(frame, items), train.model_dump(),
                        prior=PopularityPrior(train.popularity_prior or 0.0, counts,
                                              int(event_seconds.max())))
    if validate is not None:  # `val` is the served model's: a fixed weight is scored alone
        fixed = train.popularity_prior
        pick_prior(artifact, validate.by_prior(artifact, WEIGHTS if fixed is None else (fixed,)))
    metrics["popularity_prior"] = artifact.prior.weight
    return artifact


def pick_prior(artifact: Artifact, scores: dict[float, float]) -> None:
    """Give the artifact the prior weight whose validation `scores` is best (the first of equals);
    the metrics record each weight's score and `val` becomes the chosen one's."""
    weight = max(scores, key=scores.__getitem__)
    log.info("popularity prior: weight %g, validation %.4f (the towers alone: %.4f)", weight,
             scores[weight], artifact.metrics["val"])
    artifact.prior = artifact.prior.with_weight(weight)
    artifact.metrics.update(val=scores[weight],
                            val_by_prior={str(w): round(v, 4) for w, v in scores.items()})


class Temperature(nn.Module):
    """The softmax temperature: fixed, or learned as a log scale (CLIP's, capped at 1/100)."""

    def __init__(self, start: float, *, learned: bool) -> None:
        super().__init__()
        log_scale = torch.tensor(-math.log(start))
        self.log_scale = nn.Parameter(log_scale) if learned else None
        self.fixed = start

    def forward(self) -> torch.Tensor | float:
        if self.log_scale is None:
            return self.fixed
        return torch.exp(-self.log_scale.clamp(max=math.log(100)))

    def value(self) -> float:
        """The current temperature as a number (for logs and metrics)."""
        with torch.no_grad():
            return round(float(self()), 4)


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sparse_id_tables(model: TwoTower, rows: int, world: int) -> list[nn.Embedding]:
    """The ID tables with more than `rows` rows, switched to sparse gradients: a step then touches
    the rows of its batch only. With several ranks they stay dense (the all-reduce is dense)."""
    if world > 1:
        return []
    tables = [t for t in (model.item_tower.ids, model.user_tower.users)
              if t is not None and t.num_embeddings > rows]
    for table in tables:
        table.sparse = True
    return tables


def _optimizers(params: list[nn.Parameter], sparse: list[nn.Embedding],
                train: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam (fused: one pass over each tensor) for every parameter, but a lazy Adam for the sparse
    tables: it moves only the rows a batch looked up."""
    tables = {id(t.weight) for t in sparse}
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(
        [p for p in params if id(p) not in tables], lr=train.lr, weight_decay=train.weight_decay,
        fused=True)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam([t.weight for t in sparse], lr=train.lr))
    return optimizers


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """All-reduce every gradient (one flat buffer; a parameter unused on a rank counts as 0)."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _agreed(stop: StopReason | None, world: int) -> StopReason | None:
    """Rank 0's decision, so every rank leaves the loop after the same epoch."""
    if world == 1:
        return stop
    code = torch.tensor([STOP_REASONS.index(stop) if stop else -1])
    dist.broadcast(code, src=0)
    return STOP_REASONS[int(code.item())] if code.item() >= 0 else None


# ---------------------------------------------------------------- CLI

def fit_split(split: evaluate.Split, items: pd.DataFrame, store, *, tower: TowerConfig | None = None,
              train: TrainConfig | None = None) -> Artifact:
    """Train with early stopping on the split's validation; TEMPORAL then refits on every event
    before the test cut (`refit`).

    `store` is the dataset's Feast store (`towers.features.feature_store`) and `split` carries its
    user features (`towers.features.with_features`).
    """
    from towers.features import examples

    if "recent_item_ids" not in split.validation.frame:
        raise ValueError("split: its queries have no user features; pass it through "
                         "towers.features.with_features(split, store) first")
    train = train or TrainConfig()
    frame = examples(store, split.test_train)  # the refit's rows; the first fit's are a subset
    first_rows = split.test_train.index.isin(split.train.index)
    artifact = fit(frame[first_rows].reset_index(drop=True), items, tower=tower, train=train,
                   validate=evaluate.Validator(split.validation, items))
    if split.test_train is not split.train:  # TEMPORAL: refit on everything before the test cut
        artifact = refit(artifact, frame, items, tower=tower, train=train)
    artifact.metrics[TRAINED_ON_SPLIT] = trained_on_split(split, items)
    return artifact


def trained_on_split(split: evaluate.Split, items: pd.DataFrame) -> str:
    """The protocol and a fingerprint of the events a model of `split` may know before its test."""
    return f"{split.protocol}:{fingerprint(split.test_train, items)}"


def refit(first: Artifact, frame: pd.DataFrame, items: pd.DataFrame, *,
          tower: TowerConfig | None = None, train: TrainConfig | None = None) -> Artifact:
    """`first`'s run again on `frame` (its events and later ones), with `first`'s prior weight,
    ended at the share of the schedule where `first`'s validation had its best.

    Its lr is then where the first fit's was at its best, not annealed in fewer passes: on the
    validation period that scored higher (notes: issue 18, part y). The metrics are the refit's
    own (`steps`, `schedule_steps`, `history`) but for what validation decided, which is the first
    fit's (`val`, `best_epoch`, `best_step`, `first_schedule_steps`, `stopped_by`, ...).
    """
    decided = first.metrics
    share = fractions.Fraction(decided["best_step"], decided["schedule_steps"])  # exact: no step more
    again = (train or TrainConfig()).model_copy(update={"popularity_prior": first.prior.weight})
    artifact = fit(frame, items, tower=tower, train=again, end_share=share)
    artifact.metrics.update(val=decided["val"], best_epoch=decided["best_epoch"],
                            best_step=decided["best_step"], val_by_prior=decided.get("val_by_prior"),
                            seconds_to_best=decided["seconds_to_best"],
                            stopped_by=decided["stopped_by"],
                            improving_at_stop=decided["improving_at_stop"],
                            first_schedule_steps=decided["schedule_steps"],
                            refit_share=float(share),
                            refit_stopped_by=artifact.metrics["stopped_by"],
                            refit_seconds=artifact.metrics["seconds_total"])
    return artifact


class Run(Config):
    """The CLI's own keys, beside TowerConfig's and TrainConfig's."""

    dataset: str = "movielens-100k:../shared/datasets/ml-100k"  # the checkouts' shared data dir
    protocol: Literal["loo", "temporal"] = "loo"  # leave-one-out: the published baselines' split
    preset: str = ""  # a TOML file of config keys (towers/configs/); --key=value overrides it
    out: str = ""  # the artifact's directory; "" saves nothing, a CLI run only prints metrics
    # torch threads per process: 1 is how the notes' runs were made (two runs share two cores);
    # a run alone on the machine may take every core
    threads: Count = 1


def main(argv: list[str] | None = None) -> None:
    """Train on a split and print its test metrics; under torchrun, one process per rank."""
    from feature_repo.datasets import load
    from towers.features import feature_store, with_features

    run, tower, train = parse_cli(sys.argv[1:] if argv is None else argv, Run(), TowerConfig(),
                                  TrainConfig())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(run.threads)
    if "WORLD_SIZE" in os.environ:  # started by torchrun: CPU processes talk over gloo
        dist.init_process_group("gloo")
    rank, _ = _distributed()
    if rank > 0:  # rank 0 speaks for all
        logging.getLogger().setLevel(logging.WARNING)
    ds = load(run.dataset)
    with tempfile.TemporaryDirectory(prefix=f"towers-rank{rank}-") as home:
        store = feature_store(ds, tower.max_len, home)
        split = with_features(evaluate.make_split(ds, run.protocol), store)
        artifact = fit_split(split, ds.items, store, tower=tower, train=train)
    if rank == 0:
        test = evaluate.evaluate(evaluate.two_tower(artifact, ds.items), split.test)
        artifact.metrics.update(test=test, dataset=run.dataset, protocol=run.protocol,
                                split=split.notes)
        if run.out:
            artifact.save(run.out)
        result = {k: round(v, 4) if isinstance(v, float) else v for k, v in test.items()}
        speed = np.mean([h["examples_per_s"] for h in artifact.metrics["history"]])
        line = (f"two-tower {run.protocol} {result} best_epoch={artifact.metrics['best_epoch']}"
                f" seconds_to_best={artifact.metrics['seconds_to_best']} "
                f"examples_per_s={speed:.0f} ranks={artifact.metrics['ranks']}")
        print(line)  # noqa: T201 (CLI entry point)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
