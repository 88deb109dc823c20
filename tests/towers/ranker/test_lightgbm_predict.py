"""The C-API predict adapter equals `Booster.predict` (rerun on every LightGBM upgrade)."""

from __future__ import annotations

import numpy as np

from towers.ranker._lightgbm_predict import predict
from towers.ranker.features import COLUMN


def test_predict_equals_lightgbms_own_predict(fit_synthetic, synthetic):
    booster = fit_synthetic()
    x = synthetic(3, 7).features
    x[::5, COLUMN["price"]] = np.nan  # missing values take the trees' default branches
    for matrix in (x, x.astype(np.float64), x[:, ::-1].copy()[:, ::-1], x[:0]):
        np.testing.assert_array_equal(predict(booster, matrix), booster.predict(matrix))


def test_predict_stops_at_the_boosters_best_iteration(fit_synthetic, synthetic):
    booster = fit_synthetic()
    x = synthetic(3, 7).features
    booster.best_iteration = 1  # as when early stopping kept the first round
    np.testing.assert_array_equal(predict(booster, x), booster.predict(x))
    assert not np.array_equal(predict(booster, x), booster.predict(x, num_iteration=-1))
