"""Make a project's sources visible to DuckDB as views named after them, checked on load.

Parquet files and DuckDB tables are scanned in place (nothing is copied); a CSV file is
parsed once with its contract's types (``csv_files``); PostgreSQL tables are read once over
ADBC into Arrow. Times with a zone become naive UTC (``timezones``). Every source is checked
against its contract before a feature reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from sqlglot import exp

from mlprod.data import postgres
from mlprod.data.contracts import SourceProfile, check_schema, describe_location, profile_and_check
from mlprod.data.csv_files import csv_columns, load_csv
from mlprod.data.examples import ensure_example
from mlprod.data.timezones import as_naive_utc
from mlprod.errors import (
    ContractError,
    FeatureError,
    MlprodError,
    SourceError,
    UnknownColumnError,
    did_you_mean,
    one_of,
)
from mlprod.project.config import (
    CsvLocation,
    DuckDBLocation,
    ParquetLocation,
    PostgresLocation,
    ProjectConfig,
    SourceConfig,
    SparkLocation,
)

if TYPE_CHECKING:
    import pyarrow as pa
from mlprod.project.engine import EngineConfig


def connect(
    engine: EngineConfig | None = None, spill_directory: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for computing features, within the project's engine limits and
    spilling into ``spill_directory``; times are UTC."""
    settings: dict[str, str | bool | int | float | list[str]] = {}
    if engine is not None and engine.threads is not None:
        settings["threads"] = engine.threads
    if engine is not None and engine.memory_limit is not None:
        settings["memory_limit"] = f"{engine.memory_limit}B"
    if spill_directory is not None:
        settings["temp_directory"] = str(spill_directory)
    con = duckdb.connect(config=settings)
    con.execute("SET TimeZone = 'UTC'")
    # Track query progress for our own progress bar, without DuckDB printing its own. In a
    # Jupyter kernel DuckDB refuses unless ipywidgets is installed: progress is then unknown.
    try:
        con.execute("SET enable_progress_bar = true")
    except duckdb.InvalidInputException:
        return con
    con.execute("SET enable_progress_bar_print = false")
    return con


def open_source(
    con: duckdb.DuckDBPyConnection, folder: Path, config: ProjectConfig, name: str
) -> SourceProfile:
    """Create the view ``name`` over the source and check it against its contract."""
    source = config.sources[name]
    if config.example_data is not None:
        ensure_example(config.example_data.dataset, folder / config.example_data.path)
    location = source.location
    if isinstance(location, SparkLocation):
        raise SourceError(
            f"source '{name}' is read by Spark (from: {{kind: spark}}): only a feature build "
            "with engine kind spark reads it; materializing, scoring and serving read sources "
            "with DuckDB (give them a Parquet, DuckDB, CSV or PostgreSQL copy)"
        )
    try:
        if isinstance(location, PostgresLocation):
            _register_postgres(con, name, source, location)
        elif isinstance(location, CsvLocation):
            # Parsed once into a table: no re-parsing per reference, and real statistics
            # for the optimizer (a CSV scan has none, and join plans suffer badly).
            load_csv(con, name, source, location, _existing(folder, location.path, name))
        else:
            relation = _relation(con, folder, name, location)
            as_naive_utc(relation, source).create_view(name, replace=True)
    except duckdb.Error as exc:
        raise SourceError(
            f"source '{name}': cannot read {describe_location(source)}: {str(exc).splitlines()[0]}"
        ) from None
    types = _column_types(con, name)
    check_schema(name, source, types)
    return profile_and_check(con, name, source, types)


def _relation(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    name: str,
    location: ParquetLocation | DuckDBLocation,
) -> duckdb.DuckDBPyRelation:
    if isinstance(location, DuckDBLocation):
        path = _existing(folder, location.path, name)
        catalog = f"__src_{name}"
        attached = {
            row[0] for row in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        }
        if catalog not in attached:
            attach = exp.Attach(
                this=exp.alias_(exp.Literal.string(str(path)), catalog, quoted=True),
                expressions=[exp.AttachOption(this=exp.var("READ_ONLY"))],
            )
            try:
                con.execute(attach.sql("duckdb"))
            except duckdb.Error:
                _check_duckdb_file(name, location.path, path)
                raise
        target = exp.table_(location.table, db=location.db_schema, catalog=catalog, quoted=True)
        # Views are tables to the reader, so they count too.
        tables = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = ? AND schema_name = ? "
                "UNION ALL SELECT view_name FROM duckdb_views() "
                "WHERE database_name = ? AND schema_name = ?",
                [catalog, location.db_schema] * 2,
            ).fetchall()
        ]
        if location.table not in tables:
            hint = did_you_mean(location.table, tables) or (
                f" (its tables: {one_of(tables)})" if tables else ""
            )
            raise SourceError(
                f"source '{name}': the DuckDB file '{location.path}' has no table "
                f"'{location.db_schema}.{location.table}'{hint}"
            )
        return con.sql(exp.select("*").from_(target).sql("duckdb"))
    return con.read_parquet(str(_existing(folder, location.path, name, glob=True)))


def _register_postgres(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, location: PostgresLocation
) -> None:
    try:
        arrow_types = postgres.table_types(location.url, location.db_schema, location.table)
    except SourceError as exc:
        raise SourceError(f"source '{name}': {exc}") from None
    # Check names before reading rows, so a renamed column fails fast and says so.
    check_schema(name, source, {c: str(t) for c, t in arrow_types.items()}, names_only=True)
    as_float = _decimals_as_float(name, source, arrow_types)
    try:
        table = postgres.read_table(
            location.url, location.db_schema, location.table, list(source.columns), as_float
        )
    except SourceError as exc:
        raise SourceError(f"source '{name}': {exc}") from None
    # Copied into a DuckDB table: Arrow scans carry no statistics for the optimizer.
    con.register(f"__arrow_{name}", table)
    as_naive_utc(con.table(f"__arrow_{name}"), source).to_table(name)
    con.unregister(f"__arrow_{name}")


def _check_duckdb_file(name: str, shown: str, path: Path) -> None:
    """Raise for a file that is not a DuckDB database (a CSV declared ``kind: duckdb``), which
    DuckDB's own message does not say ("Cannot launch in-memory database in read-only mode!")."""
    with path.open("rb") as file:
        start = file.read(12)
    if start[8:12] != b"DUCK":
        raise SourceError(
            f"source '{name}': '{shown}' is not a DuckDB database file; for a CSV or Parquet "
            "file write kind: csv or kind: parquet"
        )


def _decimals_as_float(
    name: str, source: SourceConfig, arrow_types: dict[str, pa.DataType]
) -> list[str]:
    """The ``numeric`` columns declared float, to be read as doubles; a column of a type the
    driver passes as text (``numeric``, ...) declared anything but float or string is refused
    with its PostgreSQL type named, not as the text it would arrive as."""
    as_float = []
    for column, contract in source.columns.items():
        native = postgres.native_type(arrow_types[column])
        if native is None or contract.type == "string":
            continue
        if native in postgres.DECIMAL_TYPES and contract.type == "float":
            as_float.append(column)
            continue
        fix = "declare it float" if native in postgres.DECIMAL_TYPES else "declare it string"
        raise ContractError(
            f"source '{name}': column '{column}' changed type: the contract says "
            f"{contract.type}, the data has PostgreSQL {native}; {fix}, or cast it in a view"
        )
    return as_float


def _column_types(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    relation = con.table(name)
    return {
        column: str(kind) for column, kind in zip(relation.columns, relation.types, strict=True)
    }


def _existing(folder: Path, path: str, name: str, glob: bool = False) -> Path:
    full = (folder / path) if not Path(path).is_absolute() else Path(path)
    if glob and any(ch in path for ch in "*?["):
        return full
    if not full.exists():
        raise SourceError(
            f"source '{name}': file '{path}' does not exist (looked for {full.resolve()})"
        )
    return full


def explain_unknown_column(
    folder: Path, config: ProjectConfig, error: UnknownColumnError
) -> FeatureError:
    """The error to show for a column no contract declares: when the data has it, say that it
    is only missing from ``sources.X.columns`` (a message about the contract, not a typo)."""
    source = config.sources.get(error.source)
    found = data_columns(folder, config, error.source) if source is not None else None
    if source is None or found is None or error.column not in found:
        return FeatureError(str(error))
    return FeatureError(
        f"{error.where}: column '{error.column}' is in {describe_location(source)} but not "
        f"declared in sources.{error.source}.columns; declare it there (with its type) to "
        "read it"
    )


def data_columns(folder: Path, config: ProjectConfig, name: str) -> list[str] | None:
    """The column names a source's data has, read from its header or schema alone; None when
    they cannot be read (a missing file, an unreachable database, ...)."""
    location = config.sources[name].location
    if isinstance(location, SparkLocation):
        return None
    try:
        if isinstance(location, PostgresLocation):
            return list(postgres.table_types(location.url, location.db_schema, location.table))
        with duckdb.connect() as con:
            if isinstance(location, CsvLocation):
                return csv_columns(con, _existing(folder, location.path, name), location)
            return list(_relation(con, folder, name, location).columns)
    except (MlprodError, duckdb.Error, OSError):
        return None


def data_types(folder: Path, config: ProjectConfig, name: str) -> dict[str, str] | None:
    """The column types a source's data has: its schema, or for a CSV DuckDB's guess from a
    sample. None when they cannot be read. Only to explain an error; nothing is built on it."""
    import pyarrow as pa

    location = config.sources[name].location
    if isinstance(location, SparkLocation):
        return None
    try:
        with duckdb.connect() as con:
            if isinstance(location, PostgresLocation):
                found = postgres.table_types(location.url, location.db_schema, location.table)
                relation = con.from_arrow(pa.schema(list(found.items())).empty_table())
            elif isinstance(location, CsvLocation):
                path = _existing(folder, location.path, name)
                relation = con.read_csv(str(path), header=location.header, sep=location.delimiter)
            else:
                relation = _relation(con, folder, name, location)
            return {c: str(t) for c, t in zip(relation.columns, relation.types, strict=True)}
    except (MlprodError, duckdb.Error, OSError, pa.ArrowException):
        return None
