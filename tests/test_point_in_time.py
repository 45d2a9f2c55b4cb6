"""The point-in-time rule, checked against a brute-force reference (tests/reference.py).

A source row is visible to a prediction at ``t`` only if its availability time is strictly
before ``t``; aggregates see ``[t - lag - window, t - lag)``. Hypothesis generates small
tables at microsecond resolution whose times sit on and next to every cutoff (``t``,
``t - lag``, ``t - lag - window``, ``t - max_staleness``), with NULL keys, values and
availability times, ties and rows in any order; the compiled DuckDB query must give the
reference's matrix: the same rows in the same order, NULL where it has NULL, numbers equal
to 1e-9. Explicit tests pin the boundaries one microsecond at a time
(tests/test_point_in_time_boundaries.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pit_engine import (
    AS_OF,
    BASE,
    FUNCTIONS,
    LATE_BY,
    MINUTE,
    SPARK_FRAMES,
    US,
    Scenario,
    assert_matches_reference,
    shift,
)
from reference import RefAggregate, RefAsof, RefFeature, RefLookup, RowFn

# Each example compiles and runs a query (~0.1s), so shrinking a failure takes minutes: it is
# off unless MLPROD_PIT_SHRINK=1. A failure reports the event, the feature and the rows it could
# see; the example database replays it on the next run. MLPROD_PIT_EXAMPLES=2000 searches deeper.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("MLPROD_PIT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("MLPROD_PIT_SHRINK") == "1" else []),
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
                "at": shift(_draw_time(draw, anchor["ts"], windows), -LATE_BY),
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


# --- the same properties on Spark (local) and inside PostgreSQL ------------------------------
# Fewer examples: an example there is many queries of a second or so (Spark) or a tenth
# (PostgreSQL). MLPROD_PIT_ENGINE_EXAMPLES=200 searches deeper.
ENGINE_SETTINGS = settings(
    PROPERTY_SETTINGS, max_examples=int(os.environ.get("MLPROD_PIT_ENGINE_EXAMPLES", "8"))
)


@pytest.mark.spark
@ENGINE_SETTINGS
@given(scenarios(any_feature, max_features=8))
def test_spark_matches_reference(scenario: Scenario) -> None:
    assert_matches_reference(scenario, engines=("spark",))


@pytest.mark.spark
@ENGINE_SETTINGS
@given(scenarios(aggregate_features, max_features=6))
def test_spark_frames_match_reference(scenario: Scenario) -> None:
    """Sums, means and deviations over sliding frames (a key with few rows per window)."""
    assert_matches_reference(scenario, engines=(SPARK_FRAMES,))


@pytest.mark.postgres
@pytest.mark.parametrize(
    "kinds",
    [any_feature, aggregate_features, partial(asof_features, together=True)],
    ids=["any", "aggregates", "asof"],
)
@settings(ENGINE_SETTINGS, max_examples=ENGINE_SETTINGS.max_examples * 3)
@given(data=st.data())
def test_postgres_matches_reference(
    kinds: Callable[[str], st.SearchStrategy[tuple[dict[str, Any], RefFeature]]],
    data: st.DataObject,
) -> None:
    assert_matches_reference(data.draw(scenarios(kinds, max_features=7)), engines=("postgres",))
