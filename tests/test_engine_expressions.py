"""Row expressions mean the same on every engine: DuckDB's functions and operators, written
for Spark and PostgreSQL by mlprod/features/dialects.py, give DuckDB's values.

Each expression is an ``expr`` feature over a spine of awkward rows (zero, negative and NULL
integers, times on and around midnight and year ends), computed by DuckDB, by Spark (local)
and inside the real PostgreSQL; every value must equal DuckDB's.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest
from pit_engine import OTHER_ENGINES, engine_matrix

from mlprod.errors import FeatureError

EXPRESSIONS = {
    "dow": "dayofweek(ts)",
    "doy": "dayofyear(ts)",
    "date": "year(ts) * 10000 + month(ts) * 100 + day(ts)",
    "time": "hour(ts) * 100 + minute(ts)",
    "second": "second(ts)",
    "quarter": "quarter(ts)",
    "first_of_month": "make_date(year(ts), month(ts), 1)",
    "plus_minutes": "ts + to_minutes(k2)",
    "minus_hours": "ts - to_hours(2)",
    "plus_days": "ts + to_days(k2)",
    "plus_weeks": "ts + to_weeks(1)",
    "interval": "ts - INTERVAL 90 MINUTE",
    "epoch": "epoch_us(ts)",
    "divide": "id / k2",
    "by_zero": "k2 / 0",
    "integer_divide": "(id - 3) // 2",
    "modulo": "(id - 3) % 2",
    "case": "CASE WHEN k = 'a' THEN 1 WHEN k IS NULL THEN -1 ELSE 2 END",
    "coalesce": "coalesce(k2, 0) * 1.5",
    "round": "round(k2 * 1.5)",
    "round_double": "round(CAST(k2 AS DOUBLE) * 1.5)",
    "log": "ln(id + 1) + log10(id + 1) + sqrt(id) + power(id, 2)",
    "floor": "floor(CAST(k2 AS DOUBLE) / 2) + ceil(CAST(k2 AS DOUBLE) / 2)",
    "abs": "abs(k2)",
    "text": "upper(k) || '-' || length(k)",
    "compare": "k2 > 1 AND k <> 'b'",
    "cast": "CAST(k2 AS DOUBLE) / 4",
}
TIMES = [
    datetime(2024, 3, 1, 0, 0),
    datetime(2024, 3, 1, 23, 59, 59, 999_999),
    datetime(2023, 12, 31, 23, 30),
    datetime(2024, 2, 29, 12, 0, 30, 500_000),
    datetime(2024, 6, 2, 7, 5),  # a Sunday
    datetime(2021, 1, 3, 0, 0, 1),
]
K2 = [0, 1, -3, None, 5, 3]
KEYS = ["a", "b", None, "ab", "a", "c"]


def _events() -> list[dict[str, Any]]:
    return [
        {"id": i, "k": k, "k2": k2, "ts": ts, "y": 1, "ly": ts}
        for i, (ts, k2, k) in enumerate(zip(TIMES, K2, KEYS, strict=True))
    ]


def _matrix(engine: str) -> list[dict[str, Any]]:
    features = [{"name": name, "kind": "expr", "expr": e} for name, e in EXPRESSIONS.items()]
    as_of = datetime(2030, 1, 1)
    return engine_matrix(features, _events(), [], as_of=as_of, engine=engine)[1]


def _equal(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return (math.isnan(got) and math.isnan(want)) or got == want
    return bool(got == want) and type(got) is type(want)


@pytest.mark.parametrize("engine", OTHER_ENGINES)
def test_expressions_mean_what_duckdb_means(engine: str) -> None:
    want = _matrix("batch")
    got = _matrix(engine)
    problems = [
        f"{name} = {EXPRESSIONS[name]} at id={w['id']}: {g[name]!r}, DuckDB {w[name]!r}"
        for g, w in zip(got, want, strict=True)
        for name in EXPRESSIONS
        if not _equal(g[name], w[name])
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("engine", OTHER_ENGINES)
def test_a_function_without_translation_is_refused(engine: str) -> None:
    features = [{"name": "similar", "kind": "expr", "expr": "jaro_similarity(k, 'a')"}]
    with pytest.raises(
        FeatureError, match=rf"jaro_similarity\(\) has no translation for the {engine} engine"
    ):
        engine_matrix(features, _events(), [], engine=engine)


@pytest.mark.parametrize(
    ("engine", "said"),
    [
        ("spark", r"on Spark failed: \[CAST_INVALID_INPUT\] The value '[abc]+' "),
        ("postgres", 'in PostgreSQL failed: invalid input syntax for type bigint: "[abc]+"'),
    ],
)
def test_a_value_that_fails_is_one_clear_error(engine: str, said: str) -> None:
    """A cast of a bad value fails where it runs, said in one line, not a JVM traceback."""
    features = [{"name": "number", "kind": "expr", "expr": "CAST(k AS BIGINT)"}]
    with pytest.raises(FeatureError, match=rf"computing the features {said}") as caught:
        engine_matrix(features, _events(), [], engine=engine)
    assert "\n" not in str(caught.value)
