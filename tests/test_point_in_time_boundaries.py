"""The point-in-time rule at its boundaries, one microsecond at a time.

Each test builds one prediction event and a few source rows placed on and next to a cutoff,
and checks the feature values by hand, for both engines: the batch query and the online
evaluator (tests/pit_engine.py runs them).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pit_engine
import pytest
from pit_engine import (
    BASE,
    ENGINES,
    FUNCTIONS,
    LATE_BY,
    MINUTE,
    OTHER_ENGINES,
    SPARK_FRAMES,
    US,
    same,
)
from reference import Row

_engine = {"name": "batch"}


@pytest.fixture(autouse=True, params=[*ENGINES, *OTHER_ENGINES, SPARK_FRAMES])
def engine(request: pytest.FixtureRequest) -> str:
    """Every test here runs once per engine: DuckDB in batch, online, Spark, PostgreSQL."""
    _engine["name"] = request.param
    return str(request.param)


def engine_matrix(*args: Any, **kwargs: Any) -> tuple[list[str], list[dict[str, Any]]]:
    return pit_engine.engine_matrix(*args, engine=_engine["name"], **kwargs)


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


def test_a_window_across_the_epoch() -> None:
    """Times before 1970 are as good as any: a window from 23:40 on 1969-12-31 to 00:10 sees
    a row on each side of midnight once (windowed sums are kept in blocks numbered from the
    epoch, rounded down)."""
    t = datetime(1970, 1, 1, 0, 10)
    features = [_aggregate(f"x_{f}", f, "30min") for f in FUNCTIONS]
    rows = [_row(t - 25 * MINUTE, 10.0), _row(t - 5 * MINUTE, 1.0), _row(t - 31 * MINUTE, 7.0)]
    _, result = engine_matrix(features, [_event(t)], rows)
    _assert_features(result[0], _expected([10.0, 1.0]))


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
