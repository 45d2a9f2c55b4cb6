"""Where batch scoring reads its requests from.

An input is one string: a source of mlprod.yaml (read by the project's source machinery, only
recognised here), a ``.parquet`` or ``.csv`` file, ``FILE.duckdb:[SCHEMA.]TABLE`` or
``postgresql://USER@HOST:PORT/DB#[SCHEMA.]TABLE``. Files are read through DuckDB, so a CSV is
typed as it is when it is a source; a DuckDB file is opened read-only and closed at once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
from sqlglot import exp

from mlprod.data import postgres
from mlprod.data.sources import connect
from mlprod.errors import ScoreIOError, SourceError, did_you_mean, one_of
from mlprod.serve.batch_io._shared import (
    _POSTGRES_SCHEMES,
    _TABLE_FORMS,
    DuckDBTable,
    PostgresTable,
    _duckdb_target,
    _first_line,
    _no_table,
    _postgres_target,
)


@dataclass(frozen=True)
class SourceInput:
    name: str


@dataclass(frozen=True)
class FileInput:
    path: Path
    format: Literal["parquet", "csv"]

    def __str__(self) -> str:
        return str(self.path)


DuckDBInput = DuckDBTable
PostgresInput = PostgresTable

InputSpec = SourceInput | FileInput | DuckDBInput | PostgresInput

# --- parsing -----------------------------------------------------------------------------------


def parse_input(text: str, source_names: Collection[str]) -> InputSpec:
    """Recognise which of the input forms ``text`` is (syntax only: nothing is opened)."""
    if text in source_names:
        return SourceInput(text)
    if text.startswith(_POSTGRES_SCHEMES):
        return PostgresInput(*_postgres_target(text, "input"))
    if ".duckdb:" in text:
        return DuckDBInput(*_duckdb_target(text))
    suffix = Path(text).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return FileInput(Path(text), "parquet" if suffix == ".parquet" else "csv")
    shown = postgres.redact(text)
    if suffix == ".duckdb":
        raise ScoreIOError(_no_table(shown))
    sources = f" ({one_of(source_names)})" if source_names else " (this project has none)"
    raise ScoreIOError(
        f"unknown input '{shown}'{did_you_mean(text, source_names)}; expected a source of "
        f"mlprod.yaml{sources}, a .parquet or .csv file, {_TABLE_FORMS}"
    )


# --- reading -----------------------------------------------------------------------------------


def read_input(
    spec: FileInput | DuckDBInput | PostgresInput, columns: list[str] | None = None
) -> pa.Table:
    """The input's rows with ``columns`` (all if None), in that order."""
    if isinstance(spec, PostgresInput):
        return _read_postgres(spec, columns)
    if not spec.path.is_file():
        raise ScoreIOError(
            f"input file '{spec.path}' does not exist (looked for {spec.path.resolve()})"
        )
    try:
        if isinstance(spec, FileInput):
            with connect() as con:
                reader = "read_parquet" if spec.format == "parquet" else "read_csv"
                return _select(
                    con, exp.func(reader, exp.Literal.string(str(spec.path))), spec, columns
                )
        with duckdb.connect(str(spec.path), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")  # as sources are read: times are UTC
            _check_duckdb_table(con, spec.path, spec.schema, spec.table)
            target = exp.table_(spec.table, db=spec.schema, quoted=True)
            return _select(con, target, spec, columns)
    except duckdb.Error as exc:
        raise ScoreIOError(f"cannot read input '{spec}': {_first_line(exc)}") from None


def _select(
    con: duckdb.DuckDBPyConnection,
    source: exp.Expr,
    spec: FileInput | DuckDBInput,
    columns: list[str] | None,
) -> pa.Table:
    present = con.sql(exp.select("*").from_(source).limit(0).sql("duckdb")).columns
    wanted = present if columns is None else _require_columns(spec, present, columns)
    query = exp.select(*[exp.column(c, quoted=True) for c in wanted]).from_(source)
    table: pa.Table = con.sql(query.sql("duckdb")).to_arrow_table()
    return table


def _check_duckdb_table(
    con: duckdb.DuckDBPyConnection, path: Path, schema: str, table: str
) -> None:
    # Views are tables to a reader, so they count too.
    tables = [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = ? "
            "UNION ALL SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = ?",
            [schema, schema],
        ).fetchall()
    ]
    if table in tables:
        return
    if tables:
        hint = did_you_mean(table, tables) or f" (its tables: {one_of(tables)})"
    else:
        schemas = con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database() "
            "AND schema_name = ?",
            [schema],
        ).fetchall()
        hint = f" (there is no schema '{schema}')" if not schemas else ""
    raise ScoreIOError(f"the DuckDB file '{path}' has no table '{schema}.{table}'{hint}")


def _read_postgres(spec: PostgresInput, columns: list[str] | None) -> pa.Table:
    try:
        present = list(postgres.table_types(spec.url, spec.schema, spec.table))
        wanted = present if columns is None else _require_columns(spec, present, columns)
        return postgres.read_table(spec.url, spec.schema, spec.table, wanted)
    except SourceError as exc:
        raise ScoreIOError(str(exc)) from None


def _require_columns(spec: InputSpec, present: list[str], columns: list[str]) -> list[str]:
    missing = [c for c in columns if c not in present]
    if missing:
        hint = did_you_mean(missing[0], present) if len(missing) == 1 else ""
        raise ScoreIOError(
            f"input '{spec}' has no column{'s' if len(missing) > 1 else ''} "
            f"{one_of(missing)}{hint}, which the model needs "
            f"(its columns: {one_of(present)})"
        )
    return columns
