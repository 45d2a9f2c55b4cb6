"""The monitoring dashboard: one self-contained HTML page of what the monitor measured.

The same page is served at ``/dashboard`` and written by ``mlprod monitor report``, so it
needs nothing but itself: the style sheet is inline, the charts are inline SVG
(:mod:`mlprod.monitor.charts`), there is no script, and a Content-Security-Policy in the page
forbids every request a browser could make for it, so a stray reference fails loudly in tests
rather than quietly calling out in production. Every string that reaches the page (project,
feature, variant and alert names, notes, the readout) is escaped by jinja2's autoescape.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from markupsafe import Markup
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlprod.evaluate import _html
from mlprod.evaluate.plots import to_png
from mlprod.monitor import charts
from mlprod.monitor.charts import MetricTable, SeriesKey
from mlprod.monitor.values import MetricValue
from mlprod.project.monitoring import FEATURE_METRICS

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
RECENT_WINDOWS = 24  # the traffic split is over the span of this many typical windows
ALERT_FIELDS = (
    "rule",
    "severity",
    "subject",
    "model_version",
    "variant",
    "value",
    "threshold",
    "fired_at",
)
METRIC_NAMES = {
    "psi": "PSI",
    "wasserstein": "Wasserstein / std",
    "jensen_shannon": "Jensen-Shannon",
    "ks_statistic": "KS D",
    "ks_drift": "KS drift",
    "null_rate": "null rate",
    "null_rate_change": "null rate change",
    "unseen_share": "unseen share",
    "out_of_range_share": "out of range share",
}
EXTRA_STYLE = """
.chart { margin: 0; } .chart svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.chart figcaption, .empty { color: #555; font-size: 0.9rem; max-width: 600px; }
.card.firing { border-color: #e06666; background: #fdecea; }
td.sev-0 { background: #e3f2e3; } td.sev-1 { background: #fdf0cf; }
td.sev-2, tr.critical td:first-child { background: #f8d7d5; }
tr.warning td:first-child { background: #fdf0cf; } tr.info td:first-child { background: #e4eefa; }
.swatch { display: inline-block; width: 0.8rem; height: 0.8rem; vertical-align: middle;
          margin: 0 0.2rem 0 0.6rem; border: 1px solid #ccc; }
.notice { background: #eef4fb; border: 1px solid #9cc0e8; padding: 0.8rem 1rem; }
"""
# The page asks for nothing: inline styles and data: images (the icon, raster in SVGs) only.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass
class DashboardData:
    """Everything the dashboard shows. ``firing`` holds alert states as dicts with the keys of
    :data:`ALERT_FIELDS`; ``offline_auc`` maps a model version to its test AUC; ``readout`` is
    an experiment readout's ``to_dict()`` while an experiment runs."""

    project: str
    generated_at: datetime
    metrics: list[MetricValue]
    firing: list[dict[str, Any]] = field(default_factory=list)
    offline_auc: dict[str, float] = field(default_factory=dict)
    readout: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Chart:
    key: str
    svg: Markup | None
    empty: str  # why there is no chart, shown instead of it
    caption: str = ""


@dataclass(frozen=True)
class Card:
    label: str
    number: str
    detail: str
    firing: bool = False


@dataclass(frozen=True)
class Cell:
    text: str
    css: str = ""


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("mlprod.monitor", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(data: DashboardData) -> str:
    """The dashboard page of ``data``."""
    table = MetricTable(data.metrics)
    readout = data.readout
    currency = str(readout.get("currency") or "") if readout else ""
    context: dict[str, Any] = {
        "style": Markup(_html.STYLE + EXTRA_STYLE),
        "csp": CSP,
        "icon": icon_data_uri(),
        "project": data.project,
        "generated": _when(data.generated_at),
        "has_data": bool(table),
        "cards": _cards(table, data),
        "series": _series_rows(table, data.offline_auc),
        "monitoring": _charts(table, data.offline_auc, currency) if table else {},
        "drift_charts": _drift_charts(table),
        "drift_header": _drift_header(table),
        "drift_rows": _drift_rows(table, data.firing),
        "bands": _bands(),
        "severity_colours": charts.SEVERITY_COLOURS,
        "no_value_colour": charts.NO_VALUE_COLOUR,
        "alerts": _alert_rows(data.firing),
        "alert_header": [name.replace("_", " ") for name in ALERT_FIELDS],
        "readout": _readout(readout, table) if readout else None,
        "notes": data.notes,
    }
    return _ENVIRONMENT.get_template("dashboard.html").render(context)


def render_error(project: str, message: str) -> str:
    """The page shown instead of the dashboard when its data cannot be gathered."""
    return _ENVIRONMENT.get_template("error.html").render(
        style=Markup(_html.STYLE + EXTRA_STYLE),
        csp=CSP,
        icon=icon_data_uri(),
        project=project,
        message=message,
    )


@functools.cache
def icon_png() -> bytes:
    """A 16x16 icon (three rising bars), made once: browsers ask for one on every page."""
    figure = Figure(figsize=(0.16, 0.16), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.bar([0, 1, 2], [1, 2, 3], width=0.8, color="#1f77b4")
    axes.set_xlim(-0.5, 2.5)
    axes.set_ylim(0, 3)
    axes.set_axis_off()
    return to_png(figure)


def icon_data_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(icon_png()).decode("ascii")


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, datetime):
        if moment.tzinfo is not None:  # shown as naive UTC, as every window is
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.isoformat(sep=" ", timespec="minutes")
    return str(moment)


def _number(value: float | None) -> str:
    return "—" if value is None else _html.format_number(float(value))


def _span(duration: timedelta) -> str:
    hours = duration / timedelta(hours=1)
    return f"{hours:.3g} hours" if hours < 48 else f"{hours / 24:.3g} days"


def _cards(table: MetricTable, data: DashboardData) -> list[Card]:
    firing = _severity_counts(data.firing)
    alert_card = Card(
        "Firing alerts",
        str(len(data.firing)),
        ", ".join(f"{count} {severity}" for severity, count in firing) or "none",
        firing=bool(data.firing),
    )
    windows = [v for key in table.series for v in table.windows(key)]
    if not windows:
        return [Card("Predictions", "0", "none logged yet"), alert_card]
    latest = max(v.window.end for v in windows)
    durations = sorted(v.window.end - v.window.start for v in windows)
    span = RECENT_WINDOWS * durations[len(durations) // 2]
    recent = {
        key: sum(v.value or 0 for v in table.windows(key) if v.window.end > latest - span)
        for key in table.series
    }
    total = sum(recent.values())
    split = ", ".join(
        f"{table.label(key)} {rows / total:.0%}" for key, rows in recent.items() if rows
    )
    newest = max(windows, key=lambda v: v.window.start).window
    in_newest = sum(v.value or 0 for v in windows if v.window.start == newest.start)
    weights = (data.readout or {}).get("weights")
    if weights:
        configured = ", ".join(f"{name} {weight:g}" for name, weight in weights.items())
        split += f"; experiment weights {configured}"
    return [
        Card(
            "Model versions",
            str(len({key[:2] for key in table.series})),
            ", ".join(table.label(key) for key in table.series),
        ),
        Card(f"Predictions, last {_span(span)}", f"{total:,.0f}", split or "none"),
        Card(
            "Latest window",
            _when(newest.start),
            f"to {_when(newest.end)} (UTC): {in_newest:,.0f} predictions",
        ),
        alert_card,
    ]


def _severity_counts(firing: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for state in firing:
        severity = str(state.get("severity", ""))
        counts[severity] = counts.get(severity, 0) + 1
    return sorted(counts.items(), key=lambda item: SEVERITY_ORDER.get(item[0], 9))


def _series_rows(table: MetricTable, offline_auc: dict[str, float]) -> list[list[str]]:
    rows = []
    for key in table.series:
        windows = table.windows(key)
        total = sum(v.value or 0 for v in windows)
        auc = table.values("auc", key)
        latest_auc = next((v for v in reversed(auc) if v.value is not None), None)
        rows.append(
            [
                table.label(key),
                key[0],
                key[1],
                key[2] or "—",
                f"{len(windows):,}",
                f"{total:,.0f}",
                _when(windows[-1].window.end) if windows else "—",
                _number(offline_auc.get(key[1])),
                _number(latest_auc.value) if latest_auc else "—",
            ]
        )
    return rows


def _charts(table: MetricTable, offline_auc: dict[str, float], currency: str) -> dict[str, Chart]:
    def chart(key: str, svg: str | None, empty: str, caption: str = "") -> Chart:
        return Chart(key, Markup(svg) if svg else None, empty, caption)

    no_labels = (
        "No outcomes have joined the logged predictions yet: this fills in once labels arrive "
        "(POST /feedback or mlprod outcomes) and the monitor runs again."
    )
    return {
        "volume": chart(
            "volume", charts.volume_chart(table), "No window has counted predictions yet."
        ),
        "latency": chart(
            "latency",
            charts.latency_chart(table),
            "No prediction in these windows recorded its latency.",
        ),
        "scores": chart("scores", charts.score_chart(table), "No scores in these windows."),
        "auc": chart(
            "auc",
            charts.auc_chart(table, offline_auc),
            no_labels,
            "Offline: the AUC on each version's held-out test rows when it was trained.",
        ),
        "estimate": chart(
            "estimate",
            charts.estimate_chart(table),
            "No estimate yet: the estimate needs scored windows.",
            _coverage(table),
        ),
        "value": chart(
            "value",
            charts.value_chart(table, currency),
            "No business value yet: it needs joined outcomes and train.value in mlprod.yaml.",
            "Totals at the deployed threshold: a series with more traffic earns more; the "
            "experiment section compares variants per 1,000 predictions.",
        ),
    }


def _coverage(table: MetricTable) -> str:
    """How often the estimate's bounds held the AUC that was later realised."""
    held = checked = 0
    for key in table.series:
        realised = {v.window: v.value for v in table.values("auc", key) if v.value is not None}
        for estimate in table.values("estimated_auc", key):
            actual = realised.get(estimate.window)
            if actual is None or estimate.lower is None or estimate.upper is None:
                continue
            checked += 1
            held += estimate.lower <= actual <= estimate.upper
    if not checked:
        return "No window has both an estimate and a realised AUC yet."
    return (
        f"The estimate's bounds held the realised AUC in {held:,} of {checked:,} windows "
        f"({held / checked:.0%})."
    )


def _drift_charts(table: MetricTable) -> list[Chart]:
    found = []
    for index, key in enumerate(table.series):
        svg = charts.drift_chart(table, key, index)
        if svg:
            found.append(Chart(f"drift-{index}", Markup(svg), ""))
    return found


def _drift_metrics(table: MetricTable) -> list[str]:
    features = table.features()
    return [
        metric
        for metric in FEATURE_METRICS
        if any(table.values(metric, key, f) for key in table.series for f in features)
    ]


def _drift_header(table: MetricTable) -> list[str]:
    return ["feature", "model", "window", *(METRIC_NAMES[m] for m in _drift_metrics(table))]


def _drift_rows(table: MetricTable, firing: Sequence[dict[str, Any]]) -> list[list[Cell]]:
    """Each feature's numbers in the latest window with feature values, per series; the most
    drifted first. A feature with a firing alert has its name coloured by the alert."""
    metrics = _drift_metrics(table)
    alerts: dict[tuple[str, str, str], str] = {}
    for state in sorted(firing, key=lambda s: -SEVERITY_ORDER.get(str(s.get("severity")), 9)):
        where = (str(state.get("subject")), str(state.get("model_version")), state.get("variant"))
        alerts[(where[0], where[1], str(where[2] or ""))] = str(state.get("severity"))
    ranked: list[tuple[int, str, list[Cell]]] = []
    for key in table.series:
        latest = _latest_feature_window(table, key, metrics)
        if latest is None:
            continue
        for feature in table.features():
            values = {m: _value_at(table.values(m, key, feature), latest) for m in metrics}
            if all(v is None for v in values.values()):
                continue
            levels = [charts.severity(m, v) for m, v in values.items()]
            worst = max((level for level in levels if level is not None), default=-1)
            alert = alerts.get((feature, key[1], key[2]))
            cells = [
                Cell(feature + (f" ({alert} alert firing)" if alert else ""), alert or ""),
                Cell(table.label(key)),
                Cell(_when(latest)),
                *(
                    Cell(_number(value), "" if level is None else f"sev-{level}")
                    for value, level in zip(values.values(), levels, strict=True)
                ),
            ]
            ranked.append((-(3 if alert else worst), feature, cells))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [cells for _, _, cells in ranked]


def _latest_feature_window(
    table: MetricTable, key: SeriesKey, metrics: Sequence[str]
) -> datetime | None:
    starts = [
        start
        for feature in table.features()
        for metric in metrics
        if (start := charts.latest_start(table.values(metric, key, feature))) is not None
    ]
    return max(starts, default=None)


def _value_at(values: Sequence[MetricValue], start: datetime) -> float | None:
    for value in reversed(values):
        if value.window.start == start:
            return value.value
        if value.window.start < start:
            break
    return None


def _bands() -> list[tuple[str, str, str]]:
    return [
        (METRIC_NAMES.get(metric, metric), f"{low:g}", f"{high:g}")
        for metric, (low, high) in charts.BANDS.items()
        if metric in METRIC_NAMES and metric != "ks_drift"
    ]


def _alert_rows(firing: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    ordered = sorted(
        firing,
        key=lambda s: (SEVERITY_ORDER.get(str(s.get("severity")), 9), str(s.get("fired_at"))),
    )
    rows = []
    for state in ordered:
        cells = []
        for name in ALERT_FIELDS:
            value = state.get(name)
            if isinstance(value, float | int) and not isinstance(value, bool):
                cells.append(_number(float(value)))
            elif isinstance(value, datetime):
                cells.append(_when(value))
            else:
                cells.append("—" if value in (None, "") else str(value))
        rows.append((str(state.get("severity", "")), cells))
    return rows


def _readout(readout: dict[str, Any], table: MetricTable) -> dict[str, Any]:
    """The A/B readout as table rows, and its business value per variant as a chart."""
    currency = str(readout.get("currency") or "")
    level = float(readout.get("level") or 0.95)
    requests = sum(int(v.get("requests") or 0) for v in readout.get("variants", []))
    rows, bars = [], []
    for variant in readout.get("variants", []):
        name = str(variant.get("name"))
        outcomes = variant.get("outcomes") or {}
        auc = outcomes.get("auc") or None
        value = outcomes.get("value_per_1000") or None
        test = (variant.get("vs_control") or {}).get("value_per_1000")
        served = int(variant.get("requests") or 0)
        rows.append(
            [
                name + (" (control)" if name == readout.get("control") else ""),
                ", ".join(str(m) for m in variant.get("models", [])),
                f"{served:,}",
                f"{served / requests:.1%}" if requests else "—",
                f"{int(outcomes.get('labelled') or 0):,}",
                _estimate(auc),
                _estimate(value, currency),
                _difference(test, currency),
            ]
        )
        if value:
            low, high = value["ci"]
            bars.append((name, float(value["value"]), float(low), float(high)))
    colours: dict[str, str] = {}
    for key in table.series:
        colours.setdefault(key[2], table.colours[key])
    unit = f"Value per 1,000 predictions ({level:.0%} interval)" + (
        f", {currency}" if currency else ""
    )
    svg = charts.readout_value_chart(bars, colours, unit)
    return {
        "experiment": str(readout.get("experiment", "")),
        "level": f"{level:.0%}",
        "header": [
            "variant",
            "models",
            "requests",
            "share",
            "labelled",
            "AUC",
            "value per 1,000",
            "value vs control",
        ],
        "rows": rows,
        "chart": Chart("readout", Markup(svg) if svg else None, "No variant has a value yet."),
        "notes": [str(n) for n in readout.get("notes", [])]
        + [
            f"{variant.get('name')}: {note}"
            for variant in readout.get("variants", [])
            for note in (variant.get("outcomes") or {}).get("notes", [])
        ],
    }


def _estimate(estimate: dict[str, Any] | None, unit: str = "") -> str:
    if not estimate:
        return "—"
    low, high = estimate["ci"]
    text = f"{_number(estimate['value'])} ({_number(low)} to {_number(high)})"
    return f"{text} {unit}".strip()


def _difference(test: dict[str, Any] | None, unit: str = "") -> str:
    if not test:
        return "—"
    low, high = test["ci"]
    verdict = "significant" if test.get("significant") else "not significant"
    return (
        f"{test['difference']:+,.4g} {unit} ({_number(low)} to {_number(high)}; "
        f"p = {test['p_value']:.3g}, {verdict})"
    ).replace("  ", " ")
