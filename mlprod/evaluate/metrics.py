"""Metrics of a binary classifier's scores: ranking, calibration, lift and business value.

Every function takes ``y`` (0/1 labels) and ``score`` (probabilities in [0, 1]) of the same
length and checks them first; input a person can fix raises EvaluationError. ``split`` names
the rows in messages ("the test window ..."). Rows act when ``score >= threshold``. Intervals
are percentile bootstrap intervals over rows resampled with replacement. Business value by
threshold lives in :mod:`mlprod.evaluate.value` and is re-exported here.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from mlprod.evaluate import _ranks
from mlprod.evaluate._checks import FloatArray, IntArray, check_scores, need_both_classes
from mlprod.evaluate.value import OutcomeValues, best_threshold, value_at, value_curve
from mlprod.project.training import ValueConfig

__all__ = [
    "FloatArray",
    "IntArray",
    "OutcomeValues",
    "auc",
    "auc_difference_ci",
    "auc_with_ci",
    "average_precision",
    "best_threshold",
    "brier",
    "calibration_table",
    "check_scores",
    "compare_to_baseline",
    "confusion_at",
    "ks_statistic",
    "lift_table",
    "log_loss",
    "pr_points",
    "roc_points",
    "summarize",
    "value_at",
    "value_curve",
]


def auc(y: ArrayLike, score: ArrayLike, *, split: str | None = None) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative."""
    labels, scores = check_scores(y, score, split=split)
    need_both_classes(labels, "AUC", split)
    return _ranks.exact_auc(labels, _ranks.levels(scores))


def separation(y: ArrayLike, values: ArrayLike) -> float:
    """The AUC of any real ``values`` (not only probabilities) as a score for the 0/1 labels
    ``y``, checked by the caller; how well one feature alone ranks the rows."""
    labels = np.asarray(y, dtype=np.int64)
    return _ranks.exact_auc(labels, _ranks.levels(np.asarray(values, dtype=np.float64)))


def auc_with_ci(
    y: ArrayLike,
    score: ArrayLike,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
    split: str | None = None,
) -> tuple[float, tuple[float, float]]:
    """AUC and its bootstrap interval at ``level``."""
    _ranks.check_bootstrap(n_boot, level)
    labels, scores = check_scores(y, score, split=split)
    need_both_classes(labels, "AUC", split)
    ranked = _ranks.levels(scores)
    boot = _ranks.bootstrap_aucs(labels, [ranked], n_boot, seed)[:, 0]
    return _ranks.exact_auc(labels, ranked), _ranks.interval(boot, level, split)


def auc_difference_ci(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
    split: str | None = None,
) -> tuple[float, tuple[float, float]]:
    """AUC(a) - AUC(b) and its paired bootstrap interval: both scores see the same resamples."""
    _ranks.check_bootstrap(n_boot, level)
    labels, scores_a = check_scores(y, score_a, split=split)
    _, scores_b = check_scores(labels, score_b, split=split)
    need_both_classes(labels, "AUC", split)
    ranked_a, ranked_b = _ranks.levels(scores_a), _ranks.levels(scores_b)
    point = _ranks.exact_auc(labels, ranked_a) - _ranks.exact_auc(labels, ranked_b)
    boot = _ranks.bootstrap_aucs(labels, [ranked_a, ranked_b], n_boot, seed)
    return point, _ranks.interval(boot[:, 0] - boot[:, 1], level, split)


def roc_points(
    y: ArrayLike, score: ArrayLike, *, split: str | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) at threshold +inf."""
    labels, scores = check_scores(y, score, split=split)
    need_both_classes(labels, "a ROC curve", split)
    thresholds, tp, fp = _ranks.descending_counts(labels, scores)
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def pr_points(
    y: ArrayLike, score: ArrayLike, *, split: str | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(precision, recall, thresholds) at every distinct score, from recall 0 and precision 1."""
    labels, scores = check_scores(y, score, split=split)
    need_both_classes(labels, "a precision-recall curve", split)
    thresholds, tp, fp = _ranks.descending_counts(labels, scores)
    precision = np.concatenate([[1.0], tp / (tp + fp)])
    recall = np.concatenate([[0.0], tp / tp[-1]])
    return precision, recall, np.concatenate([[np.inf], thresholds])


def average_precision(y: ArrayLike, score: ArrayLike, *, split: str | None = None) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's average precision)."""
    precision, recall, _ = pr_points(y, score, split=split)
    return float(np.sum(np.diff(recall) * precision[1:]))


def ks_statistic(y: ArrayLike, score: ArrayLike, *, split: str | None = None) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score distributions of the two classes."""
    fpr, tpr, _ = roc_points(y, score, split=split)
    return float(np.max(np.abs(tpr - fpr)))


def _check_bins(bins: int) -> None:
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")


def lift_table(
    y: ArrayLike, score: ArrayLike, bins: int = 10, *, split: str | None = None
) -> list[dict[str, Any]]:
    """Gains and lift per group of rows ranked by score, highest first (deciles by default).

    Groups hold near-equal numbers of rows; rows with equal scores stay in one group, so with
    many ties a group can be larger and a later one missing.
    """
    _check_bins(bins)
    labels, scores = check_scores(y, score, split=split)
    need_both_classes(labels, "lift", split)
    n = len(labels)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    starts = np.concatenate([[True], ranked[1:] != ranked[:-1]])
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    group = np.minimum(first * bins // n, bins - 1)
    rows = np.bincount(group, minlength=bins)
    positives = np.bincount(group, weights=hits, minlength=bins)
    base_rate = labels.mean()
    table: list[dict[str, Any]] = []
    seen_rows, seen_positives = 0, 0.0
    for k in np.flatnonzero(rows):
        in_group = group == k
        seen_rows += int(rows[k])
        seen_positives += float(positives[k])
        rate = float(positives[k] / rows[k])
        table.append(
            {
                "bin": int(k) + 1,
                "rows": int(rows[k]),
                "positives": int(positives[k]),
                "min_score": float(ranked[in_group].min()),
                "max_score": float(ranked[in_group].max()),
                "rate": rate,
                "lift": float(rate / base_rate),
                "cumulative_rows_share": seen_rows / n,
                "cumulative_gain": float(seen_positives / labels.sum()),
                "cumulative_lift": float(seen_positives / seen_rows / base_rate),
            }
        )
    return table


def calibration_table(
    y: ArrayLike,
    score: ArrayLike,
    bins: int = 10,
    *,
    strategy: Literal["uniform", "quantile"] = "uniform",
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Mean score against the observed positive rate per score bin, with the rows in each.

    ``uniform`` bins split [0, 1] evenly (empty bins are kept with ``None`` rates);
    ``quantile`` bins hold near-equal numbers of rows.
    """
    _check_bins(bins)
    labels, scores = check_scores(y, score, split=split)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        edges = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, bins + 1)))
        if len(edges) == 1:
            edges = np.array([edges[0], edges[0]])
    n_bins = len(edges) - 1
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    rows = np.bincount(which, minlength=n_bins)
    score_sums = np.bincount(which, weights=scores, minlength=n_bins)
    positive_sums = np.bincount(which, weights=labels, minlength=n_bins)
    return [
        {
            "lower": float(edges[k]),
            "upper": float(edges[k + 1]),
            "rows": int(rows[k]),
            "mean_score": float(score_sums[k] / rows[k]) if rows[k] else None,
            "observed_rate": float(positive_sums[k] / rows[k]) if rows[k] else None,
        }
        for k in range(n_bins)
    ]


def brier(y: ArrayLike, score: ArrayLike, *, split: str | None = None) -> float:
    """Mean squared difference between score and label (0 is perfect)."""
    labels, scores = check_scores(y, score, split=split)
    return float(np.mean((scores - labels) ** 2))


def log_loss(
    y: ArrayLike, score: ArrayLike, *, eps: float = 1e-15, split: str | None = None
) -> float:
    """Mean negative log-likelihood, with scores clipped to [eps, 1 - eps]."""
    labels, scores = check_scores(y, score, split=split)
    clipped = np.clip(scores, eps, 1 - eps)
    return float(-np.mean(np.where(labels == 1, np.log(clipped), np.log1p(-clipped))))


def confusion_at(
    y: ArrayLike, score: ArrayLike, threshold: float, *, split: str | None = None
) -> dict[str, int]:
    """Counts of true/false positives and negatives when acting on ``score >= threshold``."""
    labels, scores = check_scores(y, score, split=split)
    act = scores >= threshold
    positive = labels == 1
    return {
        "tp": int(np.sum(act & positive)),
        "fp": int(np.sum(act & ~positive)),
        "fn": int(np.sum(~act & positive)),
        "tn": int(np.sum(~act & ~positive)),
    }


def summarize(
    y: ArrayLike,
    score: ArrayLike,
    threshold: float,
    value: ValueConfig | OutcomeValues | None = None,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
    split: str | None = None,
) -> dict[str, Any]:
    """The headline metrics of one split as a JSON-able dict (``value`` is None without one).

    Per-row values (``OutcomeValues`` with arrays) must be of these rows, in this order.
    """
    labels, scores = check_scores(y, score, split=split)
    point, (low, high) = auc_with_ci(
        labels, scores, n_boot=n_boot, seed=seed, level=level, split=split
    )
    confusion = confusion_at(labels, scores, threshold)
    n, positives = len(labels), int(labels.sum())
    worth = None
    if value is not None:
        total = value_at(labels, scores, threshold, value, split=split)
        worth = {"total": total, "per_1000_rows": total / n * 1000, "currency": value.currency}
    return {
        "rows": n,
        "positives": positives,
        "positive_rate": positives / n,
        "auc": point,
        "auc_ci": [low, high],
        "auc_ci_level": level,
        "pr_auc": average_precision(labels, scores),
        "brier": brier(labels, scores),
        "log_loss": log_loss(labels, scores),
        "ks": ks_statistic(labels, scores),
        "threshold": float(threshold),
        "acted_share": (confusion["tp"] + confusion["fp"]) / n,
        "confusion": confusion,
        "value": worth,
    }


def compare_to_baseline(
    y: ArrayLike,
    score: ArrayLike,
    baseline_score: ArrayLike,
    *,
    name: str,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
    split: str | None = None,
) -> dict[str, Any]:
    """The baseline's AUC and the model's paired AUC gain over it, as ``ReportData.baseline``."""
    difference, (low, high) = auc_difference_ci(
        y, score, baseline_score, n_boot=n_boot, seed=seed, level=level, split=split
    )
    return {
        "name": name,
        "auc": auc(y, baseline_score, split=split),
        "difference": difference,
        "difference_ci": [low, high],
        "level": level,
    }
