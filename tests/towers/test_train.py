"""Training on Feast frames: prefix windows equal the point-in-time lookup, negatives, the loss going
down on real data, the schedule and what ends it, determinism and two-process (gloo) training."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from feature_repo.store import ENTITY_COLUMNS, write_training_frame
from tests.towers.conftest import MAX_LEN
from towers import evaluate
from towers.artifact import Artifact
from towers.data import (
    Vocab,
    batch_chunks,
    catalogue_content,
    encode_users,
    frame_windows,
    sampled_candidates,
)
from towers.model import TowerConfig, TwoTower
from towers.train import (
    Plan,
    TrainConfig,
    _optimizers,
    _sparse_id_tables,
    ema_updates,
    fit,
    learning_rate,
    main,
    plan,
)

THREADS = torch.get_num_threads()  # restored after a test that sets them


def test_every_prefix_is_exactly_its_rows_feast_history(small_frame):
    chunks = frame_windows(small_frame, MAX_LEN)
    rows = np.concatenate([c.rows for c in chunks])
    assert sorted(rows.tolist()) == list(range(len(small_frame)))  # every row, once
    counts = small_frame["event_count"]
    assert (counts > MAX_LEN).sum() > 300 and (counts <= MAX_LEN).sum() > 300  # both regimes
    assert small_frame.duplicated(["user_id", "event_timestamp"]).sum() > 50  # same-second ties
    assert len(chunks) < len(small_frame) / 2  # windows are shared
    for chunk in chunks:
        for row, pos, target in zip(chunk.rows, chunk.query_pos, chunk.targets, strict=True):
            feast = small_frame.iloc[row]
            np.testing.assert_array_equal(chunk.items[:pos + 1], feast["recent_item_ids"])
            np.testing.assert_array_equal(chunk.item_seconds[:pos + 1], feast["recent_timestamps"])
            assert target == feast["item_id"]


def test_prefix_queries_carry_the_time_since_their_last_visible_event_like_feast_rows(
        ml, small_frame):
    vocab = Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)
    chunks = frame_windows(small_frame, MAX_LEN)
    order = np.concatenate([c.rows for c in chunks])
    prefix = batch_chunks(vocab, chunks).query_gap
    direct = encode_users(vocab, small_frame.iloc[order], MAX_LEN).query_gap
    torch.testing.assert_close(prefix, direct)
    assert (prefix == 0).sum() == (small_frame["event_count"] == 0).sum()  # no history: bucket 0
    assert len(prefix.unique()) > 10  # same second to months


STRIDE = MAX_LEN // 2  # a long window's newer half are queries


def test_strided_windows_show_each_row_the_newest_events_of_its_feast_history_only(small_frame):
    chunks = frame_windows(small_frame, MAX_LEN, STRIDE)
    rows = np.concatenate([c.rows for c in chunks])
    assert sorted(rows.tolist()) == list(range(len(small_frame)))  # every row, once
    assert len(chunks) < len(frame_windows(small_frame, MAX_LEN)) / 4  # far fewer passes
    truncated = 0
    for chunk in chunks:
        for row, pos, target, when in zip(chunk.rows, chunk.query_pos, chunk.targets,
                                          chunk.seconds, strict=True):
            feast = small_frame.iloc[row]
            history, stamps = feast["recent_item_ids"], feast["recent_timestamps"]
            seen = pos + 1
            assert seen >= min(len(history), MAX_LEN - STRIDE)
            np.testing.assert_array_equal(chunk.items[:seen], history[len(history) - seen:])
            np.testing.assert_array_equal(chunk.item_seconds[:seen], stamps[len(stamps) - seen:])
            assert (chunk.item_seconds[:seen] < when).all()  # strictly before the row: no leak
            assert target == feast["item_id"]
            truncated += seen < len(history)
    assert truncated > 300  # most long rows share a window with a newer row


@pytest.mark.parametrize("stride", [0, STRIDE], ids=["exact", "strided"])
def test_prefix_pass_embeds_every_row_like_its_feast_row_cut_to_what_it_sees(ml, small_frame,
                                                                             stride):
    """Exact windows show each row its whole Feast history (the cut below is then a no-op)."""
    vocab = Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32)
    chunks = frame_windows(small_frame, MAX_LEN, stride)
    order = np.concatenate([c.rows for c in chunks])
    seen = np.concatenate([c.query_pos for c in chunks]) + 1
    rows = small_frame.iloc[order].copy()
    lengths = rows["recent_item_ids"].map(len).to_numpy()
    assert (seen == lengths).all() if stride == 0 else (seen < lengths).sum() > 300
    for column in ("recent_item_ids", "recent_timestamps"):
        rows[column] = [np.asarray(h)[len(h) - k:] for h, k in zip(rows[column], seen, strict=True)]
    for encoder in ("transformer", "gru", "mean"):
        torch.manual_seed(0)
        model = TwoTower(TowerConfig(dim=16, max_len=MAX_LEN, encoder=encoder), vocab,
                         catalogue_content(vocab, ml.items)).eval()
        with torch.no_grad():
            prefix = model.users(batch_chunks(vocab, chunks)).numpy()
        direct = Artifact(model).embed_users(rows)
        np.testing.assert_allclose(prefix, direct, atol=2e-5, err_msg=encoder)


def test_a_stride_outside_the_window_is_refused_naming_it(small_frame):
    with pytest.raises(ValueError, match=f"stride={MAX_LEN}"):
        frame_windows(small_frame, MAX_LEN, MAX_LEN)


def test_frame_from_a_store_with_other_history_length_is_refused_naming_it(small_frame):
    with pytest.raises(ValueError, match="history_length=10"):
        frame_windows(small_frame, 10)
    with pytest.raises(ValueError, match="history_length=30"):
        frame_windows(small_frame, 30)  # truncated at 20, so not what a 30-event model expects


def test_sampled_candidates_hold_each_batch_item_once_so_duplicates_are_not_negatives():
    targets = torch.tensor([5, 3, 5, 7])
    log_q = torch.log(torch.full((11,), 0.1))
    candidates, labels, correction = sampled_candidates(
        targets, n_items=10, n_uniform=20, log_q=log_q, generator=torch.Generator().manual_seed(0))
    assert candidates[:3].tolist() == [3, 5, 7]
    assert len(set(candidates.tolist())) == len(candidates)
    assert candidates[labels].tolist() == targets.tolist()
    np.testing.assert_allclose(correction.exp().numpy(), 4 * 0.1 + 20 / 10, rtol=1e-5)


def test_loss_decreases_on_a_small_real_slice(ml, small_frame):
    artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=32, max_len=MAX_LEN),
                   train=TrainConfig(epochs=4, batch_size=256, patience=10, validate_steps=1))
    losses = [h["loss"] for h in artifact.metrics["history"]]
    assert losses[-1] < losses[0] - 0.1, losses


def test_sampled_softmax_with_mixed_negatives_also_learns(ml, small_frame):
    artifact = fit(small_frame, ml.items,
                   tower=TowerConfig(dim=16, max_len=MAX_LEN, encoder="gru"),
                   train=TrainConfig(epochs=3, batch_size=256, loss="sampled",
                                     uniform_negatives=128, patience=10, validate_steps=1))
    losses = [h["loss"] for h in artifact.metrics["history"]]
    assert losses[-1] < losses[0], losses


def test_large_id_tables_move_only_the_rows_a_step_looked_up(ml, small_frame):
    """Above `sparse_ids_above` rows an ID table gets sparse gradients and a lazy Adam: a row
    looked up in one step is left alone by the next (a dense Adam's momentum would move it)."""
    model = TwoTower(TowerConfig(dim=16, max_len=MAX_LEN),
                     Vocab.build(small_frame, ml.items, title_buckets=64, profile_buckets=32), {})
    assert _sparse_id_tables(model, 10**6, world=1) == []
    assert _sparse_id_tables(model, 0, world=2) == []  # the ranks' all-reduce is dense
    tables = _sparse_id_tables(model, 0, world=1)
    assert tables == [model.item_tower.ids, model.user_tower.users]
    dense, lazy = _optimizers(list(model.parameters()), tables, TrainConfig())
    assert isinstance(lazy, torch.optim.SparseAdam) and len(lazy.param_groups[0]["params"]) == 2
    assert len(dense.param_groups[0]["params"]) == len(list(model.parameters())) - 2

    def step(rows: list[int]) -> torch.Tensor:
        for optimizer in (dense, lazy):
            optimizer.zero_grad(set_to_none=True)
        model.item_tower.ids(torch.tensor(rows)).sum().backward()
        assert model.item_tower.ids.weight.grad.is_sparse
        for optimizer in (dense, lazy):
            optimizer.step()
        return model.item_tower.ids.weight.detach().clone()

    before = model.item_tower.ids.weight.detach().clone()
    first = step([1, 2])
    second = step([3])
    assert not torch.equal(first[1:3], before[1:3]) and not torch.equal(second[3], first[3])
    torch.testing.assert_close(second[1:3], first[1:3], rtol=0, atol=0)


def test_a_fit_with_sparse_id_tables_learns(ml, small_frame):
    artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=32, max_len=MAX_LEN),
                   train=TrainConfig(epochs=4, batch_size=256, patience=10, validate_steps=1,
                                     sparse_ids_above=0))
    losses = [h["loss"] for h in artifact.metrics["history"]]
    assert losses[-1] < losses[0] - 0.1, losses


def test_a_learned_temperature_moves_from_its_start_and_a_fixed_one_stays(ml, small_frame):
    def temperatures(learned: bool) -> list[float]:
        artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=TrainConfig(epochs=2, batch_size=256, min_steps=1, patience=10,
                                         validate_steps=1, temperature=0.2,
                                         learn_temperature=learned))
        return [h["temperature"] for h in artifact.metrics["history"]]

    assert set(temperatures(False)) == {0.2}
    learned = temperatures(True)
    assert all(0.01 <= t for t in learned) and abs(learned[-1] - 0.2) > 1e-3, learned


def test_ema_keeps_the_moving_average_of_the_weights_training_went_through(ml, small_frame):
    def weights(epochs: int, ema_epochs: float) -> dict[str, torch.Tensor]:
        artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=TrainConfig(epochs=epochs, batch_size=100_000, decay_epochs=0,
                                         min_steps=1, validate_steps=1, ema_epochs=ema_epochs))
        assert artifact.metrics["steps"] == epochs  # one batch a pass: a step per pass
        return dict(artifact.model.named_parameters())

    # A horizon of 4 one-step epochs: a decay of 3/4. The first step's weights, then 3/4 of the
    # average and 1/4 of the new weights.
    first, second, averaged = weights(1, 0.0), weights(2, 0.0), weights(2, 4.0)
    for name, value in averaged.items():
        torch.testing.assert_close(value, 0.75 * first[name] + 0.25 * second[name])
    assert not torch.allclose(averaged["item_tower.ids.weight"], second["item_tower.ids.weight"])


def test_a_long_moving_average_is_updated_every_few_steps_with_the_same_horizon():
    assert ema_updates(4) == (1, 0.75)  # short: every step
    every, decay = ema_updates(960)  # ml-1m-dev's 3 passes: every 10th step
    assert every == 10 and decay == pytest.approx((1 - 1 / 960) ** 10)
    assert 1 / (1 - decay) * every == pytest.approx(960, rel=0.01)  # the horizon in steps holds


def test_learning_rate_warms_up_linearly_then_decays_to_zero_at_decay_epochs():
    train = TrainConfig(lr=0.01, warmup_epochs=0.5, decay_epochs=4.5)
    assert learning_rate(train, 0.25) == pytest.approx(0.005)
    assert learning_rate(train, 0.5) == pytest.approx(0.01)
    assert learning_rate(train, 2.5) == pytest.approx(0.005)  # cosine: half way, half the lr
    assert learning_rate(train, 4.5) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(lr=0.01, decay_epochs=0), 3.0) == 0.01  # constant
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=2, decay_epochs=1)


def test_the_plan_stretches_small_data_to_min_steps_and_squeezes_into_epochs():
    train = TrainConfig(decay_epochs=6, min_steps=1000)
    assert plan(train, 500) == Plan(3000, 500, 3000)  # large data: decay_epochs passes
    assert plan(train, 4) == Plan(1000, 1000 / 6, 1000)  # small data: a schedule epoch is 41+ passes
    assert plan(train.model_copy(update={"epochs": 2}), 4) == Plan(8, 8 / 6, 8)  # the budget binds
    assert plan(train.model_copy(update={"decay_epochs": 0, "epochs": 9}), 4) == Plan(36, 4, 36)


def test_the_plan_ends_training_at_a_share_of_its_schedule():
    train = TrainConfig(decay_epochs=1, min_steps=100)
    assert plan(train, 100, Fraction(1, 3)) == Plan(100, 100, 34)  # rounded up
    assert plan(train, 100, Fraction(29, 100)).end == 29  # exact: 0.29 * 100 in floats is 29.000...04
    assert plan(train, 100, 0).end == 1  # at least one step
    assert plan(train, 100, 1).end == 100


def test_fit_follows_the_schedule_and_ends_with_it(ml, small_frame, caplog):
    train = TrainConfig(epochs=50, batch_size=256, lr=0.01, warmup_epochs=0.5, decay_epochs=2,
                        min_steps=1, validate_steps=1, patience=50, log_every=1)
    with caplog.at_level("INFO", logger="towers.train"):
        artifact = fit(_tiny(small_frame), ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=train)
    assert len(artifact.metrics["history"]) == 2  # the schedule's end, not `epochs`
    assert artifact.metrics["stopped_by"] == "budget"
    lrs = [float(r.getMessage().split(" lr ")[1].split()[0]) for r in caplog.records
           if " lr " in r.getMessage()]
    peak = int(np.argmax(lrs))
    assert lrs[0] < 0.01 and max(lrs) == pytest.approx(0.01, rel=0.05) and lrs[-1] == 0.0
    assert lrs[:peak + 1] == sorted(lrs[:peak + 1]) and lrs[peak:] == sorted(lrs[peak:])[::-1]


def test_a_run_ended_at_a_share_of_its_schedule_keeps_the_schedules_learning_rate(ml, small_frame):
    train = TrainConfig(batch_size=256, lr=0.01, warmup_epochs=0.5, decay_epochs=4, min_steps=40,
                        validate_steps=1, patience=50)
    artifact = fit(_tiny(small_frame), ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=train, end_share=0.5)
    metrics = artifact.metrics
    assert metrics["schedule_steps"] == 40 and metrics["steps"] == 20  # the schedule is not squeezed
    assert metrics["stopped_by"] == "budget"
    # The last step's lr is the schedule's halfway, not annealed to 0 as at a schedule's end.
    halfway = learning_rate(train, 20 / 10)
    assert metrics["history"][-1]["lr"] == pytest.approx(halfway) and halfway > 0.005


def _tiny(frame):
    return frame[frame["user_id"] <= 15].reset_index(drop=True)


def test_a_tiny_dataset_trains_for_the_schedules_minimum_steps(ml, tiny_split):
    split, frame = tiny_split
    train = TrainConfig(batch_size=256, decay_epochs=6, min_steps=100, validate_steps=20, patience=1)
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN), train=train,
                   validate=evaluate.Validator(split.validation, ml.items))
    metrics, history = artifact.metrics, artifact.metrics["history"]
    passes = history[-1]["epoch"] + 1
    assert metrics["schedule_steps"] == metrics["steps"] == 100  # patience 1 waited for min_steps
    assert passes > train.decay_epochs  # a pass is too short for a schedule epoch here
    assert metrics["stopped_by"] == "budget" and history[-1]["lr"] == pytest.approx(0, abs=1e-9)
    steps = [h["step"] for h in history]  # validations: every >= 20 steps, and at the end
    assert len(steps) >= 4 and min(np.diff(steps[:-1])) >= 20


def test_past_min_steps_early_stopping_ends_a_flat_schedule(ml, tiny_split):
    split, frame = tiny_split
    train = TrainConfig(batch_size=256, decay_epochs=0, min_steps=1, validate_steps=1,
                        patience=1, epochs=60, popularity_prior=0.0)
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN), train=train,
                   validate=evaluate.Validator(split.validation, ml.items))
    assert artifact.metrics["stopped_by"] == "early_stopping"
    assert artifact.metrics["history"][-1]["epoch"] < 59
    assert artifact.metrics["val"] == max(h["val"] for h in artifact.metrics["history"])


class Scripted:
    """Validation scores as a function of the call count: the schedule is what is tested."""

    def __init__(self, score):
        self.score, self.calls = score, 0

    def __call__(self, artifact) -> float:
        self.calls += 1
        return self.score(self.calls)

    def by_prior(self, artifact, weights) -> dict[float, float]:
        return {weight: 0.0 for weight in weights}


def test_under_a_decay_patience_counts_only_validations_past_the_lr_midpoint(ml, tiny_split):
    _, frame = tiny_split
    train = TrainConfig(batch_size=256, lr=0.01, decay_epochs=30, min_steps=1, validate_steps=1,
                        patience=2, popularity_prior=0.0)
    # A gain every third validation: `patience` validations without one between gains.
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN), train=train,
                   validate=Scripted(lambda n: n // 3))
    history = artifact.metrics["history"]
    settled = [h for h in history if h["lr"] <= train.lr / 2]  # past the decay's midpoint
    assert len(history) - len(settled) > 3 * train.patience  # such gaps came before it ...
    assert settled and history[-1] is settled[-1]  # ... and did not stop the run
    assert artifact.metrics["stopped_by"] == "early_stopping" and len(settled) <= 3


def test_before_the_lr_midpoint_twice_the_patience_without_gain_stops_a_run(ml, tiny_split):
    _, frame = tiny_split
    train = TrainConfig(batch_size=256, decay_epochs=30, min_steps=1, validate_steps=1,
                        patience=2, popularity_prior=0.0)
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN), train=train,
                   validate=Scripted(lambda n: 1 / n))  # falls from the first: overfitting
    history = artifact.metrics["history"]
    assert artifact.metrics["stopped_by"] == "early_stopping"
    assert len(history) == 1 + 2 * train.patience
    assert artifact.metrics["best_step"] == history[0]["step"]
    assert all(h["lr"] > train.lr / 2 for h in history)  # all before the decay's midpoint


@pytest.mark.parametrize("cut", ["cap", "budget"])
def test_a_cap_or_budget_ending_an_improving_run_is_recorded_and_warned(ml, tiny_split, caplog,
                                                                        cut):
    split, frame = tiny_split
    train = (TrainConfig(batch_size=256, max_minutes=1e-9) if cut == "cap"
             else TrainConfig(batch_size=256, epochs=1))
    with caplog.at_level("WARNING", logger="towers.train"):
        artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN), train=train,
                       validate=evaluate.Validator(split.validation, ml.items))
    metrics = artifact.metrics
    assert metrics["stopped_by"] == cut and metrics["improving_at_stop"]
    assert len(metrics["history"]) == 1 and metrics["history"][0]["epoch"] == 0
    assert metrics["steps"] < 1000  # the default schedule's min_steps
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert ("max_minutes" if cut == "cap" else "the budget") in warning.getMessage()


def test_rows_asked_between_their_events_train_the_query_context_on_those_times(ml, small_frame):
    def query_gap(between: float) -> torch.Tensor:
        artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=TrainConfig(epochs=1, batch_size=256, min_steps=1, ema_epochs=0,
                                         query_between=between))
        return artifact.model.user_tower.query_gap.weight.detach()

    at_events, between = query_gap(0.0), query_gap(1.0)
    torch.testing.assert_close(query_gap(0.0), at_events)  # no draws at 0: runs repeat
    assert not torch.allclose(at_events, between)


def test_later_targets_train_on_what_the_user_does_next(ml, small_frame):
    def items(later: float, horizon: int = 10) -> np.ndarray:
        # no query times drawn, one pass: the batches and their order are the same in every
        # run, so only the targets can tell the runs apart
        artifact = fit(small_frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=TrainConfig(epochs=1, batch_size=256, min_steps=1, ema_epochs=0,
                                         query_between=0, later_targets=later,
                                         later_horizon=horizon))
        return artifact.embed_items(ml.items)

    own = items(0.0)
    np.testing.assert_array_equal(items(1.0, horizon=1), own)  # its own row is all it may draw
    assert not np.allclose(items(1.0), own)
    with pytest.raises(ValueError, match="later_targets and liked_weight"):
        TrainConfig(later_targets=0.5, liked_weight=1.0)


def test_same_seed_gives_identical_models(ml, small_frame):
    config, train = TowerConfig(dim=16, max_len=MAX_LEN), TrainConfig(epochs=1, batch_size=64)
    first = fit(_tiny(small_frame), ml.items, tower=config, train=train)
    second = fit(_tiny(small_frame), ml.items, tower=config, train=train)
    np.testing.assert_array_equal(first.embed_items(ml.items), second.embed_items(ml.items))


def test_fit_reads_the_parquet_frame_feast_streams_with_the_same_windows(ml, small, small_store,
                                                                          small_frame, tmp_path):
    events = small.interactions[small.interactions["user_id"] <= 15]
    path = write_training_frame(small_store, events[ENTITY_COLUMNS], tmp_path / "rows.parquet")
    assert path == len(events)

    def windows(frame):
        return sorted((c.user_id, tuple(c.items), tuple(sorted(c.targets)))
                      for c in frame_windows(frame, MAX_LEN))

    assert windows(pd.read_parquet(tmp_path / "rows.parquet")) == windows(_tiny(small_frame))
    artifact = fit(tmp_path / "rows.parquet", ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=TrainConfig(epochs=1, batch_size=64))
    assert np.isfinite(artifact.embed_items(ml.items)).all()


def _train_rank(rank: int, frame, items, out: str) -> None:
    """One torchrun-like process: gloo (met through a file, so no port to race for), a few steps,
    its weights saved."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/gloo-rendezvous", rank=rank,
                            world_size=2)
    try:
        artifact = fit(frame, items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                       train=TrainConfig(epochs=2, batch_size=64))
        torch.save({"state": artifact.model.state_dict(), "metrics": artifact.metrics},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_on_shards_and_end_with_identical_weights(ml, small_frame,
                                                                          tmp_path):
    mp.spawn(_train_rank, args=(_tiny(small_frame), ml.items, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["metrics"]["ranks"] == 2
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    # each rank saw its own shard: the per-rank losses differ, the weights do not
    assert ranks[0]["metrics"]["history"][0]["loss"] != ranks[1]["metrics"]["history"][0]["loss"]
    single = fit(_tiny(small_frame), ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                 train=TrainConfig(epochs=2, batch_size=64)).model.state_dict()
    assert any(not torch.equal(v, single[k]) for k, v in ranks[0]["state"].items())


def test_the_cli_trains_on_the_threads_asked_and_prints_its_test_line(capsys):
    torch.set_num_threads(1)
    try:
        main(["--dataset=synthetic:items=20,users=40,events=400,seed=0", "--threads=2",
              "--min_steps=20", "--decay_epochs=2", "--dim=16"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(THREADS)
    line = capsys.readouterr().out.strip()
    assert line.startswith("two-tower loo {") and "'ndcg@10': " in line and "ranks=1" in line
