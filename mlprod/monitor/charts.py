"""The dashboard's charts: monitoring values over time, drawn with matplotlib and returned as
inline SVG, so the page needs no script and nothing from the network.

SVG rather than PNG: six lines of 720 hourly windows are 150 kB either way, but SVG stays
sharp when zoomed and its text is real text (``svg.fonttype: none``), which matplotlib writes
escaped. What is not needed inline is cut: the XML prologue, the DTD and namespace addresses,
and every ``id`` that nothing refers to (several SVGs share one page, and matplotlib numbers
its groups the same way in each); the ids that are referred to (markers, clip paths) are
hashed with a salt of the chart's name, so they differ between charts and runs repeat.

A series is one model version and variant; it keeps its colour in every chart. Each chart
returns ``None`` when it has nothing to draw, so the page says why instead of an empty axis.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, StrMethodFormatter

from mlprod.evaluate.plots import DPI, WIDTH, _text
from mlprod.monitor.values import MODEL, MetricValue

SeriesKey = tuple[str, str, str]  # model name, model version, variant
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
TimeArray = np.ndarray[Any, np.dtype[np.datetime64]]

TIME_HEIGHT = 3.2  # inches: two time charts side by side fill a wide screen
MANY_POINTS = 60  # windows above which lines are drawn without markers
# Where a drift number turns from stable to moderate and from moderate to major. These are
# display conventions (PSI's 0.1 / 0.25 rule of thumb and the like), not alerts: alerts are the
# rules of mlprod.yaml, and the page shows which of them fire.
BANDS: dict[str, tuple[float, float]] = {
    "psi": (0.1, 0.25),
    "wasserstein": (0.1, 0.25),
    "jensen_shannon": (0.1, 0.2),
    "ks_statistic": (0.1, 0.2),
    "ks_drift": (0.5, 2.0),  # 1: significant and large enough, shown as moderate
    "null_rate_change": (0.02, 0.1),  # absolute change
    "unseen_share": (0.01, 0.05),
    "out_of_range_share": (0.01, 0.05),
    "score_psi": (0.1, 0.25),
}
SEVERITY_COLOURS = ("#b9dfb9", "#f6c85f", "#e06666")  # stable, moderate, major
NO_VALUE_COLOUR = "#e6e6e6"

_SVG_LOCK = threading.Lock()  # rcParams are global: one chart is written at a time
_UNUSED_ID = re.compile(r' id="([^"]+)"')
_REFERENCE = re.compile(r'(?:url\(#|href="#)([^)"]+)')


def severity(metric: str, value: float | None) -> int | None:
    """0 stable, 1 moderate, 2 major by :data:`BANDS`; None without a value or a band."""
    if value is None or metric not in BANDS or not np.isfinite(value):
        return None
    moderate, major = BANDS[metric]
    size = abs(value) if metric == "null_rate_change" else value
    return 2 if size >= major else 1 if size >= moderate else 0


@dataclass(frozen=True)
class Track:
    """One metric of one series, a value per window in time order (NaN: no value)."""

    start: TimeArray
    end: TimeArray
    value: FloatArray
    lower: FloatArray
    upper: FloatArray

    @property
    def middle(self) -> TimeArray:
        middle: TimeArray = self.start + (self.end - self.start) / 2
        return middle

    @property
    def filled(self) -> bool:
        return bool(np.isfinite(self.value).any())


def _floats(values: Iterable[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _track(values: Sequence[MetricValue]) -> Track:
    return Track(
        start=np.array([v.window.start for v in values], dtype="datetime64[us]"),
        end=np.array([v.window.end for v in values], dtype="datetime64[us]"),
        value=_floats(v.value for v in values),
        lower=_floats(v.lower for v in values),
        upper=_floats(v.upper for v in values),
    )


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


class MetricTable:
    """The metrics of a dashboard, grouped once by metric, subject and series."""

    def __init__(self, metrics: Sequence[MetricValue]) -> None:
        groups: dict[tuple[str, str], dict[SeriesKey, list[MetricValue]]] = {}
        for value in metrics:
            window = value.window
            key = (window.model_name, window.model_version, window.variant)
            groups.setdefault((value.metric, value.subject), {}).setdefault(key, []).append(value)
        for by_series in groups.values():
            for values in by_series.values():
                values.sort(key=lambda v: v.window.start)
        self._groups = groups
        keys = {key for by_series in groups.values() for key in by_series}
        self.series: list[SeriesKey] = sorted(
            keys, key=lambda k: (k[0], _version_order(k[1]), k[2])
        )
        self.colours = {key: f"C{i % 10}" for i, key in enumerate(self.series)}
        self._names = len({key[0] for key in self.series})

    def __bool__(self) -> bool:
        return bool(self._groups)

    def label(self, key: SeriesKey) -> str:
        name, version, variant = key
        model = f"{name} v{version}" if self._names > 1 else f"v{version}"
        return f"{variant} ({model})" if variant else model

    def values(self, metric: str, key: SeriesKey, subject: str = MODEL) -> list[MetricValue]:
        return self._groups.get((metric, subject), {}).get(key, [])

    def tracks(self, metric: str, subject: str = MODEL) -> dict[SeriesKey, Track]:
        """Every series' track of ``metric``, in series order, leaving out those with no value."""
        by_series = self._groups.get((metric, subject), {})
        tracks = {key: _track(by_series[key]) for key in self.series if key in by_series}
        return {key: track for key, track in tracks.items() if track.filled}

    def features(self) -> list[str]:
        return sorted({subject for _, subject in self._groups if subject != MODEL})

    def windows(self, key: SeriesKey) -> list[MetricValue]:
        """The series' ``rows`` values, one per window, in time order."""
        return self.values("rows", key)


def to_svg(figure: Figure, name: str, title: str) -> str:
    """The figure as an ``<svg>`` element to put in an HTML page (``name`` salts its ids)."""
    buffer = io.BytesIO()
    with _SVG_LOCK, mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]
    text = text.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    text = text.replace(' xmlns="http://www.w3.org/2000/svg"', "")
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    used = set(_REFERENCE.findall(text))
    text = _UNUSED_ID.sub(lambda m: m.group(0) if m.group(1) in used else "", text)
    label = escape(title, quote=True)
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _figure(
    height: float, left: float = 0.95, bottom: float = 0.6, top: float = 0.35
) -> tuple[Figure, Axes]:
    """A figure with fixed margins in inches. (``plots.new_figure``'s constrained layout draws
    every text twice, which doubles the time of a chart.)"""
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(
        left=left / WIDTH, right=1 - 0.15 / WIDTH, bottom=bottom / height, top=1 - top / height
    )
    axes = figure.add_subplot()
    axes.grid(True, alpha=0.3)
    return figure, axes


def _time_axis(axes: Axes) -> None:
    locator = AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _legend(axes: Axes, entries: int) -> None:
    axes.legend(loc="best", fontsize="small", ncols=2 if entries > 4 else 1, framealpha=0.8)


def _marker(track: Track) -> str:
    return "o" if len(track.value) <= MANY_POINTS else ""


def volume_chart(table: MetricTable) -> str | None:
    """Predictions per window, stacked by series: the traffic split over time.

    Time windows of all series start together and stack. Count windows do not (each series
    fills its own), so their volume is drawn as predictions per hour, one line per series.
    """
    tracks = table.tracks("rows")
    if not tracks:
        return None
    figure, axes = _figure(TIME_HEIGHT)
    starts = np.unique(np.concatenate([t.start for t in tracks.values()]))
    longest = max(len(t.start) for t in tracks.values())
    colours = [table.colours[key] for key in tracks]
    labels = [_text(table.label(key)) for key in tracks]
    if len(starts) <= 1.2 * longest:
        last_end = max(t.end[-1] for t in tracks.values())
        x = np.append(starts, last_end)
        stacked = np.zeros((len(tracks), len(x)))
        for row, track in enumerate(tracks.values()):
            stacked[row, np.searchsorted(starts, track.start)] = np.nan_to_num(track.value)
        stacked[:, -1] = stacked[:, -2]
        axes.stackplot(x, stacked, labels=labels, colors=colours, step="post", alpha=0.85)
        axes.set_ylabel("Predictions per window")
    else:
        for (key, track), label in zip(tracks.items(), labels, strict=True):
            hours = (track.end - track.start) / np.timedelta64(1, "h")
            rate = track.value / np.where(hours > 0, hours, np.nan)
            axes.step(track.start, rate, where="post", color=table.colours[key], label=label)
        axes.set_ylabel("Predictions per hour")
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_title("Volume and traffic split")
    _time_axis(axes)
    _legend(axes, len(tracks))
    return to_svg(figure, "volume", "Predictions per window by model version and variant")


def latency_chart(table: MetricTable) -> str | None:
    p50, p99 = table.tracks("latency_p50_ms"), table.tracks("latency_p99_ms")
    if not p50 and not p99:
        return None
    figure, axes = _figure(TIME_HEIGHT)
    for key in table.series:
        label = _text(table.label(key))
        if key in p50:
            track = p50[key]
            axes.plot(track.middle, track.value, color=table.colours[key], label=f"{label} p50")
        if key in p99:
            track = p99[key]
            axes.plot(
                track.middle,
                track.value,
                color=table.colours[key],
                linestyle="--",
                label=f"{label} p99",
            )
    axes.set_ylim(bottom=0)
    axes.set_ylabel("Milliseconds")
    axes.set_title("Latency: median (solid) and 99th percentile (dashed)")
    _time_axis(axes)
    _legend(axes, len(p50) + len(p99))
    return to_svg(figure, "latency", "Latency percentiles per window")


def score_chart(table: MetricTable) -> str | None:
    p10, p50, p90 = (table.tracks(f"score_p{q}") for q in (10, 50, 90))
    mean = table.tracks("score_mean")
    if not (p50 or mean):
        return None
    figure, axes = _figure(TIME_HEIGHT)
    top = 0.0
    for key in table.series:
        colour, label = table.colours[key], _text(table.label(key))
        if key in p10 and key in p90:
            low, high = p10[key], p90[key]
            axes.fill_between(low.middle, low.value, high.value, color=colour, alpha=0.2)
            top = max(top, float(np.nanmax(high.value)))
        if key in p50:
            axes.plot(p50[key].middle, p50[key].value, color=colour, label=f"{label} median")
        if key in mean:
            track = mean[key]
            axes.plot(track.middle, track.value, color=colour, linestyle=":", label=f"{label} mean")
            top = max(top, float(np.nanmax(track.value)))
    axes.set_ylim(0, min(1.0, top * 1.1) if top > 0 else 1.0)
    axes.set_ylabel("Score")
    axes.set_title("Scores: median, mean (dotted), 10th-90th percentile band")
    _time_axis(axes)
    _legend(axes, len(p50) + len(mean))
    return to_svg(figure, "scores", "Score distribution per window")


def drift_metric(table: MetricTable, feature: str) -> str | None:
    """The number a feature's drift is drawn by: PSI for numeric features, else Jensen-Shannon."""
    for metric in ("psi", "jensen_shannon"):
        if any(table.values(metric, key, feature) for key in table.series):
            return metric
    return None


def drift_chart(table: MetricTable, key: SeriesKey, index: int) -> str | None:
    """A heatmap of each feature's drift per window of one series, coloured by :data:`BANDS`.

    Columns are the series' windows in order (gaps in time are not drawn), so count windows
    and time windows read the same; the axis labels say when they started.
    """
    rows: list[tuple[str, str, list[MetricValue]]] = []
    for feature in table.features():
        metric = drift_metric(table, feature)
        values = table.values(metric, key, feature) if metric else []
        if metric and values:
            rows.append((feature, metric, values))
    if not rows:
        return None
    starts = sorted({v.window.start for _, _, values in rows for v in values})
    column = {start: i for i, start in enumerate(starts)}
    levels = np.full((len(rows), len(starts)), np.nan)
    for row, (_, metric, values) in enumerate(rows):
        for value in values:
            level = severity(metric, value.value)
            if level is not None:
                levels[row, column[value.window.start]] = level
    height = 1.1 + 0.17 * len(rows)
    longest = max(len(feature) for feature, _, _ in rows)
    figure, axes = _figure(height, left=min(2.7, 0.25 + 0.062 * longest), bottom=0.45, top=0.3)
    colours = ListedColormap(SEVERITY_COLOURS).with_extremes(bad=NO_VALUE_COLOUR)
    axes.imshow(
        np.ma.masked_invalid(levels),
        aspect="auto",
        interpolation="nearest",
        cmap=colours,
        norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], colours.N),
    )
    axes.grid(False)
    axes.set_yticks(
        np.arange(len(rows)), labels=[_text(feature) for feature, _, _ in rows], fontsize="small"
    )
    daily = all(start.hour == start.minute == start.second == 0 for start in starts)
    shown = "%Y-%m-%d" if daily else "%m-%d %H:%M"

    def when(position: float, _: int) -> str:
        at = round(position)
        return starts[at].strftime(shown) if 0 <= at < len(starts) else ""

    axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(when))
    axes.tick_params(axis="x", labelsize="small")
    axes.set_title(f"Drift per feature and window: {_text(table.label(key))}", fontsize="medium")
    return to_svg(figure, f"drift-{index}", f"Drift per feature and window, {table.label(key)}")


def auc_chart(table: MetricTable, offline_auc: Mapping[str, float]) -> str | None:
    """Live AUC with its confidence interval per series, and each version's offline test AUC."""
    tracks = table.tracks("auc")
    if not tracks:
        return None
    figure, axes = _figure(TIME_HEIGHT)
    for key, track in tracks.items():
        colour = table.colours[key]
        axes.fill_between(track.middle, track.lower, track.upper, color=colour, alpha=0.2)
        axes.plot(
            track.middle,
            track.value,
            color=colour,
            marker=_marker(track),
            markersize=3,
            label=f"{_text(table.label(key))} live",
        )
    for version, auc in sorted(offline_auc.items(), key=lambda item: _version_order(item[0])):
        colour = next((table.colours[k] for k in table.series if k[1] == version), "grey")
        axes.axhline(
            auc,
            color=colour,
            linestyle="--",
            linewidth=1.2,
            label=f"v{_text(version)} offline test {auc:.3f}",
        )
    axes.set_ylabel("AUC")
    axes.set_title("Live AUC (band: confidence interval) vs offline test AUC")
    _time_axis(axes)
    _legend(axes, len(tracks) + len(offline_auc))
    return to_svg(figure, "auc", "Live AUC per window against the offline test AUC")


def estimate_chart(table: MetricTable) -> str | None:
    """The AUC estimated from scores before outcomes (band: its bounds) and the realised AUC."""
    estimated, realised = table.tracks("estimated_auc"), table.tracks("auc")
    if not estimated:
        return None
    figure, axes = _figure(TIME_HEIGHT)
    for key in table.series:
        colour, label = table.colours[key], _text(table.label(key))
        if key in estimated:
            track = estimated[key]
            axes.fill_between(track.middle, track.lower, track.upper, color=colour, alpha=0.15)
            axes.plot(
                track.middle, track.value, color=colour, linestyle="--", label=f"{label} estimated"
            )
        if key in realised:
            track = realised[key]
            axes.plot(
                track.middle,
                track.value,
                color=colour,
                marker=_marker(track),
                markersize=3,
                label=f"{label} realised",
            )
    axes.set_ylabel("AUC")
    axes.set_title("Estimated AUC (dashed, band: bounds) vs realised AUC")
    _time_axis(axes)
    _legend(axes, len(estimated) + len(realised))
    return to_svg(figure, "estimate", "Estimated AUC with bounds against the realised AUC")


def value_chart(table: MetricTable, currency: str = "") -> str | None:
    """Business value at the deployed threshold, summed over windows, per series.

    The band adds the windows' interval half-widths in quadrature: windows hold different
    predictions, so their errors are independent and their variances add.
    """
    tracks = table.tracks("value")
    if not tracks:
        return None
    figure, axes = _figure(TIME_HEIGHT)
    for key, track in tracks.items():
        colour = table.colours[key]
        total = np.cumsum(np.nan_to_num(track.value))
        half = np.nan_to_num((track.upper - track.lower) / 2)
        spread = np.sqrt(np.cumsum(half**2))
        axes.fill_between(track.end, total - spread, total + spread, color=colour, alpha=0.2)
        axes.plot(track.end, total, color=colour, label=_text(table.label(key)))
    axes.axhline(0, color="grey", linewidth=1)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_ylabel(f"Value{f' ({_text(currency)})' if currency else ''}")
    axes.set_title("Cumulative business value (band: confidence interval)")
    _time_axis(axes)
    _legend(axes, len(tracks))
    return to_svg(figure, "value", "Cumulative business value per model version and variant")


def readout_value_chart(
    variants: Sequence[tuple[str, float, float, float]], colours: Mapping[str, str], unit: str
) -> str | None:
    """Bars of each variant's value per 1,000 predictions with its interval (name, value, lo,
    hi), from the experiment readout."""
    if not variants:
        return None
    longest = max(len(v[0]) for v in variants)
    height = max(2.0, 0.9 + 0.45 * len(variants))
    figure, axes = _figure(height, left=min(2.7, 0.3 + 0.075 * longest), bottom=0.55)
    positions = np.arange(len(variants))[::-1]
    values = np.array([v[1] for v in variants])
    errors = np.array([[v[1] - v[2] for v in variants], [v[3] - v[1] for v in variants]])
    axes.barh(
        positions,
        values,
        xerr=np.clip(errors, 0, None),
        color=[colours.get(v[0], f"C{i}") for i, v in enumerate(variants)],
        capsize=4,
        alpha=0.85,
    )
    axes.set_yticks(positions, labels=[_text(v[0]) for v in variants])
    axes.axvline(0, color="grey", linewidth=1)
    axes.grid(False, axis="y")
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel(_text(unit))
    axes.set_title("Business value per 1,000 predictions, by variant")
    return to_svg(figure, "readout", "Business value per variant from the experiment readout")


def latest_start(values: Sequence[MetricValue]) -> datetime | None:
    """When the latest window with a value began."""
    return next((v.window.start for v in reversed(values) if v.value is not None), None)
