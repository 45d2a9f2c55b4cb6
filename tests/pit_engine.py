"""The engine and the brute-force reference, run side by side on the same small tables.

Shared by the property tests (tests/test_point_in_time.py) and the explicit boundary tests
(tests/test_point_in_time_boundaries.py): the table schemas, the sources declaring
availability three ways, compiling and running the features as a build does, and comparing
with tests/reference.py.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from reference import (
    RefFeature,
    RefLookup,
    RefSource,
    RefSpine,
    Row,
    RowFn,
    keys_match,
    training_matrix,
)

from mlprod import sqlparts as sql
from mlprod.data.online_store import MemoryOnlineStore
from mlprod.data.sources import connect
from mlprod.features.compiler import MatrixCompiler, StagedQuery
from mlprod.features.graph import FeatureGraph
from mlprod.features.ingest import declare, ingest_rows
from mlprod.features.matrix import run_staged
from mlprod.features.online import OnlineFeatures
from mlprod.features.pushdown import run_stages as postgres_stages
from mlprod.features.spark import read_matrix
from mlprod.features.spark import run_stages as spark_stages
from mlprod.features.spark import session as spark_session
from mlprod.project.engine import EngineConfig
from mlprod.project.loading import parse_config

POSTGRES_URL = os.environ.get(
    "MLPROD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Tiny tables: one shuffle partition, no adaptive re-planning and no generated code (whose
# compilation costs more than these queries) keep a build to seconds instead of tens.
SPARK_ENGINE = EngineConfig(
    kind="spark",
    master="local[2]",
    conf={
        "spark.sql.shuffle.partitions": "1",
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    },
)
US = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)
BASE = datetime(2024, 3, 1, 12, 0)
AS_OF = datetime(2030, 1, 1)
FUNCTIONS = ("count", "sum", "mean", "min", "max", "std", "count_distinct", "last")

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


def shift(time: datetime | None, offset: timedelta) -> datetime | None:
    return None if time is None else time + offset


# The same rows are registered under three names, each declaring availability differently.
TIMED_SOURCES: dict[str, tuple[dict[str, str], RowFn]] = {
    "src": ({"time": "at", "available_at": "av"}, lambda r: r["av"]),
    "obs": ({"time": "av"}, lambda r: r["av"]),  # available_at defaults to time
    "late": (
        {"time": "at", "available_at": "at + INTERVAL 10 MINUTE"},
        lambda r: shift(r["at"], 10 * MINUTE),
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


ENGINES = ("batch", "online")
# The same plan on the other engines: Spark in local mode and inside the real PostgreSQL.
OTHER_ENGINES = ("spark", "postgres")
# Spark with every sum, mean and std over sliding frames, as a build plans them when a key's
# windows hold few rows (engine.frame_rows); "spark" keeps the blocked streams
SPARK_FRAMES = "spark-frames"


def engine_matrix(
    features: Sequence[dict[str, Any]],
    events: Sequence[Row],
    rows: Sequence[Row],
    dim: Sequence[Row] = (),
    as_of: datetime = AS_OF,
    engine: str = "batch",
) -> tuple[list[str], list[dict[str, Any]]]:
    """Compute the features on in-memory tables: (columns, rows).

    ``batch`` compiles the features and runs the query in stages, as a build does; ``online``
    fills an in-memory online store from the same tables and evaluates each event as a live
    request at its own prediction time, as the REST server does; ``spark`` and ``postgres`` run
    the plan written for those engines on the same tables, handed over as a build does.
    """
    config = parse_config(
        {
            "name": "pit",
            "sources": _sources_config(),
            "spine": SPINE_CONFIG,
            "features": list(features),
        }
    )
    graph = FeatureGraph.build(config)
    compiler = MatrixCompiler(graph)
    if engine == SPARK_FRAMES:
        compiler = MatrixCompiler(graph, framed=compiler.window_densities())
    if engine in (*OTHER_ENGINES, SPARK_FRAMES):
        tables = _tables(events, rows, dim)
        query = compiler.staged_query(as_of, engine="postgres" if engine == "postgres" else "spark")
        run = _in_postgres if engine == "postgres" else _on_spark
        matrix = run(tables, query)
        return matrix.column_names, matrix.to_pylist()
    con = connect()
    try:
        con.register("ev", pa.Table.from_pylist(list(events), schema=SPINE_SCHEMA))
        con.register("dim", pa.Table.from_pylist(list(dim), schema=DIM_SCHEMA))
        table = pa.Table.from_pylist(list(rows), schema=ROWS_SCHEMA)
        for name in TIMED_SOURCES:
            con.register(name, table)
        if engine == "online":
            return _online_matrix(con, graph, compiler, as_of)
        matrix = run_staged(con, compiler.staged_query(as_of)).table
    finally:
        con.close()
    return matrix.column_names, matrix.to_pylist()


def _tables(events: Sequence[Row], rows: Sequence[Row], dim: Sequence[Row]) -> dict[str, pa.Table]:
    table = pa.Table.from_pylist(list(rows), schema=ROWS_SCHEMA)
    return {
        "ev": pa.Table.from_pylist(list(events), schema=SPINE_SCHEMA),
        "dim": pa.Table.from_pylist(list(dim), schema=DIM_SCHEMA),
        **dict.fromkeys(TIMED_SOURCES, table),
    }


def _on_spark(tables: dict[str, pa.Table], query: StagedQuery) -> pa.Table:
    """The plan on the shared local Spark session, the tables handed over through Arrow."""
    spark = spark_session(SPARK_ENGINE)
    for name, table in tables.items():
        spark.createDataFrame(table, schema=_spark_schema(table.schema)).createOrReplaceTempView(
            name
        )
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "matrix.parquet"
        spark_stages(spark, query, output)
        return read_matrix(output)


def _spark_schema(schema: pa.Schema) -> Any:
    """Arrow's schema for Spark (an empty table carries no types Spark could infer)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _in_postgres(tables: dict[str, pa.Table], query: StagedQuery) -> pa.Table:
    """The plan inside the real PostgreSQL, the tables loaded as temporary tables."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
        try:
            for name, table in tables.items():
                cursor.adbc_ingest(name, table, mode="create", temporary=True)
            return postgres_stages(cursor, query)[0]
        finally:
            conn.rollback()


def _online_matrix(
    con: Any, graph: FeatureGraph, compiler: MatrixCompiler, as_of: datetime
) -> tuple[list[str], list[dict[str, Any]]]:
    """The training events (chosen as batch chooses them), each scored as a live request."""
    store = MemoryOnlineStore()
    online = OnlineFeatures(graph, store)
    declare(con, graph, online.plan.tables, store)
    ingest_rows(con, graph, online.plan.tables, store)
    events = compiler.training_events(as_of, None)
    ordered = events.select.order_by(*[sql.col(c) for c in events.order])
    spine = con.sql(ordered.sql("duckdb", identify=True)).to_arrow_table().to_pylist()
    values = online.compute(spine, [event["__t"] for event in spine])
    result = [
        {
            "id": event["id"],
            "prediction_time": event["__t"],
            "label": event["__label"],
            "label_available_at": event["__label_at"],
            **features,
        }
        for event, features in zip(spine, values, strict=True)
    ]
    columns = ["id", "prediction_time", "label", "label_available_at", *online.names]
    return columns, result


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


def assert_matches_reference(scenario: Scenario, engines: Sequence[str] = ENGINES) -> None:
    """The engines (default: DuckDB in batch and online) give the reference's matrix."""
    for engine in engines:
        _assert_engine_matches(scenario, engine)


def _assert_engine_matches(scenario: Scenario, engine: str) -> None:
    columns, got = engine_matrix(
        [config for config, _ in scenario.features],
        scenario.events,
        scenario.rows,
        scenario.dim,
        scenario.as_of,
        engine,
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
                f"{engine} engine: event id={want_row['id']} t={want_row['prediction_time']}: "
                f"column {column} is "
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
