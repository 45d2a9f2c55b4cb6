"""The experiment readout's statistics, each against scipy or a computation by hand, and the
false positive rate of every test over repeated simulated A/A experiments."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from mlprod.errors import EvaluationError
from mlprod.evaluate.experiment_stats import (
    SRM_THRESHOLD,
    auc_difference_test,
    bootstrap_means,
    combine_sample_ratios,
    delong_auc,
    effective_counts,
    mean_difference_test,
    mean_with_ci,
    sample_ratio_test,
    two_proportion_test,
    wilson_interval,
)

ALPHA = 0.05


@pytest.mark.parametrize(
    ("successes", "n"), [(81, 263), (0, 10), (10, 10), (1, 1), (3, 7), (512, 1000)]
)
def test_wilson_interval_matches_scipy(successes: int, n: int) -> None:
    expected = stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_of_newcombes_example() -> None:
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", 81/263.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_two_proportion_interval_of_newcombes_example() -> None:
    # Newcombe (1998), "Interval estimation for the difference between independent
    # proportions", example (a): 56/70 - 48/80, method 10 (hybrid score) 0.0524 to 0.3339.
    result = two_proportion_test(48, 80, 56, 70)
    assert result.difference == pytest.approx(0.2)
    assert (round(result.ci[0], 4), round(result.ci[1], 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize(
    ("control", "treatment"), [((48, 80), (56, 70)), ((500, 1000), (530, 1000)), ((3, 40), (0, 35))]
)
def test_two_proportion_p_value_is_the_chi_square_of_the_two_by_two_table(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    table = [[s, n - s] for s, n in (control, treatment)]
    _, expected, _, _ = stats.chi2_contingency(table, correction=False)
    assert two_proportion_test(*control, *treatment).p_value == pytest.approx(expected, rel=1e-9)


def test_two_proportion_test_without_any_success_differs_in_nothing() -> None:
    result = two_proportion_test(0, 50, 0, 60)
    assert (result.difference, result.p_value, result.significant) == (0.0, 1.0, False)


def _placements(y: NDArray[np.bool_], score: NDArray[np.float64]) -> tuple[float, float]:
    """AUC and DeLong's variance by comparing every positive with every negative."""
    positives, negatives = score[y], score[~y]
    wins = (positives[:, None] > negatives[None, :]) + 0.5 * (
        positives[:, None] == negatives[None, :]
    )
    v10, v01 = wins.mean(axis=1), wins.mean(axis=0)
    return float(wins.mean()), v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)


def test_delong_auc_and_variance_match_pairwise_comparison() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.3
    # Rounded scores, so that ties between positives and negatives are exercised.
    score = np.round(np.clip(0.3 + 0.2 * y + rng.normal(0, 0.2, 400), 0, 1), 2).astype(np.float64)
    auc, variance = delong_auc(y, score)
    expected_auc, expected_variance = _placements(y, score)
    assert auc == pytest.approx(expected_auc, abs=1e-12)
    assert variance == pytest.approx(expected_variance, rel=1e-10)
    u = stats.mannwhitneyu(score[y], score[~y]).statistic
    assert auc == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)


def test_auc_difference_is_a_z_test_on_the_summed_variances() -> None:
    rng = np.random.default_rng(2)
    y_c, y_t = rng.random(300) < 0.4, rng.random(250) < 0.4
    s_c = np.clip(0.4 + 0.1 * y_c + rng.normal(0, 0.2, 300), 0, 1)
    s_t = np.clip(0.4 + 0.2 * y_t + rng.normal(0, 0.2, 250), 0, 1)
    (auc_c, var_c), (auc_t, var_t) = _placements(y_c, s_c), _placements(y_t, s_t)
    se = np.sqrt(var_c + var_t)
    result = auc_difference_test(y_c, s_c, y_t, s_t)
    assert result.difference == pytest.approx(auc_t - auc_c)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(auc_t - auc_c) / se))
    assert result.ci[0] == pytest.approx(auc_t - auc_c - 1.959963984540054 * se)
    assert result.significant and result.ci[0] > 0


def test_auc_needs_both_classes() -> None:
    with pytest.raises(EvaluationError, match=r"^AUC needs both classes, but the 3 rows are neg"):
        delong_auc([0, 0, 0], [0.1, 0.2, 0.3])


def test_bootstrap_means_resample_rows() -> None:
    """Drawing how often each distinct value is taken is the row bootstrap: same spread."""
    rng = np.random.default_rng(3)
    values = rng.choice([-100.0, 0.0, 300.0], size=500, p=[0.3, 0.5, 0.2])
    fast = bootstrap_means(values, 4000, np.random.default_rng(4))
    rows = values[np.random.default_rng(5).integers(0, 500, size=(4000, 500))].mean(axis=1)
    assert fast.mean() == pytest.approx(values.mean(), abs=1.0)
    assert fast.std() == pytest.approx(rows.std(), rel=0.05)
    assert fast.std() == pytest.approx(values.std() / np.sqrt(500), rel=0.05)


def test_mean_difference_agrees_with_welchs_t_test() -> None:
    rng = np.random.default_rng(6)
    control = rng.choice([-100.0, 0.0, 300.0], size=3000, p=[0.3, 0.5, 0.2])
    treatment = rng.choice([-100.0, 0.0, 300.0], size=2500, p=[0.25, 0.53, 0.22])
    result = mean_difference_test(control, treatment, n_boot=4000)
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.difference == pytest.approx(treatment.mean() - control.mean())
    assert result.p_value == pytest.approx(welch.pvalue, abs=0.01)
    se = np.sqrt(control.var(ddof=1) / 3000 + treatment.var(ddof=1) / 2500)
    assert result.ci[0] == pytest.approx(result.difference - 1.96 * se, abs=0.1 * se)
    assert result.ci[1] == pytest.approx(result.difference + 1.96 * se, abs=0.1 * se)
    mean, (low, high) = mean_with_ci(control)
    assert mean == pytest.approx(control.mean())
    assert low < mean < high


def test_mean_difference_of_equal_constants_is_not_significant() -> None:
    result = mean_difference_test(np.zeros(10), np.zeros(12))
    assert (result.difference, result.p_value, result.ci) == (0.0, 1.0, (0.0, 0.0))


def test_sample_ratio_matches_scipys_chi_square() -> None:
    result = sample_ratio_test(
        {"control": 520, "b": 300, "c": 180}, {"control": 50, "b": 30, "c": 20}
    )
    expected = stats.chisquare([520, 300, 180], [500, 300, 200])
    assert result.chi2 == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.expected == {"control": 500.0, "b": 300.0, "c": 200.0}
    assert result.dof == 2


def test_sample_ratio_mismatch_is_found_at_60_40_and_not_at_50_50() -> None:
    weights = {"control": 50, "challenger": 50}
    assert sample_ratio_test({"control": 1200, "challenger": 800}, weights).mismatch
    assert not sample_ratio_test({"control": 1000, "challenger": 1000}, weights).mismatch
    assert not sample_ratio_test({"control": 1020, "challenger": 980}, weights).mismatch


def test_sample_ratio_refuses_counts_without_weights() -> None:
    with pytest.raises(EvaluationError) as raised:
        sample_ratio_test({"control": 5, "next": 3}, {"control": 1, "challenger": 1})
    assert str(raised.value) == (
        "the assignment counts name 'next', which the weights ('control', 'challenger') do "
        "not; give a weight for every served variant"
    )


def _simulate(
    rng: np.random.Generator, runs: int, rows: int, signal: float
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Labels and scores of ``runs`` x ``rows`` predictions; higher ``signal``, better AUC."""
    latent = rng.normal(size=(runs, rows))
    labels = rng.random((runs, rows)) < 1 / (1 + np.exp(-(latent - 1.0)))
    scores = 1 / (1 + np.exp(-(signal * latent + rng.normal(size=(runs, rows)) - 1.0)))
    return labels, scores


def _worth(labels: NDArray[np.bool_], acted: NDArray[np.bool_]) -> NDArray[np.float64]:
    """tp 300, fp -100, fn 0, tn 0."""
    return np.where(acted, np.where(labels, 300.0, -100.0), 0.0)


def test_repeated_a_a_experiments_flag_at_most_alpha() -> None:
    """200 A/A experiments of 4,000 requests each, assigned 50/50 at random: every test rejects
    at a rate within the binomial tolerance of its threshold (0.1% chance to fail by luck)."""
    runs, rows = 200, 4000
    rng = np.random.default_rng(11)
    labels, scores = _simulate(rng, runs, rows, signal=1.0)
    treated = rng.random((runs, rows)) < 0.5
    acted = scores >= 0.5
    worth = _worth(labels, acted)
    rejected = {"decision": 0, "positive": 0, "auc": 0, "value": 0, "srm": 0}
    for run in range(runs):
        t, c = treated[run], ~treated[run]
        n_t, n_c = int(t.sum()), int(c.sum())
        tests = {
            "decision": two_proportion_test(
                int(acted[run][c].sum()), n_c, int(acted[run][t].sum()), n_t
            ),
            "positive": two_proportion_test(
                int(labels[run][c].sum()), n_c, int(labels[run][t].sum()), n_t
            ),
            "auc": auc_difference_test(
                labels[run][c], scores[run][c], labels[run][t], scores[run][t]
            ),
            "value": mean_difference_test(worth[run][c], worth[run][t], n_boot=1000, seed=run),
        }
        for name, result in tests.items():
            rejected[name] += result.significant
            # The interval excludes 0 exactly when the test rejects, up to edge cases.
            assert result.significant == (not result.ci[0] <= 0 <= result.ci[1]) or (
                abs(result.p_value - ALPHA) < 0.01
            )
        srm = sample_ratio_test(
            {"control": n_c, "challenger": n_t}, {"control": 1, "challenger": 1}
        )
        rejected["srm"] += srm.mismatch
    low, high = stats.binom.ppf([0.0005, 0.9995], runs, ALPHA)
    for name in ("decision", "positive", "auc", "value"):
        assert low <= rejected[name] <= high, (name, rejected[name], (low, high))
    assert rejected["srm"] <= stats.binom.ppf(0.9995, runs, SRM_THRESHOLD)


def test_a_real_difference_is_detected() -> None:
    """A challenger whose scores carry more of the signal: better AUC and more value."""
    rng = np.random.default_rng(12)
    labels_c, scores_c = _simulate(rng, 1, 3000, signal=0.5)
    labels_t, scores_t = _simulate(rng, 1, 3000, signal=2.0)
    auc = auc_difference_test(labels_c[0], scores_c[0], labels_t[0], scores_t[0])
    assert auc.p_value < ALPHA and auc.ci[0] > 0
    value = mean_difference_test(
        _worth(labels_c[0], scores_c[0] >= 0.5), _worth(labels_t[0], scores_t[0] >= 0.5)
    )
    assert value.p_value < ALPHA and value.ci[0] > 0


def test_sample_ratios_of_periods_add_up() -> None:
    first = sample_ratio_test({"a": 95, "b": 5}, {"a": 90, "b": 10})
    second = sample_ratio_test({"a": 480, "b": 520}, {"a": 1, "b": 1})
    both = combine_sample_ratios([first, second])
    chi2 = stats.chisquare([95, 5], [90, 10]).statistic + stats.chisquare([480, 520]).statistic
    assert both.chi2 == pytest.approx(chi2)
    assert both.p_value == pytest.approx(stats.chi2.sf(chi2, 2))
    assert (both.dof, both.observed, both.expected) == (
        2,
        {"a": 575, "b": 525},
        {"a": 590.0, "b": 510.0},
    )


def test_sample_ratio_with_requests_for_a_variant_of_weight_zero_is_a_mismatch() -> None:
    result = sample_ratio_test({"a": 100, "b": 1}, {"a": 1, "b": 0})
    assert (result.chi2, result.p_value, result.mismatch) == (float("inf"), 0.0, True)
    assert result.to_dict()["chi2"] is None
    fine = sample_ratio_test({"a": 100, "b": 0}, {"a": 1, "b": 0})
    assert (fine.p_value, fine.mismatch, fine.observed) == (1.0, False, {"a": 100})


def test_effective_counts_by_hand() -> None:
    """p = 1/2 over clusters (1, 1), (0, 0), (0, 1): cluster sums 2, 0, 1 of size 2; the
    ratio's variance 3/2 * ((2-1)² + (0-1)² + (1-1)²) / 6² = 1/12 is twice the binomial 1/24."""
    flags, clusters = [1, 1, 0, 0, 0, 1], ["a", "a", "b", "b", "c", "c"]
    assert effective_counts(flags, clusters) == pytest.approx((1.5, 3.0))
    assert effective_counts(flags) == (3.0, 6.0)
    assert effective_counts(flags, range(6)) == (3.0, 6.0)  # every row its own cluster
    assert effective_counts([1, 0, 1, 0], [0, 1, 2, 3]) == (2.0, 4.0)


def _clustered_placements(
    y: NDArray[np.bool_], score: NDArray[np.float64], clusters: NDArray[np.int64]
) -> float:
    """Obuchowski's variance by comparing every positive with every negative, cluster by
    cluster (Biometrics 53, 1997: S10 / M + S01 / N + 2 S11 / (M N))."""
    auc, _ = _placements(y, score)
    positives, negatives = score[y], score[~y]
    m, n = len(positives), len(negatives)
    ks = np.unique(clusters)
    x = np.zeros(len(ks))  # Σ over the cluster's positives of (placement - auc)
    v = np.zeros(len(ks))  # Σ over its negatives
    for index, k in enumerate(ks):
        for s, label in zip(score[clusters == k], y[clusters == k], strict=True):
            if label:
                x[index] += np.mean((s > negatives) + 0.5 * (s == negatives)) - auc
            else:
                v[index] += np.mean((positives > s) + 0.5 * (positives == s)) - auc
    factor = len(ks) / (len(ks) - 1)
    s10, s01, s11 = factor * (x**2).sum() / m, factor * (v**2).sum() / n, factor * (x * v).sum()
    return float(s10 / m + s01 / n + 2 * s11 / (m * n))


def test_clustered_auc_variance_matches_obuchowskis_formula() -> None:
    rng = np.random.default_rng(21)
    clusters = np.repeat(np.arange(60), rng.integers(1, 9, size=60))
    effect = rng.normal(size=60)[clusters]
    y = rng.random(len(clusters)) < 1 / (1 + np.exp(-effect))
    score = np.round(1 / (1 + np.exp(-(effect + rng.normal(size=len(clusters))))), 2)
    auc, variance = delong_auc(y, score, clusters)
    assert auc == pytest.approx(_placements(y, score)[0])
    assert variance == pytest.approx(_clustered_placements(y, score, clusters), rel=1e-10)
    # Rows of their own are DeLong's independent case.
    assert delong_auc(y, score, np.arange(len(y))) == delong_auc(y, score)


def test_cluster_bootstrap_spreads_like_the_ratio_estimator() -> None:
    rng = np.random.default_rng(22)
    clusters = np.repeat(np.arange(400), rng.integers(1, 20, size=400))
    values = np.where(rng.random(400)[clusters] < 0.3, 300.0, -100.0)  # one value per cluster
    boot = bootstrap_means(values, 4000, np.random.default_rng(23), clusters)
    sums, sizes = np.bincount(clusters, weights=values), np.bincount(clusters)
    mean = values.mean()
    se = np.sqrt(400 / 399 * np.sum((sums - mean * sizes) ** 2)) / len(values)
    assert boot.std() == pytest.approx(se, rel=0.06)
    assert boot.std() > 2 * values.std() / np.sqrt(len(values))  # rows alone would understate


def test_repeated_a_a_experiments_with_sticky_entities_flag_at_most_alpha() -> None:
    """200 A/A experiments whose requests come from 400 entities of very different sizes,
    each entity assigned as a whole, its requests' outcomes and scores correlated: the
    clustered tests and the per-entity sample-ratio check keep their rate; the tests that
    take every request as independent would not."""
    runs, entities = 200, 400
    rng = np.random.default_rng(24)
    sizes = np.minimum(rng.geometric(0.1, size=entities), 60)
    cluster = np.repeat(np.arange(entities), sizes)
    rows = len(cluster)
    effect = rng.normal(0, 1.0, size=(runs, entities))[:, cluster]
    latent = effect + rng.normal(size=(runs, rows))
    labels = rng.random((runs, rows)) < 1 / (1 + np.exp(-(latent - 1.0)))
    scores = 1 / (1 + np.exp(-(latent + rng.normal(size=(runs, rows)) - 1.0)))
    treated = (rng.random((runs, entities)) < 0.5)[:, cluster]
    acted = scores >= 0.5
    worth = _worth(labels, acted)
    clustered = dict.fromkeys(("decision", "auc", "value", "srm"), 0)
    naive_decision = 0
    for run in range(runs):
        t, c = treated[run], ~treated[run]
        ct, cc = cluster[t], cluster[c]
        a = acted[run]
        result = two_proportion_test(*effective_counts(a[c], cc), *effective_counts(a[t], ct))
        clustered["decision"] += result.significant
        naive = two_proportion_test(int(a[c].sum()), int(c.sum()), int(a[t].sum()), int(t.sum()))
        naive_decision += naive.significant
        clustered["auc"] += auc_difference_test(
            labels[run][c],
            scores[run][c],
            labels[run][t],
            scores[run][t],
            control_clusters=cc,
            treatment_clusters=ct,
        ).significant
        clustered["value"] += mean_difference_test(
            worth[run][c],
            worth[run][t],
            n_boot=500,
            seed=run,
            control_clusters=cc,
            treatment_clusters=ct,
        ).significant
        units = {"control": len(np.unique(cc)), "challenger": len(np.unique(ct))}
        clustered["srm"] += sample_ratio_test(units, {"control": 1, "challenger": 1}).mismatch
    low, high = stats.binom.ppf([0.0005, 0.9995], runs, ALPHA)
    for name in ("decision", "auc", "value"):
        assert low <= clustered[name] <= high, (name, clustered[name], (low, high))
    assert clustered["srm"] <= stats.binom.ppf(0.9995, runs, SRM_THRESHOLD)
    assert naive_decision > high  # why the readout clusters by the entity
