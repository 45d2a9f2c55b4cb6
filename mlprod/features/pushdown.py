"""Build the feature matrix inside PostgreSQL, where the sources live.

Every source of the build must be a table of one PostgreSQL database. The contract checks
(types, nulls, categories, fingerprints), the build's checks (unique lookup keys and spine
keys, event counts) and the features all run inside it: no row leaves the database but the
matrix's. Each source becomes a temporary view under its own name (the contract's columns;
``numeric`` declared float as double precision, ``timestamptz`` as UTC without a zone: what
DuckDB would see), each stage of the plan a temporary table, analysed for the planner and
dropped when nothing later reads it. All of it is temporary to one transaction, rolled back
at the end: a build writes nothing into the database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data import postgres
from mlprod.data.contracts import SourceProfile, check_schema, judge_profile, profile_query
from mlprod.data.types import duckdb_types
from mlprod.errors import FeatureError, SourceError
from mlprod.features.dialects import for_engine, render
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


class PostgresBuild:
    """One connection to the sources' database for a whole build: the sources' views, the
    contract checks, the build's own checks and the plan all run inside it."""

    def __init__(self, config: ProjectConfig, sources: list[str]) -> None:
        self.config = config
        self.sources = sources
        self.url = database_of(config, sources)
        self._conn: Any = None
        self._cursor: Any = None

    def __enter__(self) -> PostgresBuild:
        self._conn = postgres.connect(self.url)
        self._cursor = self._conn.cursor()
        for name in self.sources:
            execute(self._cursor, _source_view(self.config, name))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.rollback()  # the views and tables were temporary: nothing is left
        finally:
            self._cursor.close()
            self._conn.close()

    def fetch(self, select: exp.Select) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a DuckDB-built query in PostgreSQL: column names and rows."""
        execute(self._cursor, render(for_engine(select, "postgres"), "postgres"))
        rows = self._cursor.fetchall()
        return [d[0] for d in self._cursor.description or []], rows

    def execute(self, statement: exp.Expr) -> None:
        """Run a DuckDB-built statement in PostgreSQL."""
        execute(self._cursor, render(for_engine(statement, "postgres"), "postgres"))

    def types(self, name: str) -> dict[str, str]:
        """A source view's columns and their types, as DuckDB names them (the contracts'
        type families are DuckDB's)."""
        execute(self._cursor, f"SELECT * FROM {render(sql.table(name), 'postgres')} LIMIT 0")
        return duckdb_types(self._cursor.fetch_arrow_table().schema)

    def profile(self, name: str) -> SourceProfile:
        """The contract checks of one source, computed in the database (one scan)."""
        source = self.config.sources[name]
        types = self.types(name)
        check_schema(name, source, types)
        columns, rows = self.fetch(profile_query(name, source))
        return judge_profile(name, source, types, dict(zip(columns, rows[0], strict=True)))

    def run(self, query: StagedQuery, progress: ProgressCallback = NO_PROGRESS) -> StagedRun:
        from mlprod.features.matrix import StagedRun

        table, times = run_stages(self._cursor, query, progress)
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
    try:  # the driver runs the statement as its rows are fetched: errors arrive here
        fetched = cursor.fetch_arrow_table()
    except Exception as exc:  # the driver raises its own error types
        raise _failed(exc) from None
    table = _numeric_as_decimal(fetched)
    times.append(StepTime("result", time.perf_counter() - started, query.final_features, False))
    for name in query.final_drops:
        execute(cursor, render(exp.Drop(tables=[sql.table(name)], kind="TABLE"), "postgres"))
    task.finish("features computed in PostgreSQL")
    return table, times


def _numeric_as_decimal(table: pa.Table) -> pa.Table:
    """PostgreSQL's ``numeric`` columns (the driver hands them over as text) as decimals, as
    DuckDB gives its DECIMALs (``int * 1.5`` is exact in both)."""
    for index, field in enumerate(table.schema):
        if postgres.native_type(field.type) not in postgres.DECIMAL_TYPES:
            continue
        text = table.column(index).cast(pa.string())
        scale = max((len(v.split(".")[1]) for v in text.to_pylist() if v and "." in v), default=0)
        decimals = text.cast(pa.decimal128(38, scale))
        table = table.set_column(index, field.name, decimals)
    return table


def _source_view(config: ProjectConfig, name: str) -> str:
    """``CREATE TEMPORARY VIEW name AS SELECT <the contract's columns> FROM schema.table``."""
    source = config.sources[name]
    location = source.location
    assert isinstance(location, PostgresLocation)
    try:
        types = postgres.table_types(location.url, location.db_schema, location.table)
    except SourceError as exc:
        raise SourceError(f"source '{name}': {exc}") from None
    # Names first, before anything reads a row: a renamed column fails fast and says so.
    check_schema(name, source, {c: str(t) for c, t in types.items()}, names_only=True)
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
        raise _failed(exc) from None


def _failed(exc: Exception) -> FeatureError:
    """The server's own words (``invalid input syntax ...``), without the driver's prefixes."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    said = text.split("ERROR:", 1)[-1].strip()
    return FeatureError(f"computing the features in PostgreSQL failed: {said}")
