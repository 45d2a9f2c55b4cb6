"""Aggregates SQLite summarizes itself give what the rows give (mlprod/features/summaries.py).

Random histories are stored twice, in the SQLite store (which summarizes count, sum, mean,
std, min and max) and in the memory store (which always combines rows), written out of order
and partly twice; every feature is then computed at prediction times on and next to the rows'
times, so window edges fall exactly on rows. Values are integers (summarized), or carry
fractions, NaN, nulls and magnitudes past 2**53 (read row by row): both stores must agree,
exactly but for std (1e-12, far inside the parity check's 1e-9).

Summaries and rows answer the same reads only where the SQLite store is asked; the memory store
is checked against the brute-force reference by tests/test_point_in_time.py.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mlprod.data.online_store import (
    MemoryOnlineStore,
    OnlineRows,
    OnlineStore,
    Read,
    SqliteOnlineStore,
    Summarize,
    Summary,
    micros,
)
from mlprod.data.sources import connect
from mlprod.features.graph import FeatureGraph
from mlprod.features.ingest import declare, ingest_rows
from mlprod.features.online import OnlineFeatures
from mlprod.project.loading import parse_config

BASE = datetime(2024, 3, 1, 12, 0)
MINUTE = timedelta(minutes=1)
US = timedelta(microseconds=1)
ROWS = pa.schema(
    [("k", pa.string()), ("at", pa.timestamp("us")), ("v", pa.float64()), ("g", pa.int64())]
)
EVENTS = pa.schema(
    [("id", pa.int64()), ("k", pa.string()), ("ts", pa.timestamp("us")), ("y", pa.int64())]
)
TYPES = {pa.string(): "string", pa.timestamp("us"): "timestamp", pa.float64(): "float"}


def _columns(schema: pa.Schema) -> dict[str, dict[str, str]]:
    return {f.name: {"type": TYPES.get(f.type, "int")} for f in schema}


def _features() -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = []
    for value in ("v", "g"):
        for function in ("count", "count_distinct", "sum", "mean", "std", "min", "max"):
            for window in ("30m", "3h"):
                features.append(
                    {
                        "name": f"{function}_{value}_{window}",
                        "kind": "aggregate",
                        "source": "obs",
                        "keys": ["k"],
                        "function": function,
                        "value": value,
                        "window": window,
                    }
                )
    features += [
        {"name": "rows_2h", "kind": "aggregate", "source": "obs", "keys": ["k"],
         "function": "count", "window": "2h", "lag": "10m"},
        {"name": "big_sum_1h", "kind": "aggregate", "source": "obs", "keys": ["k"],
         "function": "sum", "value": "g", "filter": "v > 0", "window": "1h"},
        # read row by row: the 30m windows of the same key are then served by its rows
        {"name": "last_g_30m", "kind": "aggregate", "source": "obs", "keys": ["k"],
         "function": "last", "value": "g", "window": "30m"},
    ]  # fmt: skip
    return features


GRAPH = FeatureGraph.build(
    parse_config(
        {
            "name": "summaries",
            "sources": {
                "ev": {
                    "from": {"kind": "parquet", "path": "x.parquet"},
                    "columns": _columns(EVENTS),
                },
                "obs": {
                    "from": {"kind": "parquet", "path": "x.parquet"},
                    "columns": _columns(ROWS),
                    "time": "at",
                },
            },
            "spine": {
                "source": "ev",
                "keys": ["id"],
                "time": "ts",
                "label": "y",
                "label_available_at": "ts",
            },
            "features": _features(),
        }
    )
)

Values = Callable[[random.Random], tuple[float | None, int | None]]


def _integers(r: random.Random) -> tuple[float | None, int | None]:
    return float(r.randint(-60, 300)), r.randint(-5, 5)


def _with_nulls(r: random.Random) -> tuple[float | None, int | None]:
    v, g = _integers(r)
    return (None if r.random() < 0.3 else v), (None if r.random() < 0.3 else g)


def _fractions(r: random.Random) -> tuple[float | None, int | None]:
    return r.uniform(-1e6, 1e6) * r.choice([1.0, 1e-9, 1e12]), r.randint(-5, 5)


def _nan(r: random.Random) -> tuple[float | None, int | None]:
    v, g = _integers(r)
    return (math.nan if r.random() < 0.1 else v), g


def _huge(r: random.Random) -> tuple[float | None, int | None]:
    big = r.choice([2**26, 2**40, 2**53, 2**53 + 1, 2**62])
    return float(r.choice([-1, 1]) * r.randint(0, big)), r.choice([-1, 1]) * r.randint(0, big)


HISTORIES: dict[str, Values] = {
    "integers": _integers,
    "nulls": _with_nulls,
    "fractions": _fractions,
    "nan": _nan,
    "huge": _huge,
}


def _history(values: Values, seed: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    rows = []
    for _ in range(r.randint(0, 80)):
        v, g = values(r)
        at = BASE + r.randint(0, 240) * MINUTE + r.choice([timedelta(0), timedelta(0), US, -US])
        rows.append({"k": r.choice(["a", "b", "c"]), "at": at, "v": v, "g": g})
    return rows


def _fill(store: OnlineStore, batches: list[list[dict[str, Any]]]) -> OnlineFeatures:
    online = OnlineFeatures(GRAPH, store)
    con = connect()
    try:
        con.register("obs", pa.Table.from_pylist([], schema=ROWS))
        declare(con, GRAPH, online.plan.tables, store)
        for batch in batches:
            con.register("obs", pa.Table.from_pylist(batch, schema=ROWS))
            ingest_rows(con, GRAPH, online.plan.tables, store)
    finally:
        con.close()
    return online


def _requests(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[datetime]]:
    """Prediction times on, just after and just before the rows' times and window edges."""
    times = {BASE + 250 * MINUTE}
    for row in rows[:30]:
        for shift in (0, 30, 60, 120, 130, 180):
            times |= {row["at"] + shift * MINUTE + d for d in (timedelta(0), US, -US)}
    requests = [{"id": 0, "k": k, "ts": t, "y": 0} for t in sorted(times) for k in ("a", "b")]
    return requests, [request["ts"] for request in requests]


def _same(a: Any, b: Any, name: str) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if name.startswith("std_"):
            return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return type(a) is type(b) and a == b


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[], tuple[SqliteOnlineStore, MemoryOnlineStore]]]:
    opened: list[SqliteOnlineStore] = []

    def make() -> tuple[SqliteOnlineStore, MemoryOnlineStore]:
        store = SqliteOnlineStore(tmp_path / f"online{len(opened)}.sqlite")
        opened.append(store)
        return store, MemoryOnlineStore()

    yield make
    for store in opened:
        store.close()


def _compare(sqlite: OnlineFeatures, memory: OnlineFeatures, rows: list[dict[str, Any]]) -> None:
    requests, times = _requests(rows)
    got = sqlite.compute(requests, times)
    expected = memory.compute(requests, times)
    for request, a, b in zip(requests, got, expected, strict=True):
        for name in b:
            assert _same(a[name], b[name], name), (request, name, a[name], b[name])


@pytest.mark.parametrize("kind", list(HISTORIES))
@pytest.mark.parametrize("seed", range(4))
def test_summaries_give_what_rows_give(stores: Any, kind: str, seed: int) -> None:
    rows = _history(HISTORIES[kind], seed)
    r = random.Random(seed)
    later = r.sample(rows, len(rows) // 2)  # some rows first, then all of them again, shuffled
    shuffled = r.sample(rows, len(rows))
    sqlite_store, memory_store = stores()
    sqlite = _fill(sqlite_store, [later, shuffled])
    memory = _fill(memory_store, [later, shuffled])
    _compare(sqlite, memory, rows)


def test_a_fraction_written_later_is_summed_exactly(stores: Any) -> None:
    """A column stops being summed as floats once a fraction is written to it."""
    integers, fractions = _history(_integers, 7), _history(_fractions, 8)
    sqlite_store, memory_store = stores()
    sqlite = _fill(sqlite_store, [integers, fractions])
    memory = _fill(memory_store, [integers, fractions])
    _compare(sqlite, memory, integers + fractions)


def test_stores_made_before_whole_columns_were_kept_check_each_range(
    stores: Any, tmp_path: Path
) -> None:
    rows = _history(_with_nulls, 3) + _history(_nan, 4)
    sqlite_store, memory_store = stores()
    _fill(sqlite_store, [rows])
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("DELETE FROM mlprod_online_whole")
    sqlite = OnlineFeatures(GRAPH, SqliteOnlineStore(sqlite_store.path))
    memory = _fill(memory_store, [rows])
    _compare(sqlite, memory, rows)
    _fill(sqlite_store, [])  # declaring the tables again finds their whole columns
    with sqlite3.connect(sqlite_store.path) as conn:
        found = conn.execute("SELECT whole FROM mlprod_online_whole").fetchall()
    assert found == [("[false, true, true]",)]  # v (it has NaN), g, and g where v > 0
    _compare(OnlineFeatures(GRAPH, SqliteOnlineStore(sqlite_store.path)), memory, rows)


def test_what_is_summarized_and_what_is_read_row_by_row(stores: Any) -> None:
    sqlite_store, _ = stores()
    online = _fill(sqlite_store, [])
    table = online.plan.features["sum_v_3h"].table.id
    v = online.plan.features["sum_v_3h"].value
    at = micros(BASE)

    def summarize(value: Any) -> Summary | OnlineRows:
        key = f"{value!r}"
        row = {"k": key, "at": BASE, "v": 1.0, "g": 1}
        second = {"k": key, "at": BASE + MINUTE, "v": value, "g": 2}
        _fill(sqlite_store, [[row, second]])
        read = Read(table, (key,), until=at + 10**9, since=at)
        return sqlite_store.read_summarized([], [Summarize(read, (), (v,), (v,))])[1][0]

    summary = summarize(4.0)
    assert isinstance(summary, Summary)
    assert (summary.rows, summary.columns[v].total, summary.columns[v].squares) == (2, 5, 17)
    assert (summary.columns[v].minimum, summary.columns[v].maximum) == (1.0, 4.0)
    for value in (0.5, math.nan, 2.0**53):
        found = summarize(value)
        assert isinstance(found, OnlineRows), value
        assert len(found) == 2
