"""Build the feature matrix inside PostgreSQL, where the sources live.

Every source of the build must be a table of one PostgreSQL database. Each source becomes a
temporary view under its own name (the contract's columns; ``numeric`` declared float as
double precision, ``timestamptz`` as UTC without a zone: what DuckDB would see), each stage of
the plan a temporary table, analysed for the planner and dropped when nothing later reads it.
Only the matrix leaves the database. Everything is temporary to one transaction, rolled back
at the end: the build writes nothing into the database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data import postgres
from mlprod.errors import FeatureError
from mlprod.features.dialects import render
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import PostgresLocation, ProjectConfig

if TYPE_CHECKING:
    from mlprod.features.compiler import StagedQuery
    from mlprod.features.matrix import StagedRun, StepTime


def database_of(config: ProjectConfig, sources: list[str]) -> str:
    """The URL of the one PostgreSQL database that holds every source of the build."""
    urls: dict[str, list[str]] = {}
    for name in sources:
        location = config.sources[name].location
        if not isinstance(location, PostgresLocation):
            raise FeatureError(
                f"engine kind postgres computes the features inside PostgreSQL, but source "
                f"'{name}' is {location.kind}, not a PostgreSQL table; load it into the "
                "database, or use engine kind duckdb or spark"
            )
        urls.setdefault(location.url, []).append(name)
    if len(urls) > 1:
        listed = "; ".join(
            f"{postgres.redact(url)}: {', '.join(names)}" for url, names in urls.items()
        )
        raise FeatureError(
            "engine kind postgres needs every source in one PostgreSQL database; these are in "
            f"{len(urls)} ({listed})"
        )
    return next(iter(urls))


def run_in_postgres(
    config: ProjectConfig,
    sources: list[str],
    query: StagedQuery,
    progress: ProgressCallback = NO_PROGRESS,
) -> StagedRun:
    """Run the staged plan inside the sources' database; return the matrix."""
    from mlprod.features.matrix import StagedRun

    url = database_of(config, sources)
    with postgres.connect(url) as conn, conn.cursor() as cursor:
        try:
            for name in sources:
                execute(cursor, _source_view(config, name))
            table, times = run_stages(cursor, query, progress)
        finally:
            conn.rollback()
    return StagedRun(table, times)


def run_stages(
    cursor: Any, query: StagedQuery, progress: ProgressCallback = NO_PROGRESS
) -> tuple[pa.Table, list[StepTime]]:
    """Run the stages on a connection that sees the sources under their names."""
    from mlprod.features.matrix import StepTime

    task = progress.start("computing features in PostgreSQL", total=len(query.stages) + 1)
    times: list[StepTime] = []
    for stage in query.stages:
        started = time.perf_counter()
        create = exp.Create(
            this=sql.table(stage.name),
            kind="TABLE",
            expression=stage.select,
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        )
        execute(cursor, render(create, "postgres"))
        # Temporary tables get no statistics until analysed; joins plan badly without.
        execute(cursor, f"ANALYZE {render(sql.table(stage.name), 'postgres')}")
        for name in stage.drop_after:
            execute(cursor, render(exp.Drop(tables=[sql.table(name)], kind="TABLE"), "postgres"))
        times.append(
            StepTime(stage.name, time.perf_counter() - started, stage.features, stage.prepares)
        )
        task.advance()
    started = time.perf_counter()
    execute(cursor, render(query.final, "postgres"))
    table: pa.Table = cursor.fetch_arrow_table()
    times.append(StepTime("result", time.perf_counter() - started, query.final_features, False))
    for name in query.final_drops:
        execute(cursor, render(exp.Drop(tables=[sql.table(name)], kind="TABLE"), "postgres"))
    task.finish("features computed in PostgreSQL")
    return table, times


def _source_view(config: ProjectConfig, name: str) -> str:
    """``CREATE TEMPORARY VIEW name AS SELECT <the contract's columns> FROM schema.table``."""
    source = config.sources[name]
    location = source.location
    assert isinstance(location, PostgresLocation)
    types = postgres.table_types(location.url, location.db_schema, location.table)
    columns: list[exp.Expr] = []
    for column, contract in source.columns.items():
        value: exp.Expr = sql.col(column)
        arrow_type = types[column]
        if postgres.native_type(arrow_type) in postgres.DECIMAL_TYPES and contract.type == "float":
            value = exp.cast(value, exp.DataType.build("double"))
        elif pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
            value = exp.AtTimeZone(this=value, zone=exp.Literal.string("UTC"))
        columns.append(sql.alias(value, column))
    table = exp.Table(
        this=exp.to_identifier(location.table, quoted=True),
        db=exp.to_identifier(location.db_schema, quoted=True),
    )
    create = exp.Create(
        this=sql.table(name),
        kind="VIEW",
        expression=exp.select(*columns).from_(table),
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return render(create, "postgres")


def execute(cursor: Any, text: str) -> None:
    try:
        cursor.execute(text)
    except Exception as exc:  # the driver raises its own error types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FeatureError(f"computing the features in PostgreSQL failed: {message}") from None
