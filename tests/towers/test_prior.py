"""The popularity prior: one more coordinate adds weight * log(1 + count) to the served dot product,
its weight picked on validation, carried by the artifact and by a TEMPORAL refit."""

from __future__ import annotations

import dataclasses
import fractions
import math

import numpy as np
import pytest

from index.model_store import default_quantization
from tests.towers.conftest import MAX_LEN
from towers import evaluate
from towers.artifact import Artifact
from towers.data import unix_seconds
from towers.features import with_features
from towers.model import TowerConfig
from towers.prior import PopularityPrior
from towers.train import TrainConfig, fit, fit_split, pick_prior

FAST = dict(batch_size=256, decay_epochs=2, min_steps=20, validate_steps=10)


def test_the_extra_coordinate_adds_weight_times_log_count_to_every_dot_product():
    rng = np.random.default_rng(0)
    counts = np.array([7, 0, 1, 30, 2_000])  # index 0 is the unknown item: never counted
    prior = PopularityPrior(0.2, counts)
    items, users = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    index = np.array([0, 1, 2, 3, 4, 4])
    scores = prior.users(users) @ prior.items(items, index).T
    expected = users @ items.T + 0.2 * np.log1p([0, 0, 1, 30, 2_000, 2_000])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    largest = np.sqrt(0.2 * np.log1p(2_000))  # the user's coordinate is the largest item one
    assert prior.extra_dims == 1 and prior.items(items, index)[:, -1].max() == pytest.approx(largest)
    assert prior.users(users)[:, -1] == pytest.approx(largest)
    served = prior.items(items, index)
    np.testing.assert_array_equal(prior.towers(served), items)  # the towers' own, back
    np.testing.assert_allclose(prior.alone(served) @ served.T, items @ items.T, rtol=1e-5, atol=1e-5)
    off = prior.with_weight(0.0)
    assert off.extra_dims == 0 and off.items(items, index) is items and off.users(users) is users


def test_the_weight_that_validates_best_is_picked_the_smallest_of_equals(ml, tiny_split):
    split, frame = tiny_split
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=TrainConfig(**FAST, popularity_prior=0.0))
    artifact.metrics["val"] = 0.1
    by_weight = {0.0: 0.1, 0.1: 0.2, 0.2: 0.3, 0.3: 0.3, 0.5: 0.25}
    pick_prior(artifact, by_weight)
    assert artifact.prior.weight == 0.2 and artifact.metrics["val"] == 0.3
    assert artifact.metrics["val_by_prior"] == {"0.0": 0.1, "0.1": 0.2, "0.2": 0.3, "0.3": 0.3,
                                                "0.5": 0.25}


def test_scores_by_prior_weight_are_the_served_artifacts_validation(ml, tiny_split):
    split, frame = tiny_split
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN, use_user_id=False),
                   train=TrainConfig(**FAST, popularity_prior=0.0))
    validate = evaluate.Validator(split.validation, ml.items)
    scores = validate.by_prior(artifact, (0.0, 0.05, 0.5, 1.0))
    for weight, score in scores.items():
        served = dataclasses.replace(artifact, prior=artifact.prior.with_weight(weight))
        assert score == pytest.approx(validate(served), abs=1e-6)
    assert len(set(scores.values())) > 1, "the weights rank differently on this slice"


def test_fit_serves_the_picked_prior_and_counts_its_own_training_events(ml, tiny_split, tmp_path):
    split, frame = tiny_split
    validate = evaluate.Validator(split.validation, ml.items)
    # Towers without user IDs: on this slice their validation picks a prior.
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN, use_user_id=False),
                   train=TrainConfig(**FAST), validate=validate)
    metrics = artifact.metrics
    weight = artifact.prior.weight
    assert weight > 0, "this slice's validation picks a prior, so the served path is exercised"
    assert metrics["popularity_prior"] == weight
    assert metrics["val_by_prior"][str(weight)] == max(metrics["val_by_prior"].values())
    assert validate(artifact) == pytest.approx(metrics["val"])  # the served vectors carry it
    vocab = artifact.model.vocab
    np.testing.assert_array_equal(artifact.prior.counts[vocab.item_index(frame["item_id"])] > 0, True)
    assert artifact.prior.counts.sum() == len(frame)
    # The newest counted event: items created later have no count (the service's new-item place)
    assert artifact.prior.as_of == unix_seconds(frame["event_timestamp"]).max()
    assert artifact.prior.hides_new_items() and artifact.prior.with_weight(0.5).as_of == \
        artifact.prior.as_of
    loaded = Artifact.load(artifact.save(tmp_path / "a"))
    assert loaded.prior.weight == weight and loaded.prior.as_of == artifact.prior.as_of
    np.testing.assert_allclose(loaded.embed_items(ml.items), artifact.embed_items(ml.items))
    assert artifact.embed_items(ml.items).shape[1] == artifact.dim == 16 + artifact.prior.extra_dims


def test_an_artifact_saved_before_the_prior_loads_without_one(ml, tiny_split, tmp_path):
    _, frame = tiny_split
    artifact = fit(frame, ml.items, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                   train=TrainConfig(**FAST, popularity_prior=0.3))
    path = artifact.save(tmp_path / "a")
    meta = (path / "artifact.json").read_text()
    (path / "artifact.json").write_text(meta.replace('"popularity_prior"', '"unknown_key"'))
    loaded = Artifact.load(path)
    assert loaded.prior.weight == 0.0 and loaded.embed_items(ml.items).shape[1] == 16
    assert artifact.embed_items(ml.items).shape[1] == 17
    before_as_of = PopularityPrior.from_dict({"weight": 0.3, "counts": [0, 4]})  # an older artifact
    assert before_as_of.as_of is None and not before_as_of.hides_new_items()
    # int8 codes every coordinate in one range, too coarse for the prior's: its index is float32
    assert default_quantization(artifact) == "none" and default_quantization(loaded) == "int8"


def test_a_temporal_refit_serves_the_first_fits_weight_with_its_own_counts(ml, small, small_store,
                                                                          monkeypatch):
    split = with_features(evaluate.temporal_split(small.interactions), small_store)
    monkeypatch.setattr("towers.train.WEIGHTS", (0.3,))  # whatever validation would say
    artifact = fit_split(split, ml.items, small_store, tower=TowerConfig(dim=16, max_len=MAX_LEN),
                         train=TrainConfig(**FAST))
    assert artifact.prior.weight == 0.3 and artifact.metrics["val_by_prior"] == {"0.3": pytest.approx(
        artifact.metrics["val"], abs=1e-4)}
    assert artifact.prior.counts.sum() == len(split.test_train) > len(split.train)
    assert artifact.prior.as_of == unix_seconds(split.test_train["event_timestamp"]).max()
    # The refit ends where the first fit's best was in its own schedule, with the lr not yet at 0.
    metrics = artifact.metrics
    share = fractions.Fraction(metrics["best_step"], metrics["first_schedule_steps"])
    assert metrics["refit_share"] == float(share) < 1 and metrics["refit_stopped_by"] == "budget"
    assert metrics["steps"] == math.ceil(share * metrics["schedule_steps"])
    assert metrics["history"][-1]["lr"] > 0
