"""The monitoring numbers as Prometheus gauges, for teams that watch Prometheus and Grafana.

Each metric of :data:`~mlprod.project.monitoring.METRICS` is one gauge,
``mlprod_monitor_<metric>`` (latencies in seconds, as Prometheus names them:
``mlprod_monitor_latency_p99_seconds``), labelled ``model``, ``version``, ``variant`` and, for
a feature metric, ``feature``. A gauge holds the newest window that has a value, open or
closed, so AUC shows the last window whose labels have joined rather than nothing. Metrics with
a confidence interval or bounds have ``_lower``/``_upper`` gauges beside them.
``mlprod_alert_firing`` is 1 for each alert firing (no series when it is not), and
``mlprod_monitor_window_end_timestamp_seconds`` says how fresh the numbers are.

Every update replaces the whole picture: a label set missing from the new metrics (a version
no longer served, an alert resolved) is removed, so dashboards do not show ghosts.
The exports (:mod:`mlprod.monitor.export_prometheus`, :mod:`~mlprod.monitor.export_grafana`)
take their names from here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge

from mlprod.monitor.alert_state import AlertState
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.project.monitoring import FEATURE_METRICS, METRICS

PREFIX = "mlprod_monitor_"
ALERT_FIRING = "mlprod_alert_firing"
WINDOW_END = "mlprod_monitor_window_end_timestamp_seconds"
MODEL_LABELS = ("model", "version", "variant")
FEATURE_LABELS = ("feature", "model", "version", "variant")
ALERT_LABELS = ("alert", "severity", "feature", "model", "version", "variant")
# The metrics computed with a confidence interval (live performance) or bounds (estimate).
BOUNDED = ("auc", "log_loss", "value", "value_per_prediction", "estimated_auc")
_MILLISECONDS = "_ms"

_HELP = {
    "psi": "Population stability index of the feature against the reference.",
    "wasserstein": "Wasserstein-1 distance to the reference over the reference's std.",
    "jensen_shannon": "Jensen-Shannon distance (base 2) of the feature's categories.",
    "ks_statistic": "Kolmogorov-Smirnov distance of the feature to the reference.",
    "ks_drift": "1 when the KS test finds drift past the effect-size floor, else 0.",
    "null_rate": "Share of null values of the feature.",
    "null_rate_change": "Null rate minus the reference's null rate.",
    "unseen_share": "Share of values in categories the reference never saw.",
    "out_of_range_share": "Share of values outside the reference's range.",
    "rows": "Predictions in the window.",
    "volume_change": "Predictions relative to the median of earlier windows, minus 1.",
    "score_psi": "Population stability index of the scores against the reference.",
    "score_mean": "Mean calibrated score.",
    "score_p10": "10th percentile of the scores.",
    "score_p50": "Median score.",
    "score_p90": "90th percentile of the scores.",
    "decision_rate": "Share of positive decisions.",
    "decision_rate_change": "Decision rate minus the reference's.",
    "latency_p50_ms": "Median prediction latency.",
    "latency_p99_ms": "99th percentile of prediction latency.",
    "labelled": "Predictions whose outcome has joined.",
    "positive_rate": "Share of positive outcomes among labelled predictions.",
    "auc": "Live AUC on labelled predictions.",
    "log_loss": "Live log-loss on labelled predictions.",
    "calibration_error": "Expected calibration error over ten score bins.",
    "value": "Business value at the deployed threshold.",
    "value_per_prediction": "Business value per prediction.",
    "estimated_auc": "AUC estimated from the calibrated scores before outcomes join.",
}


def gauge_name(metric: str) -> str:
    """The Prometheus name of a metric's gauge (``latency_p99_ms`` is exported in seconds)."""
    if metric.endswith(_MILLISECONDS):
        return f"{PREFIX}{metric.removesuffix(_MILLISECONDS)}_seconds"
    return f"{PREFIX}{metric}"


def gauge_scale(metric: str) -> float:
    """What a metric's value is multiplied by on its gauge (and its thresholds in rules)."""
    return 0.001 if metric.endswith(_MILLISECONDS) else 1.0


def gauge_labels(metric: str) -> tuple[str, ...]:
    return FEATURE_LABELS if metric in FEATURE_METRICS else MODEL_LABELS


def bounded(metric: str) -> bool:
    return metric in BOUNDED


def exported_names() -> list[str]:
    """Every gauge name this module exports."""
    names = [ALERT_FIRING, WINDOW_END]
    for metric in METRICS:
        names.append(gauge_name(metric))
        if bounded(metric):
            names += [f"{gauge_name(metric)}_lower", f"{gauge_name(metric)}_upper"]
    return names


Labels = tuple[str, ...]


class MonitorGauges:
    """The monitoring gauges in ``registry`` (a server's own, never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[str, Gauge] = {}
        for metric in METRICS:
            name, labels = gauge_name(metric), gauge_labels(metric)
            unit = " In seconds." if metric.endswith(_MILLISECONDS) else ""
            text = f"{_HELP.get(metric, metric)}{unit} Newest window with a value."
            self._add(name, text, labels, registry)
            if bounded(metric):
                self._add(f"{name}_lower", f"Lower bound of {name}.", labels, registry)
                self._add(f"{name}_upper", f"Upper bound of {name}.", labels, registry)
        self._add(
            WINDOW_END,
            "Unix time of the end of the newest monitoring window.",
            MODEL_LABELS,
            registry,
        )
        self._add(ALERT_FIRING, "1 for each alert firing.", ALERT_LABELS, registry)
        self._present: dict[str, set[Labels]] = {name: set() for name in self._gauges}

    def _add(self, name: str, text: str, labels: Labels, registry: CollectorRegistry) -> None:
        self._gauges[name] = Gauge(name, text, labels, registry=registry)

    def update(self, metrics: Iterable[MetricValue], firing: Iterable[AlertState]) -> None:
        """Show the newest window with a value of each metric, and the alerts firing; remove
        every series these no longer have."""
        newest, ends = _newest(metrics)
        wanted: dict[str, dict[Labels, float]] = {name: {} for name in self._gauges}
        for (metric, subject, *model_labels), value in newest.items():
            if metric not in METRICS:
                continue
            labels = (subject, *model_labels) if metric in FEATURE_METRICS else tuple(model_labels)
            name, scale = gauge_name(metric), gauge_scale(metric)
            assert value.value is not None
            wanted[name][labels] = value.value * scale
            if bounded(metric):
                if value.lower is not None:
                    wanted[f"{name}_lower"][labels] = value.lower * scale
                if value.upper is not None:
                    wanted[f"{name}_upper"][labels] = value.upper * scale
        for labels, end in ends.items():
            wanted[WINDOW_END][labels] = end.replace(tzinfo=UTC).timestamp()
        for state in firing:
            if state.status != "firing":
                continue
            feature = "" if state.subject == MODEL else state.subject
            alert = (state.rule, state.severity, feature, *state.key[2:])
            wanted[ALERT_FIRING][alert] = 1.0
        with self._lock:
            for name, series in wanted.items():
                gauge = self._gauges[name]
                for labels in self._present[name] - series.keys():
                    gauge.remove(*labels)
                for labels, number in series.items():
                    gauge.labels(*labels).set(number)
                self._present[name] = set(series)


def _newest(
    metrics: Iterable[MetricValue],
) -> tuple[dict[tuple[str, ...], MetricValue], dict[Labels, datetime]]:
    """The newest value of each metric, subject, model, version and variant (None and NaN
    skipped), and the end of the newest window of each model, version and variant. One tight
    pass: the monitor hands over every window it knows, hundreds of thousands of values."""
    newest: dict[tuple[str, ...], MetricValue] = {}
    windows: dict[int, WindowKey] = {}
    get = newest.get
    for value in metrics:
        w = value.window
        windows[id(w)] = w
        number = value.value
        if number is None or number != number:  # None or NaN
            continue
        key = (value.metric, value.subject, w.model_name, w.model_version, w.variant)
        seen = get(key)
        if seen is None or seen.window.end <= w.end:
            newest[key] = value
    ends: dict[Labels, datetime] = {}
    for w in windows.values():
        labels = (w.model_name, w.model_version, w.variant)
        if labels not in ends or ends[labels] < w.end:
            ends[labels] = w.end
    return newest, ends
