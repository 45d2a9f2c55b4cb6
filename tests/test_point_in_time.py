"""The point-in-time rule, checked against a brute-force reference (tests/reference.py).

A source row is visible to a prediction at ``t`` only if its availability time is strictly
before ``t``; aggregates see ``[t - lag - window, t - lag)``. Hypothesis generates small
tables at microsecond resolution whose times sit on and next to every cutoff (``t``,
``t - lag``, ``t - lag - window``, ``t - max_staleness``), with NULL keys, values and
availability times, ties and rows in any order; the compiled DuckDB query must give the
reference's matrix: the same rows in the same order, NULL where it has NULL, numbers equal
to 1e-9. Explicit tests pin the boundaries one microsecond at a time.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reference import (
    RefAggregate,
    RefAsof,
    RefFeature,
    RefLookup,
    RefSource,
    RefSpine,
    Row,
    RowFn,
    keys_match,
    training_matrix,
)

from mlprod.data.sources import connect
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.graph import FeatureGraph
from mlprod.features.matrix import run_staged
from mlprod.project.loading import parse_config

US = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)
BASE = datetime(2024, 3, 1, 12, 0)
AS_OF = datetime(2030, 1, 1)
FUNCTIONS = ("count", "sum", "mean", "min", "max", "std", "count_distinct", "last")
# Each example compiles and runs a query (~0.1s), so shrinking a failure takes minutes: it is
# off unless MLPROD_PIT_SHRINK=1. A failure reports the event, the feature and the rows it could
# see; the example database replays it on the next run.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("MLPROD_PIT_SHRINK") == "1" else []),
)

# --- the tables ------------------------------------------------------------------------------

SPINE_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("k", pa.string()),
        ("k2", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("y", pa.int64()),
        ("ly", pa.timestamp("us")),
    ]
)
ROWS_SCHEMA = pa.schema(
    [
        ("k", pa.string()),
        ("k2", pa.int64()),
        ("at", pa.timestamp("us")),
        ("av", pa.timestamp("us")),
        ("v", pa.float64()),
        ("g", pa.int64()),
    ]
)
DIM_SCHEMA = pa.schema([("dk", pa.string()), ("name", pa.string())])
_CONTRACT_TYPES = {
    pa.int64(): "int",
    pa.string(): "string",
    pa.float64(): "float",
    pa.timestamp("us"): "timestamp",
}


def _columns(schema: pa.Schema) -> dict[str, dict[str, str]]:
    return {field.name: {"type": _CONTRACT_TYPES[field.type]} for field in schema}


def _shift(time: datetime | None, offset: timedelta) -> datetime | None:
    return None if time is None else time + offset


# The same rows are registered under three names, each declaring availability differently.
TIMED_SOURCES: dict[str, tuple[dict[str, str], RowFn]] = {
    "src": ({"time": "at", "available_at": "av"}, lambda r: r["av"]),
    "obs": ({"time": "av"}, lambda r: r["av"]),  # available_at defaults to time
    "late": (
        {"time": "at", "available_at": "at + INTERVAL 10 MINUTE"},
        lambda r: _shift(r["at"], 10 * MINUTE),
    ),
}
LATE_BY = 10 * MINUTE


def _sources_config() -> dict[str, Any]:
    location = {"kind": "parquet", "path": "unused.parquet"}
    sources: dict[str, Any] = {
        "ev": {"from": location, "columns": _columns(SPINE_SCHEMA)},
        "dim": {"from": location, "columns": _columns(DIM_SCHEMA)},
    }
    for name, (times, _) in TIMED_SOURCES.items():
        sources[name] = {"from": location, "columns": _columns(ROWS_SCHEMA), **times}
    return sources


SPINE_CONFIG = {
    "source": "ev",
    "keys": ["id"],
    "time": "ts",
    "label": "y",
    "label_available_at": "ly",
}


def reference_spine(events: Sequence[Row]) -> RefSpine:
    """SPINE_CONFIG for the reference."""
    return RefSpine(
        events,
        keys=("id",),
        time=lambda r: r["ts"],
        label=lambda r: r["y"],
        label_available_at=lambda r: r["ly"],
    )


# --- expressions, in SQL and in Python (three-valued logic) ------------------------------------


def _add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def _gt(a: Any, b: Any) -> bool | None:
    return None if a is None or b is None else a > b


def _ne(a: Any, b: Any) -> bool | None:
    return None if a is None or b is None else a != b


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


VALUES: dict[str, RowFn] = {
    "v": lambda r: r["v"],
    "g": lambda r: r["g"],
    "v + g": lambda r: _add(r["v"], r["g"]),
}
FILTERS: dict[str, RowFn] = {
    "g > 1": lambda r: _gt(r["g"], 1),
    "g <> 2": lambda r: _ne(r["g"], 2),
    "v IS NOT NULL": lambda r: r["v"] is not None,
    "g IS NULL OR v > 0": lambda r: _or(r["g"] is None, _gt(r["v"], 0)),
}
KEY_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "k": (("k", "k"),),
    "k,k2": (("k", "k"), ("k2", "k2")),
}

# --- running the engine and the reference ------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    features: list[tuple[dict[str, Any], RefFeature]]
    events: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    dim: list[dict[str, Any]]
    as_of: datetime

    def describe(self) -> str:
        lines = ["features:"]
        lines += [f"  {config}" for config, _ in self.features]
        lines.append(f"as_of: {self.as_of}")
        lines.append("events:")
        lines += [f"  {event}" for event in self.events]
        lines.append("rows:")
        lines += [f"  {row}" for row in self.rows]
        lines.append(f"dim: {self.dim}")
        return "\n".join(lines)

    def explain(self, event_id: int, name: str) -> str:
        """The failing event, feature and the rows it could see (same key), by availability."""
        event = next(e for e in self.events if e["id"] == event_id)
        lines = [f"event: {event}", f"as_of: {self.as_of}", "features:"]
        lines += [f"  {config}" for config, _ in self.features]
        feature = next(ref for config, ref in self.features if config["name"] == name)
        if isinstance(feature, RefLookup):
            return "\n".join([*lines, f"dim: {self.dim}"])
        available_at = TIMED_SOURCES[feature.source][1]
        matching = [row for row in self.rows if keys_match(event, row, feature.keys)]
        matching.sort(key=lambda row: (available_at(row) is None, available_at(row) or BASE))
        lines.append(f"rows with the event's key ({len(self.rows)} rows in all):")
        lines += [f"  available_at={available_at(row)}  {row}" for row in matching]
        return "\n".join(lines)


def engine_matrix(
    features: Sequence[dict[str, Any]],
    events: Sequence[Row],
    rows: Sequence[Row],
    dim: Sequence[Row] = (),
    as_of: datetime = AS_OF,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Compile the features and run the query on in-memory tables: (columns, rows)."""
    config = parse_config(
        {
            "name": "pit",
            "sources": _sources_config(),
            "spine": SPINE_CONFIG,
            "features": list(features),
        }
    )
    # Run in stages, as a build does (the single query of ``features sql`` is the same SQL).
    query = MatrixCompiler(FeatureGraph.build(config)).staged_query(as_of)
    con = connect()
    try:
        con.register("ev", pa.Table.from_pylist(list(events), schema=SPINE_SCHEMA))
        con.register("dim", pa.Table.from_pylist(list(dim), schema=DIM_SCHEMA))
        table = pa.Table.from_pylist(list(rows), schema=ROWS_SCHEMA)
        for name in TIMED_SOURCES:
            con.register(name, table)
        matrix = run_staged(con, query)
    finally:
        con.close()
    return matrix.column_names, matrix.to_pylist()


def reference_matrix(scenario: Scenario) -> list[dict[str, Any]]:
    sources = {
        name: RefSource(scenario.rows, available_at)
        for name, (_, available_at) in TIMED_SOURCES.items()
    }
    sources["dim"] = RefSource(scenario.dim)
    spine = reference_spine(scenario.events)
    return training_matrix(spine, sources, [f for _, f in scenario.features], scenario.as_of)


def same(engine: Any, expected: Any) -> bool:
    """NULL only equals NULL; numbers equal within 1e-9 (relative or absolute)."""
    if engine is None or expected is None:
        return engine is None and expected is None
    if isinstance(engine, float) or isinstance(expected, float):
        return math.isclose(engine, expected, rel_tol=1e-9, abs_tol=1e-9)
    return bool(engine == expected)


def assert_matches_reference(scenario: Scenario) -> None:
    columns, got = engine_matrix(
        [config for config, _ in scenario.features],
        scenario.events,
        scenario.rows,
        scenario.dim,
        scenario.as_of,
    )
    names = [config["name"] for config, _ in scenario.features]
    assert columns == ["id", "prediction_time", "label", "label_available_at", *names]
    expected = reference_matrix(scenario)
    assert [(r["id"], r["prediction_time"]) for r in got] == [
        (r["id"], r["prediction_time"]) for r in expected
    ], f"rows or their order differ\n{scenario.describe()}"
    for got_row, want_row in zip(got, expected, strict=True):
        for column in columns:
            assert same(got_row[column], want_row[column]), (
                f"event id={want_row['id']} t={want_row['prediction_time']}: column {column} is "
                f"{got_row[column]!r}, the reference says {want_row[column]!r}\n"
                f"{scenario.explain(want_row['id'], column)}"
            )
    for config, _ in scenario.features:
        if config.get("function") in {"count", "count_distinct"}:
            assert all(type(r[config["name"]]) is int for r in got)
        if config.get("function") in {"sum", "mean", "std"}:
            assert all(r[config["name"]] is None or type(r[config["name"]]) is float for r in got)
        if config.get("function") == "sum":
            assert all(r[config["name"]] is not None for r in got)


# --- strategies --------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "a", "a", "b", None])
KEYS2 = st.sampled_from([1, 1, 2, None])
KEY_NAMES = st.sampled_from(["k", "k", "k,k2"])
WINDOWS = st.sampled_from(
    [US, 2 * US, MINUTE, 10 * MINUTE, 30 * MINUTE, 60 * MINUTE, 7 * MINUTE + 3 * US]
)
LAGS = st.sampled_from([timedelta(0), timedelta(0), US, 5 * MINUTE, 30 * MINUTE])
STALENESS = st.sampled_from([None, None, US, 10 * MINUTE, 45 * MINUTE])
# Exactly representable values: sums are exact, so a difference is a time-rule difference.
NUMBERS = st.sampled_from([-2.5, -1.0, 0.0, 0.25, 1.0, 1.5, 3.0, 10.0, None])
INTS = st.sampled_from([0, 1, 2, 3, 4, None])
# Mostly one source, so that features share (and must not disturb) each other's joins.
SOURCE_NAMES = st.sampled_from(["src", "src", "src", "obs", "late"])
SPINE_MINUTES = st.sampled_from([0, 30, 60, 60, 90, 120, 135])


def rarely_null(value: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([value] * 9 + [None])


def _keys_config(
    draw: st.DrawFn, key_names: st.SearchStrategy[str] = KEY_NAMES
) -> tuple[Any, tuple[tuple[str, str], ...]]:
    which = draw(key_names)
    pairs = KEY_PAIRS[which]
    names = [spine for spine, _ in pairs]
    form = draw(st.sampled_from(["list", "dict"]))
    return (names if form == "list" else dict(pairs)), pairs


@st.composite
def aggregate_features(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], RefFeature]:
    function = draw(st.sampled_from(FUNCTIONS))
    source = draw(SOURCE_NAMES)
    keys, pairs = _keys_config(draw)
    value = draw(
        st.sampled_from([None, *VALUES]) if function == "count" else st.sampled_from(list(VALUES))
    )
    window, lag = draw(WINDOWS), draw(LAGS)
    filter_ = draw(st.sampled_from([None, None, *FILTERS]))
    config: dict[str, Any] = {
        "name": name,
        "kind": "aggregate",
        "source": source,
        "keys": keys,
        "function": function,
        "window": window,
        "lag": lag,
    }
    if value is not None:
        config["value"] = value
    if filter_ is not None:
        config["filter"] = filter_
    ref = RefAggregate(
        name,
        source,
        pairs,
        function,
        VALUES[value] if value is not None else None,
        window,
        lag,
        FILTERS[filter_] if filter_ is not None else None,
    )
    return config, ref


@st.composite
def asof_features(
    draw: st.DrawFn, name: str, together: bool = False
) -> tuple[dict[str, Any], RefFeature]:
    """An asof feature; ``together``: all of a scenario's share one source and keys."""
    if together:
        source = draw(st.shared(SOURCE_NAMES, key="asof source"))
        keys, pairs = _keys_config(draw, st.shared(KEY_NAMES, key="asof keys"))
    else:
        source = draw(SOURCE_NAMES)
        keys, pairs = _keys_config(draw)
    value = draw(st.sampled_from(list(VALUES)))
    staleness = draw(STALENESS)
    config: dict[str, Any] = {
        "name": name,
        "kind": "asof",
        "source": source,
        "keys": keys,
        "value": value,
    }
    if staleness is not None:
        config["max_staleness"] = staleness
    return config, RefAsof(name, source, pairs, VALUES[value], staleness)


def lookup_feature(name: str) -> tuple[dict[str, Any], RefFeature]:
    config = {"name": name, "kind": "lookup", "source": "dim", "keys": {"k": "dk"}, "value": "name"}
    return config, RefLookup(name, "dim", (("k", "dk"),), lambda r: r["name"])


def _windows(features: Sequence[RefFeature]) -> list[tuple[timedelta, timedelta]]:
    """(start, end) offsets before t of what each feature sees: [t - start, t - end)."""
    windows = [(30 * MINUTE, timedelta(0))]
    for feature in features:
        if isinstance(feature, RefAggregate):
            windows.append((feature.lag + feature.window, feature.lag))
        elif isinstance(feature, RefAsof) and feature.max_staleness is not None:
            windows.append((feature.max_staleness, timedelta(0)))
    return windows


ANYWHERE = st.integers(-5 * 3600 * 10**6, 5 * 3600 * 10**6)
TIME_KINDS = st.sampled_from(["cutoff"] * 3 + ["inside"] * 4 + ["anywhere", "null"])
NUDGES = st.sampled_from([0 * US, 0 * US, US, -US])


def _draw_time(
    draw: st.DrawFn, t: datetime | None, windows: list[tuple[timedelta, timedelta]]
) -> datetime | None:
    """A time on or next to a cutoff of ``t``, inside one of its windows, anywhere, or NULL."""
    kind = draw(TIME_KINDS)
    if kind == "null":
        return None
    if kind == "anywhere" or t is None:
        return BASE + draw(ANYWHERE) * US
    start, end = draw(st.sampled_from(windows))
    if kind == "cutoff":
        return t - draw(st.sampled_from([start, end])) + draw(NUDGES)
    return t - draw(st.integers(end // US, start // US)) * US


@st.composite
def source_rows(
    draw: st.DrawFn, events: list[dict[str, Any]], windows: list[tuple[timedelta, timedelta]]
) -> list[dict[str, Any]]:
    """Rows mostly around some event: its key, times on and inside its windows."""
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        anchor = draw(st.sampled_from(events))
        same_key = draw(st.sampled_from([True, True, False]))
        rows.append(
            {
                "k": anchor["k"] if same_key else draw(KEYS),
                "k2": anchor["k2"] if same_key else draw(KEYS2),
                "av": _draw_time(draw, anchor["ts"], windows),
                # "late" is available at `at + 10 minutes`: shifted to land on the cutoffs too.
                "at": _shift(_draw_time(draw, anchor["ts"], windows), -LATE_BY),
                "v": draw(NUMBERS),
                "g": draw(INTS),
            }
        )
    # Twins: same key and availability, other values, to tie on (key, available_at).
    for row in list(rows):
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            rows.append({**row, "v": draw(NUMBERS), "g": draw(INTS)})
    return list(draw(st.permutations(rows)))


@st.composite
def scenarios(
    draw: st.DrawFn,
    feature_kinds: Callable[[str], st.SearchStrategy[tuple[dict[str, Any], RefFeature]]],
    max_features: int = 6,
) -> Scenario:
    count = draw(st.integers(1, max_features))
    features = [draw(feature_kinds(f"f{i}")) for i in range(count)]
    if draw(st.booleans()):
        features.append(lookup_feature(f"f{count}"))

    n_events = draw(st.integers(1, 8))
    events: list[dict[str, Any]] = []
    for i in draw(st.permutations(range(n_events))):
        t = BASE + draw(SPINE_MINUTES) * MINUTE + draw(st.sampled_from([timedelta(0), US, -US]))
        label_at = draw(st.sampled_from([timedelta(0), 30 * MINUTE, 3 * 60 * MINUTE]))
        events.append(
            {
                "id": i,
                "k": draw(KEYS),
                "k2": draw(KEYS2),
                "ts": draw(rarely_null(t)),
                "y": draw(rarely_null(i % 2)),
                "ly": draw(rarely_null(t + label_at)),
            }
        )
    as_of = draw(st.sampled_from([AS_OF, AS_OF, BASE + 2 * 60 * MINUTE, BASE + 210 * MINUTE]))
    rows = draw(source_rows(events, _windows([f for _, f in features])))
    dim_keys = draw(st.lists(st.sampled_from(["a", "b", "c", None]), unique=True, max_size=4))
    dim = [{"dk": key, "name": f"name-{key}"} for key in dim_keys]
    return Scenario(features, events, rows, dim, as_of)


def any_feature(name: str) -> st.SearchStrategy[tuple[dict[str, Any], RefFeature]]:
    return st.one_of(aggregate_features(name), aggregate_features(name), asof_features(name))


# --- properties --------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(scenarios(any_feature))
def test_training_matrix_matches_reference(scenario: Scenario) -> None:
    assert_matches_reference(scenario)


@PROPERTY_SETTINGS
@given(scenarios(aggregate_features, max_features=7))
def test_aggregates_match_reference(scenario: Scenario) -> None:
    assert_matches_reference(scenario)


@PROPERTY_SETTINGS
@given(scenarios(partial(asof_features, together=True), max_features=4))
def test_asof_features_match_reference(scenario: Scenario) -> None:
    assert_matches_reference(scenario)


# --- explicit boundaries -----------------------------------------------------------------------

T = BASE + 3 * 60 * MINUTE


def _event(t: datetime = T, key: str | None = "a") -> dict[str, Any]:
    return {"id": 1, "k": key, "k2": 1, "ts": t, "y": 1, "ly": t}


def _row(available_at: datetime, v: float, key: str | None = "a") -> dict[str, Any]:
    return {"k": key, "k2": 1, "at": available_at, "av": available_at, "v": v, "g": 1}


def _aggregate(name: str, function: str, window: str, lag: str = "0s") -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "kind": "aggregate",
        "source": "src",
        "keys": ["k"],
        "function": function,
        "window": window,
        "lag": lag,
    }
    if function != "count":
        config["value"] = "v"
    return config


def _only_row(features: Sequence[dict[str, Any]], rows: Sequence[Row]) -> dict[str, Any]:
    _, result = engine_matrix(features, [_event()], rows)
    assert len(result) == 1
    return result[0]


ALL_FUNCTIONS = [_aggregate(f"x_{f}", f, "30min", "10min") for f in FUNCTIONS]


def _expected(values: list[float]) -> dict[str, Any]:
    """Every function over these window values (in order of availability)."""
    return {
        "x_count": len(values),
        "x_sum": math.fsum(values),
        "x_mean": math.fsum(values) / len(values) if values else None,
        "x_min": min(values, default=None),
        "x_max": max(values, default=None),
        "x_std": statistics.stdev(values) if len(values) >= 2 else None,
        "x_count_distinct": len(set(values)),
        "x_last": values[-1] if values else None,
    }


def _assert_features(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert same(row[name], value), f"{name}: got {row[name]!r}, expected {value!r}"


def test_availability_at_the_cutoff_is_not_visible_to_an_aggregate() -> None:
    """A row available 1us before t is counted; the same row available at t is not."""
    features = [_aggregate("n", "count", "1h"), _aggregate("m", "mean", "1h")]
    older = _row(T - 30 * MINUTE, 1.0)
    before = _only_row(features, [older, _row(T - US, 5.0)])
    at_cutoff = _only_row(features, [older, _row(T, 5.0)])
    assert (before["n"], at_cutoff["n"]) == (2, 1)
    assert before["m"] == pytest.approx(3.0)
    assert at_cutoff["m"] == pytest.approx(1.0)


def test_availability_at_the_cutoff_is_not_visible_to_an_asof() -> None:
    """A row available 1us before t is the latest; the same row available at t is not."""
    features = [{"name": "latest", "kind": "asof", "source": "src", "keys": ["k"], "value": "v"}]
    older = _row(T - 30 * MINUTE, 1.0)
    assert _only_row(features, [older, _row(T - US, 5.0)])["latest"] == 5.0
    assert _only_row(features, [older, _row(T, 5.0)])["latest"] == 1.0
    assert _only_row(features, [_row(T, 5.0)])["latest"] is None


def test_availability_at_the_cutoff_with_an_expression() -> None:
    """The cutoff applies to the declared availability expression, not to the event time."""
    features = [
        {**_aggregate("n", "count", "1h"), "source": "late"},
        {"name": "latest", "kind": "asof", "source": "late", "keys": ["k"], "value": "v"},
    ]
    older = _row(T - 30 * MINUTE, 1.0)
    # `late` rows are available 10 minutes after `at`.
    seen = {**_row(T - US, 5.0), "at": T - LATE_BY - US}
    unseen = {**_row(T - US, 5.0), "at": T - LATE_BY}
    got_seen, got_unseen = _only_row(features, [older, seen]), _only_row(features, [older, unseen])
    assert (got_seen["n"], got_unseen["n"]) == (2, 1)
    assert (got_seen["latest"], got_unseen["latest"]) == (5.0, 1.0)


def test_lag_shifts_the_window_end() -> None:
    """With lag 10min, a row at t - lag - 1us is in the window and a row at t - lag is not."""
    base = _row(T - 10 * MINUTE - 20 * MINUTE, 1.0)
    inside = _only_row(ALL_FUNCTIONS, [base, _row(T - 10 * MINUTE - US, 10.0)])
    _assert_features(inside, _expected([1.0, 10.0]))
    outside = _only_row(ALL_FUNCTIONS, [base, _row(T - 10 * MINUTE, 10.0)])
    _assert_features(outside, _expected([1.0]))
    # Between t - lag and t nothing is seen either.
    later = _only_row(ALL_FUNCTIONS, [base, _row(T - US, 10.0), _row(T - 5 * MINUTE, 7.0)])
    _assert_features(later, _expected([1.0]))


@pytest.mark.parametrize("lag", ["0s", "10min"])
def test_window_start_is_inclusive(lag: str) -> None:
    """A row at exactly t - lag - window is in; one microsecond earlier is out."""
    features = [_aggregate(f"x_{f}", f, "30min", lag) for f in FUNCTIONS]
    start = T - (10 * MINUTE if lag == "10min" else timedelta(0)) - 30 * MINUTE
    # Alone in the window: every function sees exactly that row, or nothing.
    _assert_features(_only_row(features, [_row(start, 10.0)]), _expected([10.0]))
    _assert_features(_only_row(features, [_row(start - US, 10.0)]), _expected([]))
    # With a later row in the window.
    middle = _row(start + 15 * MINUTE, 1.0)
    _assert_features(_only_row(features, [middle, _row(start, 10.0)]), _expected([10.0, 1.0]))
    _assert_features(_only_row(features, [middle, _row(start - US, 10.0)]), _expected([1.0]))


def test_max_staleness_boundary_is_inclusive() -> None:
    """asof with max_staleness S: a row available at t - S is fresh, at t - S - 1us stale."""
    feature = {
        "name": "latest",
        "kind": "asof",
        "source": "src",
        "keys": ["k"],
        "value": "v",
        "max_staleness": "45min",
    }
    assert _only_row([feature], [_row(T - 45 * MINUTE, 2.0)])["latest"] == 2.0
    assert _only_row([feature], [_row(T - 45 * MINUTE - US, 2.0)])["latest"] is None


def test_rows_that_are_never_visible() -> None:
    """NULL availability, a NULL key on either side: never seen, whatever the window."""
    features = [
        _aggregate("n", "count", "1h"),
        _aggregate("mx", "max", "1h"),
        _aggregate("lst", "last", "1h"),
        {"name": "latest", "kind": "asof", "source": "src", "keys": ["k"], "value": "v"},
    ]
    no_time = {**_row(T - MINUTE, 1.0), "av": None}
    no_key = _row(T - MINUTE, 2.0, key=None)
    empty = {"n": 0, "mx": None, "lst": None, "latest": None}
    _assert_features(_only_row(features, [no_time, no_key]), empty)
    _, result = engine_matrix(features, [_event(key=None)], [no_time, no_key])
    _assert_features(result[0], empty)


def test_training_rows_need_a_known_label_and_a_time() -> None:
    """Kept: label not NULL, time not NULL, label_available_at < as_of (strictly)."""
    as_of = T + 60 * MINUTE
    events = [
        {**_event(), "id": 1, "ly": as_of - US},  # kept
        {**_event(), "id": 2, "ly": as_of},  # label known only at as_of: left out
        {**_event(), "id": 3, "ly": None},
        {**_event(), "id": 4, "y": None},
        {**_event(), "id": 5, "ts": None},
        {**_event(T - MINUTE), "id": 6, "y": 0},  # kept, and earlier: first
    ]
    _, result = engine_matrix([_aggregate("n", "count", "1h")], events, [], as_of=as_of)
    assert [(r["id"], r["prediction_time"], r["label"]) for r in result] == [
        (6, T - MINUTE, 0),
        (1, T, 1),
    ]


def test_asof_ties_resolve_per_feature() -> None:
    """Rows tied on (key, available_at): each asof feature takes its own largest value.

    Defining a second asof feature over the same source must not change the first one.
    """
    value = {"name": "by_v", "kind": "asof", "source": "src", "keys": ["k"], "value": "v"}
    other = {"name": "by_g", "kind": "asof", "source": "src", "keys": ["k"], "value": "g"}
    tied = [{**_row(T - MINUTE, 5.0), "g": 1}, {**_row(T - MINUTE, 1.0), "g": 3}]
    assert _only_row([other], tied)["by_g"] == 3
    both = _only_row([value, other], tied)
    assert (both["by_v"], both["by_g"]) == (5.0, 3)


@pytest.mark.parametrize(
    "values",
    [
        # A large value before the window must not leak into the window's totals.
        pytest.param(
            [(5 * 60 * MINUTE, 1e16), (20 * MINUTE, 1.0), (10 * MINUTE, 2.0)],
            id="old-large-row-outside-the-window",
        ),
        # Epoch-like values (exact inputs) with a spread of tens.
        pytest.param(
            [(30 * MINUTE, 1.7e9), (20 * MINUTE, 1.7e9 + 12), (10 * MINUTE, 1.7e9 + 30)],
            id="large-values-small-spread",
        ),
    ],
)
def test_window_totals_are_exact(values: list[tuple[timedelta, float]]) -> None:
    """sum, mean and std of a window depend only on the window's rows, to 1e-9."""
    features = [
        _aggregate("s", "sum", "1h"),
        _aggregate("m", "mean", "1h"),
        _aggregate("sd", "std", "1h"),
    ]
    row = _only_row(features, [_row(T - before, v) for before, v in values])
    inside = [v for before, v in values if before <= 60 * MINUTE]
    expected = {
        "s": math.fsum(inside),
        "m": statistics.fmean(inside),
        "sd": statistics.stdev(inside),
    }
    _assert_features(row, expected)
