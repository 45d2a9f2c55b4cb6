"""One row through a LightGBM booster in a few microseconds, for the REST server.

``Booster.predict`` costs ~35 µs per call whatever the rows (checks, a predictor made for the
call, a parameter string parsed); the trees of one row take a few. LightGBM's C API keeps a
*fast config* for single rows (``LGBM_BoosterPredictForMatSingleRowFast``): the same predictor
code on the same float64 row with the same iteration count and parameters, so the same score
bit for bit (tests/test_small_batch_scoring.py compares them), made once per booster.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

import numpy as np

_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: probabilities, as Booster.predict gives
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_PARAMETERS = b"num_threads=1"  # what FittedModel.predict_proba passes for small batches


class SingleRowBooster:
    """A booster's fast single-row predictor (freed with this object)."""

    def __init__(self, booster: Any, num_iteration: int | None, width: int) -> None:
        from lightgbm import basic
        from lightgbm.libpath import _LIB

        lib: Any = _LIB
        if booster.num_model_per_iteration() != 1:
            raise ValueError("not a binary or regression booster: more than one score a row")
        if num_iteration is None:  # as Booster.predict resolves it
            num_iteration = booster.best_iteration
        handle = ctypes.c_void_p()
        basic._safe_call(
            lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(num_iteration),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(width),
                ctypes.c_char_p(_PARAMETERS),
                ctypes.byref(handle),
            )
        )
        self.width = width
        self._booster = booster  # the fast config points into it: keep it alive
        self._handle = handle
        self._predict = lib.LGBM_BoosterPredictForMatSingleRowFast
        self._safe_call = basic._safe_call
        weakref.finalize(self, lib.LGBM_FastConfigFree, handle)

    def predict(self, x: np.ndarray) -> np.ndarray | None:
        """P(label = 1) of a (1 x width) float64 row, or None for any other input."""
        if x.shape != (1, self.width) or x.dtype != np.float64 or not x.flags.c_contiguous:
            return None
        out = np.empty(1, dtype=np.float64)
        length = ctypes.c_int64(0)
        self._safe_call(
            self._predict(
                self._handle,
                x.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(length),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out if length.value == 1 else None


def single_row_booster(model: Any) -> SingleRowBooster | None:
    """The fast single-row predictor of a fitted LightGBM model, or None (another kind, or a
    LightGBM without it)."""
    if getattr(model, "kind", None) != "lightgbm":
        return None
    from lightgbm.basic import LightGBMError

    try:
        booster = model.estimator
        return SingleRowBooster(booster, model.best_iteration, booster.num_feature())
    except (LightGBMError, AttributeError, ValueError):  # Booster.predict stays in charge
        return None
