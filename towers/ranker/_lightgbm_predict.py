"""`Booster.predict` of a dense matrix through LightGBM's C API, without its Python layer.

Why: per request the service scores 30-100 rows, where `Booster.predict`'s Python layer (a
predictor object, type checks, three more C calls) doubled the cost. This calls the same C
function, `LGBM_BoosterPredictForMat`, with the arguments `Booster.predict` passes.

It depends on private names of `lightgbm.basic` (`_LIB`, `_safe_call`, the `_C_API_*` constants and
`Booster._handle`) as they are in the pinned `lightgbm==4.7.0` (pyproject.toml): a LightGBM upgrade
must pass `tests/towers/ranker/test_lightgbm_predict.py`, which keeps this equal to `Booster.predict`.
"""

from __future__ import annotations

import ctypes

import lightgbm as lgb
import lightgbm.basic as lgb_c
import numpy as np


def predict(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """(R,) float64 predictions for the (R, F) matrix `x` at `booster.best_iteration`, as
    `booster.predict(x)` gives them; the booster must have one output per row.

    No per-call `num_threads`: LightGBM would re-read its configuration for it. It uses the process's
    OpenMP threads (one in the service, set via torch). float64 stays float64; anything else is read
    as float32.
    """
    double = np.asarray(x).dtype == np.float64
    x = np.ascontiguousarray(x, dtype=np.float64 if double else np.float32)
    out = np.empty(len(x), np.float64)
    written = ctypes.c_int64(0)
    lgb_c._safe_call(lgb_c._LIB.LGBM_BoosterPredictForMat(
        booster._handle, x.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_int(lgb_c._C_API_DTYPE_FLOAT64 if double else lgb_c._C_API_DTYPE_FLOAT32),
        ctypes.c_int32(x.shape[0]), ctypes.c_int32(x.shape[1]),
        ctypes.c_int(lgb_c._C_API_IS_ROW_MAJOR), ctypes.c_int(lgb_c._C_API_PREDICT_NORMAL),
        ctypes.c_int(0), ctypes.c_int(booster.best_iteration), ctypes.c_char_p(b""),
        ctypes.byref(written), out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
    if written.value != len(x):
        raise RuntimeError(f"LightGBM wrote {written.value} scores for {len(x)} rows")
    return out
