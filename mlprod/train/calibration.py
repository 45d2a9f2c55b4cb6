"""Make scores mean what they say: a calibrated 0.3 is late three times in ten.

Two calibrators, both fitted on the validation rows (never the training rows the model has
learned, nor the test rows): ``sigmoid`` (Platt scaling of the score's log-odds, two
parameters) and ``isotonic`` (any increasing step shape, more flexible and more data hungry).
In ``auto`` mode, k-fold cross-fitting on the validation rows estimates whether either one
lowers the log-loss of the raw score; the better one is used only if it does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression

from mlprod.errors import TrainError

Method = Literal["isotonic", "sigmoid"]
Mode = Literal["auto", "isotonic", "sigmoid", "none"]
METHODS: tuple[Method, ...] = ("sigmoid", "isotonic")  # on a tie, the simpler one
FOLDS = 5
# A calibrated probability stays within [FLOOR, 1 - FLOOR], so that one surprising event
# costs a large but finite log-loss.
FLOOR = 1e-6
# In auto mode a calibrator must lower the cross-fitted log-loss by this fraction to be used.
MIN_GAIN = 0.002

Floats = npt.NDArray[np.float64]


class Calibrator:
    """Maps a model's score (a probability) to a calibrated probability.

    Fitted state: ``method_``, and ``knots_x_``/``knots_y_`` (isotonic: the increasing curve,
    linearly interpolated and flat beyond its ends) or ``slope_``/``intercept_`` (sigmoid:
    ``p = 1 / (1 + exp(-(slope * logit(score) + intercept)))``). It holds only numbers and
    numpy arrays, so it pickles small and does not depend on the scikit-learn version.
    ``choose_calibration`` adds ``choice_report_``, the comparison that chose it.
    """

    method_: Method
    knots_x_: Floats
    knots_y_: Floats
    slope_: float
    intercept_: float
    choice_report_: dict[str, Any]

    def __init__(self, method: Method) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}")
        self.method = method

    def fit(self, y: npt.ArrayLike, score: npt.ArrayLike) -> Calibrator:
        labels, scores = _inputs(y, score)
        if self.method == "isotonic":
            curve = IsotonicRegression(y_min=FLOOR, y_max=1 - FLOOR, out_of_bounds="clip")
            curve.fit(scores, labels.astype(np.float64))
            self.knots_x_ = np.asarray(curve.X_thresholds_, dtype=np.float64)
            self.knots_y_ = np.asarray(curve.y_thresholds_, dtype=np.float64)
        else:
            self.slope_, self.intercept_ = _fit_sigmoid(labels, _logit(scores))
        self.method_ = self.method
        return self

    def transform(self, score: npt.ArrayLike) -> Floats:
        """Calibrated probabilities for these scores."""
        if not hasattr(self, "method_"):
            raise RuntimeError("the calibrator is not fitted yet; call fit(y, score) first")
        scores = _scores(score)
        if self.method_ == "isotonic":
            calibrated: Floats = np.interp(scores, self.knots_x_, self.knots_y_)
        else:
            calibrated = _sigmoid(self.slope_ * _logit(scores) + self.intercept_)
        return np.clip(calibrated, FLOOR, 1 - FLOOR)

    def __repr__(self) -> str:
        if not hasattr(self, "method_"):
            return f"Calibrator({self.method!r}, not fitted)"
        if self.method_ == "isotonic":
            return f"Calibrator('isotonic', {len(self.knots_x_)} knots)"
        return f"Calibrator('sigmoid', slope={self.slope_:.4g}, intercept={self.intercept_:.4g})"


def choose_calibration(
    y_valid: npt.ArrayLike, score_valid: npt.ArrayLike, mode: Mode, seed: int
) -> Calibrator | None:
    """The calibrator that ``mode`` asks for, fitted on all validation rows, or None.

    ``auto`` compares the raw score with both methods by cross-fitting (``compare_calibrations``)
    and returns the better method if it lowers the log-loss by at least ``MIN_GAIN``, else
    None. ``isotonic`` and ``sigmoid`` are used as asked (the comparison is still reported);
    ``none`` returns None. The comparison is the returned calibrator's ``choice_report_``.
    """
    if mode == "none":
        return None
    report = compare_calibrations(y_valid, score_valid, seed)
    method: Method | None = report["best"] if mode == "auto" else mode
    if method is None:
        return None
    calibrator = Calibrator(method).fit(y_valid, score_valid)
    calibrator.choice_report_ = report | {"mode": mode, "chosen": method}
    return calibrator


def compare_calibrations(
    y: npt.ArrayLike, score: npt.ArrayLike, seed: int, folds: int = FOLDS
) -> dict[str, Any]:
    """Log-loss of the raw score and of each method, by k-fold cross-fitting on these rows.

    Each method is fitted on k-1 folds (stratified by label, shuffled with ``seed``) and
    scores the held-out fold; its log-loss is over all the held-out predictions. ``best``
    is the better method if it beats the raw score by ``MIN_GAIN`` (relative), else None.
    """
    labels, scores = _inputs(y, score)
    fold = _folds(labels, folds, seed)
    held_out = {method: np.empty(len(scores)) for method in METHODS}
    for k in range(folds):
        fit_rows, held = fold != k, fold == k
        for method in METHODS:
            calibrator = Calibrator(method).fit(labels[fit_rows], scores[fit_rows])
            held_out[method][held] = calibrator.transform(scores[held])
    log_loss = {"raw": _log_loss(labels, scores)}
    log_loss |= {method: _log_loss(labels, held_out[method]) for method in METHODS}
    best = min(METHODS, key=lambda method: log_loss[method])
    helps = log_loss[best] < log_loss["raw"] * (1 - MIN_GAIN)
    return {
        "log_loss": log_loss,
        "folds": folds,
        "min_gain": MIN_GAIN,
        "best": best if helps else None,
    }


def _fit_sigmoid(labels: npt.NDArray[np.bool_], z: Floats) -> tuple[float, float]:
    """Platt scaling: the maximum-likelihood logistic fit of the labels on ``z``.

    Newton's method from the identity (slope 1, intercept 0), with step halving. The targets
    are Platt's (N+ + 1) / (N+ + 2) and 1 / (N- + 2) rather than 1 and 0, which keeps the fit
    finite when the classes separate.
    """
    positives = int(labels.sum())
    negatives = len(labels) - positives
    target = np.where(labels, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    design = np.column_stack([z, np.ones_like(z)])

    def loss(weights: Floats) -> float:
        eta = design @ weights
        return float(np.sum(target * np.logaddexp(0, -eta) + (1 - target) * np.logaddexp(0, eta)))

    weights = np.array([1.0, 0.0])
    current = loss(weights)
    for _ in range(100):
        p = _sigmoid(design @ weights)
        gradient = design.T @ (p - target)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-10:
            trial = weights - size * step
            trial_loss = loss(trial)
            if trial_loss <= current:
                break
            size /= 2
        else:
            break
        weights, moved, current = trial, float(np.abs(size * step).max()), trial_loss
        if moved < 1e-10:
            break
    return float(weights[0]), float(weights[1])


def _folds(labels: npt.NDArray[np.bool_], folds: int, seed: int) -> npt.NDArray[np.intp]:
    """A fold number for each row, with the positives (and negatives) spread evenly."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.intp)
    for group in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        fold[rng.permutation(group)] = np.arange(len(group)) % folds
    return fold


def _log_loss(labels: npt.NDArray[np.bool_], p: Floats) -> float:
    p = np.clip(p, FLOOR, 1 - FLOOR)
    return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def _logit(p: Floats) -> Floats:
    p = np.clip(p, FLOOR, 1 - FLOOR)
    logit: Floats = np.log(p) - np.log1p(-p)
    return logit


def _sigmoid(eta: Floats) -> Floats:
    return 0.5 * (1 + np.tanh(eta / 2))


def _scores(score: npt.ArrayLike) -> Floats:
    scores = np.asarray(score, dtype=np.float64)
    if scores.ndim != 1:  # a caller's mistake, not the user's
        raise ValueError(f"scores must be 1-D; got shape {scores.shape}")
    outside = ~((scores >= 0) & (scores <= 1))
    if outside.any():
        raise TrainError(
            f"calibration needs scores that are probabilities in [0, 1]; {int(outside.sum())} "
            f"of {len(scores)} are not (the first is {scores[outside][0]}; NaN is not one): "
            "the model's scores are broken, so check its parameters"
        )
    return scores


def _inputs(y: npt.ArrayLike, score: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], Floats]:
    labels, scores = np.asarray(y), _scores(score)
    if labels.shape != scores.shape:  # a caller's mistake, not the user's
        raise ValueError(f"y has shape {labels.shape} but score has shape {scores.shape}")
    if labels.dtype != np.bool_:
        known = np.isin(labels, [0, 1])
        if not known.all():
            raise TrainError(
                f"calibration needs labels that are true/false or 0/1; found "
                f"{labels[~known].tolist()[0]!r} among them: make the label a condition (e.g. "
                "'dep_delay >= 15')"
            )
        labels = labels == 1
    if labels.all() or not labels.any():
        only = "positive" if labels.all() else "negative"
        raise TrainError(
            f"calibration needs both positive and negative labels among the validation rows "
            f"it is fitted on, but all {len(labels)} are {only}: widen the validation window, "
            "or set train.calibration to 'none'"
        )
    return labels, scores
