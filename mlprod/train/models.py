"""The model zoo behind one interface: fit on train, stop early and score on validation.

Each kind knows its encoding (``native`` for gradient boosting, ``dense`` for the others) and
its defaults; parameters from mlprod.yaml override the defaults. Early stopping and every
choice made while fitting look at the validation rows only, never at the test window.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from mlprod.errors import TrainError
from mlprod.train.encoders import Encoding

EARLY_STOPPING_ROUNDS = 100


def _lightgbm_refusal(error: Exception, params: dict[str, Any]) -> str:
    """LightGBM's reason without its C++ source location, with the parameters given."""
    reason = re.sub(r"\s+at \S+, line \d+\s*\.?$", "", str(error).strip())
    check = re.fullmatch(r"Check failed: \((\w+)\) (\S+) \((.+)\)", reason)
    if check:
        reason = f"{check[1]} must be {check[2]} {check[3]}"
    given = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))
    return f"LightGBM cannot train with these parameters: {reason} (given: {given})"


@dataclass
class FittedModel:
    """A fitted estimator with what it took to fit it."""

    kind: str
    params: dict[str, Any]
    estimator: Any
    fit_seconds: float
    best_iteration: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(label = 1) for each row."""
        if self.kind == "lightgbm":
            # Small batches on one thread: waking OpenMP threads costs more than the trees.
            threads = 1 if len(x) < 1000 else 0
            scores: np.ndarray = self.estimator.predict(
                x, num_iteration=self.best_iteration, num_threads=threads
            )
            return scores
        return positive_probability(self.estimator, x)

    def importance(self, columns: list[str]) -> list[tuple[str, float]]:
        """Feature importance (gain for boosting, |coefficient| for linear models)."""
        if self.kind == "lightgbm":
            values = self.estimator.feature_importance(importance_type="gain")
        elif hasattr(self.estimator, "feature_importances_"):
            values = self.estimator.feature_importances_
        elif hasattr(self.estimator, "coef_"):
            values = np.abs(self.estimator.coef_).ravel()
        else:
            return []
        pairs = [(c, float(v)) for c, v in zip(columns, values, strict=False)]
        return sorted(pairs, key=lambda p: -p[1])


def positive_probability(estimator: Any, x: np.ndarray) -> np.ndarray:
    """``estimator.predict_proba(x)[:, 1]``, the same for a row whatever rows come with it.

    A binary ``LogisticRegression`` scores each row as the sum, along the row, of its products
    with the coefficients (NumPy's pairwise sum of one row), plus the intercept, through
    ``expit``: scikit-learn's formula, without its ~1 ms of input checks per call. Not its
    ``x @ coef_.T``: BLAS rounds a matrix-vector product differently for different numbers of
    rows (on random data, a row alone and the same row among five differ in the last bit for
    nearly every width), so one record would get scores a few ulps apart alone, in a request
    and in a batch. Anything else, including inputs scikit-learn would refuse, goes to
    scikit-learn. (A large table's sums are computed without its matrix, to the same bits:
    :mod:`mlprod.train.linear`.)
    """
    linear = linear_terms(estimator)
    if linear is not None and x.dtype == np.float64 and x.ndim == 2:
        coef, intercept = linear
        if coef.shape == (x.shape[1],) and np.isfinite(x).all():
            expit = _expit()
            decision = np.add.reduce(x * coef, axis=1) + intercept  # what ndarray.sum runs
            rowwise: np.ndarray = expit(decision)
            return rowwise
    probabilities: np.ndarray = estimator.predict_proba(x)[:, 1]
    return probabilities


def linear_terms(estimator: Any) -> tuple[np.ndarray, np.float64] | None:
    """The coefficients and intercept with which :func:`positive_probability` scores rows
    itself (a binary ``LogisticRegression``), or None (scikit-learn scores them)."""
    if type(estimator) is not _logistic_regression() or len(estimator.classes_) != 2:
        return None
    coef: np.ndarray = estimator.coef_
    if coef.ndim != 2 or coef.shape[0] != 1:
        return None
    return coef[0], estimator.intercept_[0]


@cache
def _logistic_regression() -> Any:
    """scikit-learn's class, imported on first use (scoring a row must not import it again)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression


@cache
def _expit() -> Any:
    from scipy.special import expit

    return expit


@dataclass(frozen=True)
class FitData:
    """What every fitter gets besides its parameters."""

    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    categorical: list[int]
    seed: int
    callbacks: list[Any]


def encoding_for(kind: str) -> Encoding:
    return "native" if kind == "lightgbm" else "dense"


def fit_model(
    kind: str,
    params: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    categorical: list[int],
    seed: int,
    callbacks: list[Any] | None = None,
) -> FittedModel:
    """Fit one candidate of ``kind`` with ``params``; early stopping uses ``valid``."""
    started = time.perf_counter()
    fitters = {
        "lightgbm": _fit_lightgbm,
        "logistic": _fit_logistic,
        "random_forest": _fit_random_forest,
        "svm": _fit_svm,
        "mlp": _fit_mlp,
    }
    if kind not in fitters:
        raise TrainError(f"unknown model kind '{kind}'; expected one of {', '.join(fitters)}")
    try:
        data = FitData(train, valid, categorical, seed, callbacks or [])
        estimator, best, used = fitters[kind](params, data)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"model '{kind}': {exc}") from None
    return FittedModel(kind, used, estimator, time.perf_counter() - started, best)


def _fit_lightgbm(params: dict[str, Any], data: FitData) -> tuple[Any, int | None, dict[str, Any]]:
    import lightgbm as lgb

    used = {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_child_samples": 100,
        "verbose": -1,
        "seed": data.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        **params,
    }
    rounds = int(used.pop("n_estimators", 2000))
    rows = lgb.Dataset(
        data.train[0], data.train[1], categorical_feature=data.categorical, free_raw_data=False
    )
    check = lgb.Dataset(
        data.valid[0], data.valid[1], reference=rows, categorical_feature=data.categorical
    )
    try:
        booster = lgb.train(
            used,
            rows,
            num_boost_round=rounds,
            valid_sets=[check],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), *data.callbacks],
        )
    except lgb.basic.LightGBMError as exc:
        raise ValueError(_lightgbm_refusal(exc, params)) from None
    return booster, booster.best_iteration or None, {**used, "n_estimators": rounds}


def _fit_logistic(params: dict[str, Any], data: FitData) -> tuple[Any, int | None, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    used: dict[str, Any] = {"C": 1.0, "max_iter": 2000, **params}
    penalty = used.pop("penalty", "l2")
    l1_ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, used.pop("l1_ratio", 0.5))
    solver = "lbfgs" if l1_ratio == 0.0 else "saga"
    model = LogisticRegression(l1_ratio=l1_ratio, solver=solver, random_state=data.seed, **used)
    model.fit(*data.train)
    return model, None, {"penalty": penalty, "l1_ratio": l1_ratio, **used}


def _fit_random_forest(
    params: dict[str, Any], data: FitData
) -> tuple[Any, int | None, dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier

    used: dict[str, Any] = {
        "n_estimators": 200,
        "min_samples_leaf": 20,
        "max_features": "sqrt",
        "max_samples": 0.5,
        "n_jobs": 2,
        **params,
    }
    model = RandomForestClassifier(random_state=data.seed, **used)
    model.fit(*data.train)
    return model, None, used


def _fit_svm(params: dict[str, Any], data: FitData) -> tuple[Any, int | None, dict[str, Any]]:
    """An RBF-kernel SVM via a Nystroem approximation, with sigmoid-calibrated probabilities."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.kernel_approximation import Nystroem
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    used: dict[str, Any] = {"C": 0.1, "gamma": 0.02, "components": 300, "max_rows": 50_000}
    used.update(params)
    x, y = _subsample(data.train, int(used["max_rows"]), data.seed)
    kernel = Nystroem(
        gamma=used["gamma"], n_components=int(used["components"]), random_state=data.seed
    )
    svm = make_pipeline(kernel, LinearSVC(C=used["C"], random_state=data.seed))
    model = CalibratedClassifierCV(svm, method="sigmoid", cv=3)
    model.fit(x, y)
    return model, None, used


def _fit_mlp(params: dict[str, Any], data: FitData) -> tuple[Any, int | None, dict[str, Any]]:
    """A small neural network, stopped when validation log-loss stops improving."""
    import copy

    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier

    used: dict[str, Any] = {"hidden": [64, 32], "alpha": 1e-4, "epochs": 30, "patience": 3}
    used.update(params)
    model = MLPClassifier(
        hidden_layer_sizes=tuple(used["hidden"]),
        alpha=used["alpha"],
        batch_size=512,
        learning_rate_init=1e-3,
        random_state=data.seed,
    )
    best, best_loss, waited, epochs = None, np.inf, 0, 0
    for epochs in range(1, int(used["epochs"]) + 1):  # noqa: B007 - epochs is reported below
        model.partial_fit(*data.train, classes=np.array([0, 1]))
        loss = log_loss(data.valid[1], model.predict_proba(data.valid[0])[:, 1], labels=[0, 1])
        if loss < best_loss - 1e-5:
            best, best_loss, waited = copy.deepcopy(model), loss, 0
        else:
            waited += 1
            if waited >= int(used["patience"]):
                break
    return best or model, epochs, used


def _subsample(
    data: tuple[np.ndarray, np.ndarray], rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    x, y = data
    if len(y) <= rows:
        return x, y
    chosen = np.random.default_rng(seed).choice(len(y), size=rows, replace=False)
    return x[chosen], y[chosen]
