"""Live performance of a window once outcomes have joined, and its score and latency quantiles.

Everything is computed from the window's counts: scores on ``SCORE_BINS`` fine bins of [0, 1]
(by label for the labelled rows), log-loss sums, the confusion counts at the deployed threshold
and latency buckets. Each metric is O(bins), so a window of a million predictions costs what a
window of a hundred does. Intervals are normal approximations, which need no resampling of
rows the summary no longer has. Not computable (no labelled row, one class only) reads NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from mlprod.evaluate._ranks import auc_from_counts
from mlprod.monitor.summary import (
    LATENCY_BUCKETS_MS,
    LabelSummary,
    SparseCounts,
    aligned,
    occupied,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Bins = SparseCounts | ArrayLike  # counts per fine score bin, sparse or dense


def auc(positive_bins: Bins, negative_bins: Bins) -> float:
    """Area under the ROC curve from positives and negatives per score bin (dense, ascending,
    or sparse).

    The Mann-Whitney count: each positive beats the negatives in lower bins and ties half of
    those in its own bin. On the fine score bins it is within 1e-4 of the AUC of the raw scores.
    Bins empty in both add nothing, so only the occupied ones are counted.
    """
    _, positives, negatives, _ = aligned(positive_bins, negative_bins)
    return float(auc_from_counts(positives, negatives))


def z_value(level: float) -> float:
    """The standard normal quantile for a two-sided interval of ``level`` (1.96 at 0.95)."""
    return float(special.ndtri((1 + level) / 2))


def auc_interval(
    auc: float, positives: int, negatives: int, level: float = 0.95
) -> tuple[float, float]:
    """Normal interval of an AUC with Hanley & McNeil's (1982) standard error, within [0, 1].

    The error needs only the AUC and the class sizes, which a window keeps; at an AUC of 0 or 1
    it is 0, so the interval collapses there.
    """
    if positives <= 0 or negatives <= 0 or math.isnan(auc):
        return math.nan, math.nan
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    half = z_value(level) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def log_loss(labels: LabelSummary, level: float = 0.95) -> tuple[float, float, float]:
    """Mean log-loss of the labelled rows and a normal interval from the per-row terms' sum and
    sum of squares (the lower bound no less than 0)."""
    n = labels.count
    if n <= 0:
        return math.nan, math.nan, math.nan
    mean = labels.log_loss_sum / n
    if n < 2:
        return mean, math.nan, math.nan
    variance = max(labels.log_loss_sum_sq - n * mean**2, 0.0) / (n - 1)
    half = z_value(level) * math.sqrt(variance / n)
    return mean, max(0.0, mean - half), mean + half


def calibration_error(positive_bins: Bins, negative_bins: Bins, bins: int = 10) -> float:
    """Expected calibration error: over ``bins`` equal-width score bins, the row-weighted mean
    of |mean score - positive rate|, a fine bin's score being its centre."""
    index, positives, negatives, size = aligned(positive_bins, negative_bins)
    rows = positives + negatives
    total = rows.sum()
    if total <= 0:
        return math.nan
    group, centre = index * bins // size, (index + 0.5) / size
    # n_b / N * |sum of scores_b / n_b - positives_b / n_b| = |sum of scores_b - positives_b| / N
    scores = np.bincount(group, weights=rows * centre, minlength=bins)
    hits = np.bincount(group, weights=positives, minlength=bins)
    return float(np.abs(scores - hits).sum() / total)


def business_value(
    labels: LabelSummary, tp: float, fp: float, fn: float, tn: float, level: float = 0.95
) -> tuple[float, float, float]:
    """Total worth of the labelled rows' outcomes at the deployed threshold, with a normal
    interval: n times the mean row value, whose standard error comes from the spread of the
    four per-outcome worths over the rows."""
    counts = np.array([labels.tp, labels.fp, labels.fn, labels.tn], dtype=np.float64)
    worth = np.array([tp, fp, fn, tn], dtype=np.float64)
    n = float(counts.sum())
    total = float(counts @ worth)
    if n < 2:
        return total, math.nan, math.nan
    variance = float(counts @ (worth - total / n) ** 2) / (n - 1)
    half = z_value(level) * math.sqrt(n * variance)
    return total, total - half, total + half


def percentiles(score_bins: Bins, qs: Sequence[float]) -> list[float]:
    """Score quantiles (``qs`` in [0, 1]) from fine score bin counts, each bin's rows taken as
    spread evenly across it: within one bin width (1e-4) of the raw scores' quantiles."""
    filled, held, size = occupied(score_bins)
    if filled.size == 0:
        return [math.nan] * len(qs)
    cumulative = np.cumsum(held)
    position = np.asarray(qs, dtype=np.float64) * cumulative[-1]
    k = np.minimum(np.searchsorted(cumulative, position, side="left"), filled.size - 1)
    into = np.clip((position - (cumulative[k] - held[k])) / held[k], 0.0, 1.0)
    values: list[float] = ((filled[k] + into) / size).tolist()
    return values


def latency_quantile(latency_counts: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the latency bucket holding the ``q`` quantile; None when it falls
    in the overflow bucket (slower than the last bound) or the window has no request."""
    cumulative = np.cumsum(np.asarray(latency_counts, dtype=np.int64))
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return None
    rank = max(1, math.ceil(q * int(cumulative[-1]) - 1e-9))  # the rank-th fastest request
    bucket = int(np.searchsorted(cumulative, rank, side="left"))
    return float(LATENCY_BUCKETS_MS[bucket]) if bucket < len(LATENCY_BUCKETS_MS) else None
