"""Window summaries into the numbers people watch: one ``MetricValue`` per metric, window, model
version and variant (and feature, for feature metrics)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np

from mlprod.monitor import drift, estimate, performance, quality
from mlprod.monitor.reference import NumericReference, ReferenceProfile
from mlprod.monitor.summary import (
    SCORE_BINS,
    CategoricalSummary,
    NumericSummary,
    WindowSummary,
)
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.monitor.windows import Window
from mlprod.project.monitoring import DriftSettings

HISTORY = 24  # volume_change compares a window with the median of this many before it
LEVEL = 0.95  # confidence level of every interval
_CENTRES = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS


@dataclass(frozen=True)
class VersionProfile:
    """What monitoring needs to know about one model version."""

    reference: ReferenceProfile
    threshold: float
    worth: tuple[float, float, float, float] | None  # tp, fp, fn, tn; None: not constant

    @cached_property
    def score_bin_of_fine_bin(self) -> np.ndarray | None:
        """The reference score bin of each fine score bin's centre (for the score PSI)."""
        score = self.reference.score
        return None if score is None else np.searchsorted(score.edges, _CENTRES, side="right")


def compute_metrics(
    windows: Sequence[Window],
    profiles: dict[tuple[str, str], VersionProfile],
    settings: DriftSettings,
    earlier: Sequence[tuple[WindowKey, int]] = (),
) -> list[MetricValue]:
    """Every metric of ``windows``, in window order (``earlier``: other windows of the same
    series and their row counts, for the volume change)."""
    out: list[MetricValue] = []
    counts: dict[tuple[str, str, str], dict[datetime, int]] = defaultdict(dict)
    for key, rows in earlier:
        counts[(key.model_name, key.model_version, key.variant)][key.start] = rows
    for window in windows:
        key = window.key
        counts[(key.model_name, key.model_version, key.variant)][key.start] = window.summary.rows
    ordered = {
        series: (sorted(found), [found[start] for start in sorted(found)])
        for series, found in counts.items()
    }
    for window in sorted(windows, key=lambda w: (w.key.start, w.key.model_version, w.key.variant)):
        key = window.key
        profile = profiles.get((key.model_name, key.model_version))
        if profile is None:
            continue
        starts, sizes = ordered[(key.model_name, key.model_version, key.variant)]
        at = bisect_left(starts, key.start)
        previous = sizes[max(0, at - HISTORY) : at]
        out.extend(_model_metrics(key, window.summary, profile, previous))
    by_version: dict[tuple[str, str], list[Window]] = defaultdict(list)
    for window in windows:
        if window.summary.rows >= settings.min_rows:
            by_version[(window.key.model_name, window.key.model_version)].append(window)
    for version, members in by_version.items():
        if version in profiles:
            out.extend(_feature_metrics(members, profiles[version].reference, settings))
    return out


def _model_metrics(
    key: WindowKey, summary: WindowSummary, profile: VersionProfile, previous: list[int]
) -> list[MetricValue]:
    def value(
        metric: str,
        number: float | None,
        lower: float | None = None,
        upper: float | None = None,
    ) -> MetricValue:
        return MetricValue(key, metric, MODEL, _number(number), _number(lower), _number(upper))

    rows = summary.rows
    scores = summary.score_bins
    p10, p50, p90 = performance.percentiles(scores, [0.1, 0.5, 0.9])
    decision_rate = summary.decisions / rows if rows else None
    reference_rate = profile.reference.score.decision_rate if profile.reference.score else None
    values = [
        value("rows", rows),
        value("volume_change", quality.volume_change(rows, previous)),
        value("score_mean", summary.score_sum / rows if rows else None),
        value("score_p10", p10),
        value("score_p50", p50),
        value("score_p90", p90),
        value("decision_rate", decision_rate),
        value(
            "decision_rate_change",
            None
            if decision_rate is None or reference_rate is None
            else decision_rate - reference_rate,
        ),
        value("latency_p50_ms", performance.latency_quantile(summary.latency, 0.5)),
        value("latency_p99_ms", performance.latency_quantile(summary.latency, 0.99)),
    ]
    score_reference = profile.reference.score
    if score_reference is not None and rows:
        live = np.bincount(
            profile.score_bin_of_fine_bin[scores.index],  # type: ignore[index]
            weights=scores.count,
            minlength=score_reference.edges.size + 1,
        )
        values.append(
            value("score_psi", drift.psi(score_reference.shares, live, score_reference.psi_cuts))
        )
    if rows:
        estimated, low, high = estimate.estimated_auc_normal(scores, level=LEVEL)
        values.append(value("estimated_auc", estimated, low, high))
    labels = summary.labels
    values.append(value("labelled", labels.count))
    if labels.count:
        values.append(value("positive_rate", labels.positives / labels.count))
        mean, low, high = performance.log_loss(labels, LEVEL)
        values.append(value("log_loss", mean, low, high))
        positives, negatives = labels.positive_bins, labels.negative_bins
        values.append(
            value("calibration_error", performance.calibration_error(positives, negatives))
        )
        if 0 < labels.positives < labels.count:
            auc = performance.auc(positives, negatives)
            low, high = performance.auc_interval(
                auc, labels.positives, labels.count - labels.positives, LEVEL
            )
            values.append(value("auc", auc, low, high))
        if profile.worth is not None:
            total, low, high = performance.business_value(labels, *profile.worth, LEVEL)
            values.append(value("value", total, low, high))
            values.append(value("value_per_prediction", total / labels.count))
    return values


def _feature_metrics(
    windows: list[Window], reference: ReferenceProfile, settings: DriftSettings
) -> list[MetricValue]:
    """Every feature metric of windows of one version: each drift statistic of a numeric
    feature for all the windows at once (one row of bin counts per window)."""
    out: list[MetricValue] = []
    for name, ref in reference.features.items():
        present = [(w.key, w.summary.features[name]) for w in windows if name in w.summary.features]
        for key, feature in present:
            null_rate = quality.null_rate(feature)
            out.append(MetricValue(key, "null_rate", name, _number(null_rate)))
            if null_rate is not None:
                out.append(MetricValue(key, "null_rate_change", name, null_rate - ref.null_rate))
        if isinstance(ref, NumericReference):
            numeric = [(k, f) for k, f in present if isinstance(f, NumericSummary)]
            out.extend(_numeric_drift(name, ref, numeric, settings))
        else:
            for key, feature in present:
                if not isinstance(feature, CategoricalSummary):
                    continue
                unseen = quality.unseen_share(ref, feature)
                out.append(MetricValue(key, "unseen_share", name, _number(unseen)))
                if feature.count:
                    distance = drift.jensen_shannon(ref.shares, feature.levels)
                    out.append(MetricValue(key, "jensen_shannon", name, _number(distance)))
    return out


def _numeric_drift(
    name: str,
    reference: NumericReference,
    present: list[tuple[WindowKey, NumericSummary]],
    settings: DriftSettings,
) -> list[MetricValue]:
    out = [
        MetricValue(key, "out_of_range_share", name, _number(quality.out_of_range_share(f)))
        for key, f in present
    ]
    filled = [(key, f) for key, f in present if f.count]
    if not filled:
        return out
    counts = np.array([f.bins for _, f in filled], dtype=np.float64)
    psi = drift.psi_many(reference.shares, counts, reference.psi_cuts)
    statistic, p_value = drift.ks_many(reference.edges, reference.shares, reference.count, counts)
    flags = (p_value < settings.ks_alpha) & (statistic >= settings.ks_min_effect)
    extremes = np.array(
        [
            (
                f.below,
                f.above,
                reference.minimum if f.minimum is None else f.minimum,
                reference.maximum if f.maximum is None else f.maximum,
            )
            for _, f in filled
        ],
        dtype=np.float64,
    )
    distance = drift.wasserstein_many(reference, counts, *extremes.T)
    columns = zip(
        _numbers(psi), _numbers(statistic), flags.tolist(), _numbers(distance), strict=True
    )
    for (key, _), (psi_i, statistic_i, flag, distance_i) in zip(filled, columns, strict=True):
        out.append(MetricValue(key, "psi", name, psi_i))
        out.append(MetricValue(key, "ks_statistic", name, statistic_i))
        out.append(MetricValue(key, "ks_drift", name, float(flag)))
        out.append(MetricValue(key, "wasserstein", name, distance_i))
    return out


def _number(value: float | int | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(values: np.ndarray) -> list[float | None]:
    """``_number`` of each value of an array."""
    return [x if math.isfinite(x) else None for x in values.tolist()]
