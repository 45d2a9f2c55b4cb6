"""The statistics of an experiment readout: intervals for one variant, tests of a variant
against the control, and the sample-ratio-mismatch check of the assignment.

Every function takes plain counts or arrays and returns plain numbers, so the readout, the
monitoring dashboards and the tests that repeat thousands of simulated A/A experiments call the
same code. Differences are always ``treatment - control``; ``level`` is the confidence level of
every interval (0.95 by default) and a difference is significant when its two-sided p-value is
below ``1 - level``, which for these tests is the same as its interval excluding 0 (up to the
few cases where the pooled z-test and the Newcombe interval of a rate disagree at the edge).

- Rates (decisions, positive outcomes): Wilson score interval; the difference of two rates by
  the pooled two-proportion z-test, with Newcombe's hybrid score interval (built from the two
  Wilson intervals, so it stays inside [-1, 1] and behaves at small counts).
- AUC of two independent groups of rows: DeLong's variance of each AUC (from the placement
  values of its positives and negatives, O(n log n)), a z-test of the difference.
- Business value per prediction: a percentile bootstrap of the difference of two means; rows
  are resampled within each variant independently.
- Sample ratio: Pearson's chi-square of the observed counts against the counts the policy's
  weights expect (summed over periods of different weights). A mismatch means the assignment
  itself is broken (a variant dropping or duplicating requests), so every other number of the
  report is suspect; it is judged at a stricter threshold (0.001) than the differences.

Clusters. Under sticky assignment every request of an entity goes to the same variant, and its
outcomes move together: taking those requests as independent rows understates every variance
and makes A/A tests "find" differences far more often than ``1 - level``. Each function takes
optional ``clusters`` (one id per row; the entity) and then treats a cluster as the unit:
rates by Rao and Scott's design effect (``effective_counts``), AUC by Obuchowski's clustered
DeLong variance, means by resampling whole clusters. Without clusters, or when every cluster
is one row, they are the independent-row methods above, exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from mlprod.errors import EvaluationError

FloatArray = NDArray[np.float64]

LEVEL = 0.95
SRM_THRESHOLD = 0.001  # p-value below which the assignment is judged broken


@dataclass(frozen=True)
class Difference:
    """``treatment - control`` of one metric, its interval at ``level`` and a two-sided p-value."""

    difference: float
    ci: tuple[float, float]
    p_value: float
    method: str
    level: float = LEVEL

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - self.level

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "ci": [bound if np.isfinite(bound) else None for bound in self.ci],  # None: unbounded
            "p_value": self.p_value,
            "significant": self.significant,
            "method": self.method,
        }


@dataclass(frozen=True)
class SampleRatio:
    """Observed counts per variant against what the weights expect."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    dof: int
    p_value: float
    threshold: float = SRM_THRESHOLD

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "observed": self.observed,
            "expected": self.expected,
            "chi2": self.chi2 if np.isfinite(self.chi2) else None,  # None: a weight-0 variant
            "dof": self.dof,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "mismatch": self.mismatch,
        }


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise EvaluationError(f"the interval level must be between 0 and 1, got {level}")
    return float(stats.norm.ppf((1 + level) / 2))


def _two_sided(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def wilson_interval(successes: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a rate ``successes / n``; (nan, nan) without rows.
    Counts may be fractional: the effective counts of a clustered rate."""
    z = _z(level)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise EvaluationError(f"a rate needs 0 <= successes <= n, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def two_proportion_test(
    control_successes: float,
    control_n: float,
    treatment_successes: float,
    treatment_n: float,
    level: float = LEVEL,
) -> Difference:
    """The difference of two rates: pooled z-test p-value, Newcombe hybrid score interval.

    When neither group has a success, or both have only successes, the rates cannot differ
    under the pooled null: the p-value is 1. For clustered rows, pass ``effective_counts``.
    """
    if control_n <= 0 or treatment_n <= 0:
        raise EvaluationError(
            f"a difference of rates needs rows in both groups, got {control_n} and {treatment_n}"
        )
    p1, p2 = control_successes / control_n, treatment_successes / treatment_n
    pooled = (control_successes + treatment_successes) / (control_n + treatment_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / treatment_n))
    p_value = _two_sided((p2 - p1) / se) if se > 0 else 1.0
    low1, high1 = wilson_interval(control_successes, control_n, level)
    low2, high2 = wilson_interval(treatment_successes, treatment_n, level)
    difference = p2 - p1
    low = difference - np.sqrt((p2 - low2) ** 2 + (high1 - p1) ** 2)
    high = difference + np.sqrt((high2 - p2) ** 2 + (p1 - low1) ** 2)
    return Difference(
        float(difference), (float(low), float(high)), p_value, "two-proportion z-test", level
    )


def _clusters(clusters: ArrayLike | None, rows: int) -> NDArray[np.intp] | None:
    """Each row's cluster as 0 .. K-1, or None when every row is a cluster of its own."""
    if clusters is None:
        return None
    given = np.asarray(clusters)
    if given.shape != (rows,):
        raise EvaluationError(
            f"give one cluster per row: {rows:,} rows but clusters of shape {given.shape}"
        )
    _, codes = np.unique(given, return_inverse=True)
    codes = codes.astype(np.intp).reshape(-1)
    return None if rows == 0 or codes.max() + 1 == rows else codes


def effective_counts(flags: ArrayLike, clusters: ArrayLike | None = None) -> tuple[float, float]:
    """Successes and rows of a rate, divided by its design effect (Rao and Scott, 1992).

    Rows assigned together (every request of one entity under sticky assignment) are not
    independent: the rate's variance is that of a ratio of cluster sums, ``K / (K - 1) *
    Σ (successes_k - p * rows_k)² / n²``. Its ratio to the binomial ``p (1 - p) / n`` is the
    design effect; dividing both counts by it lets the Wilson interval and the two-proportion
    test work on the clustered rate unchanged. The effect is never taken below 1, and without
    clusters the counts are returned as they are.
    """
    x = np.asarray(flags, dtype=np.float64)
    n, successes = len(x), float(x.sum())
    codes = _clusters(clusters, n)
    if codes is None or successes in (0.0, float(n)):
        return successes, float(n)
    p = successes / n
    sums = np.bincount(codes, weights=x)
    sizes = np.bincount(codes).astype(np.float64)
    k = len(sizes)
    if k < 2:
        return p, 1.0  # one cluster: one independent observation
    variance = k / (k - 1) * float(np.sum((sums - p * sizes) ** 2)) / n**2
    effect = max(1.0, variance / (p * (1 - p) / n))
    return successes / effect, n / effect


def _labels_and_scores(y: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.bool_], FloatArray]:
    labels = np.asarray(y).astype(bool)
    scores = np.asarray(score, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise EvaluationError(
            f"AUC needs one label per score, got {labels.shape} labels and {scores.shape} scores"
        )
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        kind = "negative" if positives == 0 else "positive"
        raise EvaluationError(f"AUC needs both classes, but the {len(labels):,} rows are {kind}")
    return labels, scores


def delong_auc(
    y: ArrayLike, score: ArrayLike, clusters: ArrayLike | None = None
) -> tuple[float, float]:
    """AUC and DeLong's variance of it; with ``clusters``, Obuchowski's (1997) for rows that
    come in correlated clusters.

    A positive's placement is the share of negatives it outscores (ties count half), a
    negative's the share of positives that outscore it; the AUC is the mean placement of the
    positives, and its variance ``var(placements of positives) / m + var(of negatives) / n``.
    Midranks give every placement at once: O(n log n). With clusters, the AUC's first-order
    deviation ``Σ (placement_i - AUC) / m + Σ (placement_j - AUC) / n`` is summed per cluster,
    and the variance is that of a sum of K independent cluster terms.
    """
    labels, scores = _labels_and_scores(y, score)
    positives, negatives = scores[labels], scores[~labels]
    m, n = len(positives), len(negatives)
    everything = stats.rankdata(np.concatenate([positives, negatives]))
    positive_placements = (everything[:m] - stats.rankdata(positives)) / n
    negative_placements = 1 - (everything[m:] - stats.rankdata(negatives)) / m
    auc = float(positive_placements.mean())
    codes = _clusters(clusters, len(labels))
    if codes is not None:
        deviation = np.empty(len(labels))
        deviation[labels] = (positive_placements - auc) / m
        deviation[~labels] = (negative_placements - auc) / n
        per_cluster = np.bincount(codes, weights=deviation)
        k = len(per_cluster)
        return auc, (k / (k - 1) * float(np.sum(per_cluster**2)) if k > 1 else float("inf"))
    variance = 0.0
    if m > 1:
        variance += float(positive_placements.var(ddof=1)) / m
    if n > 1:
        variance += float(negative_placements.var(ddof=1)) / n
    return auc, variance


def auc_difference_test(
    control_y: ArrayLike,
    control_score: ArrayLike,
    treatment_y: ArrayLike,
    treatment_score: ArrayLike,
    level: float = LEVEL,
    *,
    control_clusters: ArrayLike | None = None,
    treatment_clusters: ArrayLike | None = None,
) -> Difference:
    """AUC(treatment) - AUC(control) on independent groups: DeLong (or clustered) variances,
    a z-test."""
    z = _z(level)
    auc_c, var_c = delong_auc(control_y, control_score, control_clusters)
    auc_t, var_t = delong_auc(treatment_y, treatment_score, treatment_clusters)
    difference, se = auc_t - auc_c, float(np.sqrt(var_c + var_t))
    p_value = _two_sided(difference / se) if se > 0 else (1.0 if difference == 0 else 0.0)
    method = (
        "DeLong z-test"
        if control_clusters is None and treatment_clusters is None
        else ("clustered DeLong z-test")
    )
    return Difference(
        difference, (difference - z * se, difference + z * se), p_value, method, level
    )


def bootstrap_means(
    values: ArrayLike,
    n_boot: int,
    rng: np.random.Generator,
    clusters: ArrayLike | None = None,
) -> FloatArray:
    """Means of ``n_boot`` resamples of ``values`` with replacement; with ``clusters``, whole
    clusters are resampled (the mean is then the resampled clusters' sum over their rows).

    A resample is a multinomial draw of how often each distinct value (or each distinct pair
    of a cluster's sum and size) is taken, so values with few levels (a value per outcome)
    cost O(levels) per resample, not O(rows).
    """
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        raise EvaluationError("a bootstrap needs at least one row")
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be at least 1, got {n_boot}")
    codes = _clusters(clusters, len(data))
    if codes is None:
        distinct, counts = np.unique(data, return_counts=True)
        draws = rng.multinomial(len(data), counts / len(data), size=n_boot)
        means: FloatArray = draws @ distinct / len(data)
        return means
    units = np.stack([np.bincount(codes, weights=data), np.bincount(codes)], axis=1)
    pairs, counts = np.unique(units, axis=0, return_counts=True)
    draws = rng.multinomial(len(units), counts / len(units), size=n_boot)
    ratio: FloatArray = (draws @ pairs[:, 0]) / (draws @ pairs[:, 1])
    return ratio


def mean_with_ci(
    values: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    clusters: ArrayLike | None = None,
) -> tuple[float, tuple[float, float]]:
    """The mean and its percentile bootstrap interval (resampling clusters, if given)."""
    _z(level)
    data = np.asarray(values, dtype=np.float64)
    boot = bootstrap_means(data, n_boot, np.random.default_rng(seed), clusters)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(data.mean()), (float(low), float(high))


def mean_difference_test(
    control: ArrayLike,
    treatment: ArrayLike,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
    control_clusters: ArrayLike | None = None,
    treatment_clusters: ArrayLike | None = None,
) -> Difference:
    """mean(treatment) - mean(control): percentile bootstrap interval, and the two-sided
    bootstrap p-value (twice the smaller share of resampled differences on either side of 0,
    counting the observed one, so it is never 0)."""
    _z(level)
    control_values = np.asarray(control, dtype=np.float64)
    treatment_values = np.asarray(treatment, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(treatment_values, n_boot, rng, treatment_clusters) - bootstrap_means(
        control_values, n_boot, rng, control_clusters
    )
    difference = float(treatment_values.mean() - control_values.mean())
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    if np.ptp(boot) == 0 and difference == 0:
        p_value = 1.0  # both groups constant and equal: nothing can differ
    else:
        below = (int(np.sum(boot <= 0)) + 1) / (n_boot + 1)
        above = (int(np.sum(boot >= 0)) + 1) / (n_boot + 1)
        p_value = min(1.0, 2 * min(below, above))
    return Difference(difference, (float(low), float(high)), p_value, "bootstrap", level)


def sample_ratio_test(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Pearson's chi-square of the observed counts per variant against the weights' shares.

    Every observed variant must have a weight. A variant of weight 0 takes no part unless it
    was assigned requests anyway: then the assignment is plainly broken (chi-square infinite,
    p-value 0).
    """
    unknown = sorted(set(observed) - set(weights))
    if unknown:
        raise EvaluationError(
            f"the assignment counts name {', '.join(repr(u) for u in unknown)}, which the "
            f"weights ({', '.join(repr(w) for w in weights)}) do not; give a weight for every "
            "served variant"
        )
    negative = sorted(name for name, weight in weights.items() if weight < 0)
    if negative:
        raise EvaluationError(f"weights must be >= 0, got {negative[0]}={weights[negative[0]]}")
    live = [name for name, weight in weights.items() if weight > 0]
    if not live:
        raise EvaluationError("a sample-ratio check needs a variant with a weight above 0")
    stray = [n for n in weights if n not in live and observed.get(n, 0) > 0]
    names = live + stray
    counts = np.array([observed.get(name, 0) for name in names], dtype=np.float64)
    total_weight = sum(weights[name] for name in live)
    shares = np.array([weights[name] / total_weight if name in live else 0.0 for name in names])
    expected = counts.sum() * shares
    if stray:
        chi2, p_value = float("inf"), 0.0
    elif counts.sum() == 0 or len(live) == 1:
        chi2, p_value = 0.0, 1.0
    else:
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        p_value = float(stats.chi2.sf(chi2, len(live) - 1))
    return SampleRatio(
        observed={name: int(c) for name, c in zip(names, counts, strict=True)},
        expected={name: float(e) for name, e in zip(names, expected, strict=True)},
        chi2=chi2,
        dof=len(live) - 1,
        p_value=p_value,
        threshold=threshold,
    )


def combine_sample_ratios(parts: Sequence[SampleRatio]) -> SampleRatio:
    """One check over periods of different weights (the steps of a rollout): the counts of
    each period against its own weights, chi-squares and degrees of freedom summed (the
    periods are independent samples), counts and expectations summed per variant."""
    if not parts:
        raise EvaluationError("a sample-ratio check needs at least one period")
    if len(parts) == 1:
        return parts[0]
    observed: dict[str, int] = {}
    expected: dict[str, float] = {}
    for part in parts:
        for name, count in part.observed.items():
            observed[name] = observed.get(name, 0) + count
            expected[name] = expected.get(name, 0.0) + part.expected[name]
    chi2 = float(sum(part.chi2 for part in parts))
    dof = sum(part.dof for part in parts)
    # chi2.sf is 0 at an infinite chi-square (a weight-0 variant that got requests).
    p_value = float(stats.chi2.sf(chi2, dof)) if dof else (0.0 if chi2 > 0 else 1.0)
    return SampleRatio(observed, expected, chi2, dof, p_value, parts[0].threshold)
