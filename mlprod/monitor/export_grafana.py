"""A Grafana dashboard over the monitoring gauges, for teams that already run Grafana.

The same sections as mlprod's own dashboard (volume, latency, scores, drift per feature, data
quality, live against estimated AUC, business value, firing alerts), as Prometheus queries on
the names :mod:`mlprod.monitor.gauges` exports, restricted to the project's model. The
Prometheus data source is a ``$datasource`` variable, so the JSON imports into any Grafana;
``$version``, ``$variant`` and ``$feature`` narrow the panels. Alert thresholds from
``monitor.alerts`` are drawn as lines on the panels of their metrics.
"""

from __future__ import annotations

from itertools import count
from typing import Any

from mlprod.monitor.alerts import threshold
from mlprod.monitor.export_prometheus import model_name, promql_string
from mlprod.monitor.gauges import ALERT_FIRING, WINDOW_END, gauge_name, gauge_scale
from mlprod.project.config import ProjectConfig
from mlprod.project.monitoring import FEATURE_METRICS

SCHEMA_VERSION = 39  # Grafana 10.4 / 11
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_COLOURS = {"info": "blue", "warning": "orange", "critical": "red"}


def dashboard(config: ProjectConfig) -> dict[str, Any]:
    """The Grafana dashboard JSON of ``config``'s project (import it, pick the data source)."""
    model = promql_string(model_name(config))
    model_sel = f'model="{model}", version=~"$version", variant=~"$variant"'
    feature_sel = f'{model_sel}, feature=~"$feature"'
    series = "v{{version}} {{variant}}"
    per_feature = "{{feature}} v{{version}} {{variant}}"
    layout = _Layout()
    limits = _limits(config)

    def metric(name: str, legend: str = series) -> tuple[str, str]:
        selector = feature_sel if name in FEATURE_METRICS else model_sel
        return f"{gauge_name(name)}{{{selector}}}", f"{name} {legend}"

    def bounds(name: str) -> list[tuple[str, str]]:
        expr, legend = metric(name)
        head, brace, rest = expr.partition("{")
        return [
            (expr, legend),
            (f"{head}_lower{brace}{rest}", f"{name} lower {series}"),
            (f"{head}_upper{brace}{rest}", f"{name} upper {series}"),
        ]

    def graph(title: str, names: list[str], unit: str = "short", **extra: Any) -> dict[str, Any]:
        targets = [metric(n, per_feature if n in FEATURE_METRICS else series) for n in names]
        return layout.panel(title, targets, unit, limits=_lines(limits, names), **extra)

    panels = [
        layout.row("Traffic"),
        graph("Volume (predictions per window)", ["rows"]),
        graph("Latency", ["latency_p50_ms", "latency_p99_ms"], unit="s"),
        graph("Score distribution", ["score_p10", "score_p50", "score_p90", "score_mean"]),
        graph("Decision rate", ["decision_rate", "decision_rate_change"], unit="percentunit"),
        layout.row("Drift per feature"),
        graph("PSI per feature", ["psi"]),
        graph("Normalised Wasserstein per feature", ["wasserstein"]),
        graph("Jensen-Shannon distance per feature", ["jensen_shannon"]),
        graph("KS distance per feature", ["ks_statistic"]),
        graph("Score PSI", ["score_psi"]),
        graph(
            "Data quality",
            ["null_rate_change", "unseen_share", "out_of_range_share"],
            unit="percentunit",
        ),
        layout.row("Performance"),
        layout.panel(
            "AUC: live against estimated",
            [*bounds("auc"), *bounds("estimated_auc")],
            "short",
            limits=_lines(limits, ["auc", "estimated_auc"]),
            description="Live AUC once outcomes have joined, with its 95% interval; the "
            "estimate from calibrated scores before they do, with its bounds.",
        ),
        layout.panel(
            "Log-loss and calibration error",
            [*bounds("log_loss"), metric("calibration_error")],
            "short",
            limits=_lines(limits, ["log_loss", "calibration_error"]),
        ),
        layout.panel(
            "Business value",
            [*bounds("value"), metric("value_per_prediction")],
            "short",
            limits=_lines(limits, ["value", "value_per_prediction"]),
            description="Business value at the deployed threshold, with its 95% interval.",
        ),
        graph("Labelled predictions", ["labelled", "positive_rate"]),
        layout.row("Alerts"),
        layout.panel(
            "Alerts firing",
            [(f'sum({ALERT_FIRING}{{model="{model}"}}) or vector(0)', "firing")],
            "short",
            kind="stat",
            width=6,
        ),
        layout.panel(
            "Firing alerts",
            [(f'{ALERT_FIRING}{{model="{model}"}}', "")],
            "short",
            kind="table",
            width=12,
        ),
        layout.panel(
            "Age of the newest window",
            [(f"time() - {WINDOW_END}{{{model_sel}}}", series)],
            "s",
            kind="stat",
            width=6,
        ),
    ]
    return {
        "title": f"mlprod: {config.name}",
        "uid": f"mlprod-{config.name}"[:40],
        "description": config.description or f"Monitoring of the mlprod project '{config.name}'.",
        "tags": ["mlprod"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-7d", "to": "now"},
        "timezone": "utc",
        "refresh": "1m",
        "annotations": {"list": []},
        "templating": {"list": _variables(model)},
        "panels": panels,
    }


def _variables(model: str) -> list[dict[str, Any]]:
    def query(name: str, label: str, source: str) -> dict[str, Any]:
        text = f'label_values({source}{{model="{model}"}}, {name})'
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DATASOURCE,
            "definition": text,
            "query": {"query": text, "refId": f"{name}_values"},
            "refresh": 2,  # on time range change
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Prometheus",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        query("version", "Version", gauge_name("rows")),
        query("variant", "Variant", gauge_name("rows")),
        query("feature", "Feature", gauge_name("psi")),
    ]


def _limits(config: ProjectConfig) -> dict[str, list[tuple[float, str]]]:
    """The alert thresholds of each metric, scaled as its gauge, with their colour."""
    found: dict[str, list[tuple[float, str]]] = {}
    for rule in config.monitor.alerts:
        limit, _ = threshold(rule)
        colour = _COLOURS[rule.severity]
        found.setdefault(rule.metric, []).append((limit * gauge_scale(rule.metric), colour))
    return found


def _lines(limits: dict[str, list[tuple[float, str]]], names: list[str]) -> list[dict[str, Any]]:
    steps = sorted({step for name in names for step in limits.get(name, [])})
    return [{"color": colour, "value": value} for value, colour in steps]


class _Layout:
    """Panel ids and grid positions: two panels a line, a row header where a section starts."""

    def __init__(self) -> None:
        self._ids = count(1)
        self._x = 0
        self._y = 0

    def _place(self, width: int, height: int) -> dict[str, int]:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + height
        spot = {"x": self._x, "y": self._y, "w": width, "h": height}
        self._x += width
        return spot

    def row(self, title: str) -> dict[str, Any]:
        if self._x:
            self._x, self._y = 0, self._y + 8
        spot = {"x": 0, "y": self._y, "w": 24, "h": 1}
        self._y += 1
        return {
            "type": "row",
            "id": next(self._ids),
            "title": title,
            "collapsed": False,
            "gridPos": spot,
            "panels": [],
        }

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        unit: str,
        *,
        kind: str = "timeseries",
        width: int = 12,
        limits: list[dict[str, Any]] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}, *(limits or [])]
        defaults: dict[str, Any] = {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
        }
        if kind == "timeseries" and limits:
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panel: dict[str, Any] = {
            "type": kind,
            "id": next(self._ids),
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": self._place(width, 8),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {},
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": DATASOURCE,
                    "expr": expr,
                    "legendFormat": legend or "__auto",
                    "instant": kind != "timeseries",
                    "range": kind == "timeseries",
                    **({"format": "table"} if kind == "table" else {}),
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        return panel
