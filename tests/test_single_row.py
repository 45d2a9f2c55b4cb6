"""LightGBM's fast single-row predictor gives ``Booster.predict``'s score, bit for bit.

(The flights models are also compared, through the whole pipeline, row by row against the
Arrow path in tests/test_small_batch_scoring.py.)
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from mlprod.train.models import FittedModel
from mlprod.train.single_row import single_row_booster

pytestmark = pytest.mark.filterwarnings("ignore:.*categorical_feature.*:UserWarning")


def _data(seed: int, rows: int = 2_000, width: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width)) * rng.choice([1.0, 1e-3, 1e6], size=width)
    x[:, 0] = rng.integers(0, 9, rows)  # a categorical's codes
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 1]) + rng.normal(size=rows) > 0).astype(int)
    return x, y


def _model(best_iteration: int | None, objective: str = "binary") -> FittedModel:
    x, y = _data(0)
    params = {"objective": objective, "verbose": -1, "num_leaves": 15, "seed": 0}
    if objective == "multiclass":
        params["num_class"] = 3
        y = y + (x[:, 2] > 0)
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0]), num_boost_round=60)
    return FittedModel("lightgbm", params, booster, 0.0, best_iteration)


@pytest.mark.parametrize("best_iteration", [None, 17])
def test_one_row_scores_as_booster_predict(best_iteration: int | None) -> None:
    model = _model(best_iteration)
    fast = single_row_booster(model)
    assert fast is not None
    x, _ = _data(1, rows=500)
    x[3] = np.nan  # a row of nothing but nulls
    x[4, 0] = 42.0  # a category code never seen
    for i in range(len(x)):
        row = x[i : i + 1].copy()
        expected = model.estimator.predict(row, num_iteration=best_iteration, num_threads=1)
        got = fast.predict(row)
        assert got is not None and got.tobytes() == expected.tobytes(), (i, got, expected)


def test_other_inputs_are_left_to_booster_predict() -> None:
    fast = single_row_booster(_model(None))
    assert fast is not None
    x, _ = _data(2, rows=3)
    assert fast.predict(x) is None  # several rows
    assert fast.predict(x[:1, :5]) is None  # another width
    assert fast.predict(x[:1].astype(np.float32)) is None
    assert fast.predict(np.repeat(x[:1], 2, axis=1)[:, ::2]) is None  # not contiguous
    assert single_row_booster(_model(None, "multiclass")) is None  # three scores a row
    assert single_row_booster(FittedModel("logistic", {}, object(), 0.0)) is None
