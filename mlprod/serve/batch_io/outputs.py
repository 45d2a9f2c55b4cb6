"""Where batch scoring writes its scores to.

An output is a ``.parquet`` file, a folder ending in ``/`` (a Parquet dataset, one
``run-<run_id>.parquet`` per run), a DuckDB table or a PostgreSQL table. Every output keeps two
promises, also when the scoring process is killed with SIGKILL half way:

- all or nothing: no row of a run is visible before the writer commits. Parquet is written to a
  hidden temporary file in the same folder, fsynced and renamed over the target. DuckDB batches
  are staged in such a file and inserted in one transaction at commit, so the DuckDB file is
  locked for the commit only, not for the whole scoring. PostgreSQL batches are sent with
  binary COPY (ADBC ingest) inside one transaction.
- one copy per run: tables get a ``run_id`` column, and writing run R again deletes R's rows in
  the same transaction. A single Parquet file is replaced whole (it holds one run); a dataset
  folder keeps the other runs' files.

A killed Parquet or DuckDB writer leaves its hidden ``.*.tmp`` file behind; readers ignore it.
"""

from __future__ import annotations

import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from mlprod.data import postgres
from mlprod.errors import MlprodError, ScoreIOError, SourceError, one_of
from mlprod.serve.batch_io._shared import (
    _NAME,
    _POSTGRES_SCHEMES,
    _TABLE_FORMS,
    DuckDBTable,
    PostgresTable,
    _duckdb_target,
    _first_line,
    _no_table,
    _postgres_target,
)

RUN_ID = "run_id"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# What an Arrow column becomes in a new table (sqlglot spells each per dialect).
_SQL_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.int16(): "SMALLINT",
    pa.float64(): "DOUBLE",
    pa.float32(): "REAL",
    pa.string(): "TEXT",
    pa.large_string(): "TEXT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
}

# The information_schema names PostgreSQL gives those types: an existing column must be one.
_POSTGRES_TYPES = {
    "BIGINT": ("bigint",),
    "INT": ("integer",),
    "SMALLINT": ("smallint",),
    "DOUBLE": ("double precision",),
    "REAL": ("real",),
    "TEXT": ("text", "character varying"),
    "BOOLEAN": ("boolean",),
    "DATE": ("date",),
    "TIMESTAMP": ("timestamp without time zone",),
    "TIMESTAMPTZ": ("timestamp with time zone",),
}


@dataclass(frozen=True)
class ParquetFileOutput:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class ParquetDatasetOutput:
    folder: Path

    def __str__(self) -> str:
        return f"{self.folder}{os.sep}"


DuckDBOutput = DuckDBTable
PostgresOutput = PostgresTable

OutputSpec = ParquetFileOutput | ParquetDatasetOutput | DuckDBOutput | PostgresOutput


@dataclass(frozen=True)
class OutputSummary:
    """What a committed run wrote: its rows and where (a display string without passwords)."""

    rows: int
    where: str


def parse_output(text: str) -> OutputSpec:
    """Recognise which of the output forms ``text`` is (syntax only: nothing is opened)."""
    if text.startswith(_POSTGRES_SCHEMES):
        return PostgresOutput(*_postgres_target(text, "output"))
    if ".duckdb:" in text:
        return DuckDBOutput(*_duckdb_target(text))
    if text.endswith(("/", os.sep)):
        return ParquetDatasetOutput(Path(text))
    suffix = Path(text).suffix.lower()
    if suffix == ".parquet":
        return ParquetFileOutput(Path(text))
    shown = postgres.redact(text)
    if suffix == ".duckdb":
        raise ScoreIOError(_no_table(shown))
    hint = f"; to write a dataset into the folder, write '{shown}/'" if Path(text).is_dir() else ""
    raise ScoreIOError(
        f"unknown output '{shown}'; expected a .parquet file, a folder ending in / (one Parquet "
        f"file per run), {_TABLE_FORMS}{hint}"
    )


# --- writing -----------------------------------------------------------------------------------


def open_output(spec: OutputSpec, *, run_id: str, schema: pa.Schema) -> OutputWriter:
    """A writer for one run's scores (``schema``, without ``run_id``: the writer adds it).

    Use it as a context manager: leaving the block normally commits, an exception rolls back.
    """
    if not _RUN_ID.fullmatch(run_id):
        raise ScoreIOError(
            f"invalid run id '{run_id}'; expected up to 128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if RUN_ID in schema.names:
        raise ScoreIOError(
            f"the scores already have a column '{RUN_ID}', which the output adds; rename it"
        )
    if isinstance(spec, ParquetFileOutput):
        return _ParquetWriter(spec.path, run_id, schema, check_columns=False)
    if isinstance(spec, ParquetDatasetOutput):
        return _ParquetWriter(spec.folder / f"run-{run_id}.parquet", run_id, schema, True)
    _check_sql_columns(schema, str(spec))
    if isinstance(spec, DuckDBOutput):
        return _DuckDBWriter(spec, run_id, schema)
    return _PostgresWriter(spec, run_id, schema)


class OutputWriter(ABC):
    """Writes a run's batches, visible all at once on commit; see the module docstring."""

    def __init__(self, where: str, run_id: str, schema: pa.Schema) -> None:
        self.where = where
        self.run_id = run_id
        self.scores_schema = schema
        self.schema = pa.schema([pa.field(RUN_ID, pa.string()), *schema])
        self._rows = 0
        self._state: Literal["new", "open", "committed", "rolled back"] = "new"

    def __enter__(self) -> Self:
        try:
            with self._file_errors():
                self._open()
        except BaseException:
            self._rollback()  # __exit__ is not called when __enter__ fails
            raise
        self._state = "open"
        return self

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add a batch of scores (columns as declared, in order) to this run."""
        if self._state != "open":
            raise RuntimeError(f"write() on a writer that is {self._state}; use it in a with-block")
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if table.schema.names != self.scores_schema.names:
            raise ValueError(
                f"batch columns {table.schema.names} differ from the declared "
                f"{self.scores_schema.names}"
            )
        if not table.schema.equals(self.scores_schema):
            table = table.cast(self.scores_schema)
        with self._file_errors():
            self._write(table.add_column(0, RUN_ID, pa.repeat(self.run_id, table.num_rows)))
        self._rows += table.num_rows

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            try:
                with self._file_errors():
                    self._commit()
            except BaseException:
                self._rollback()
                self._state = "rolled back"
                raise
            self._state = "committed"
        else:
            self._rollback()  # must not raise: the error that got us here is the one to show
            self._state = "rolled back"

    @property
    def result(self) -> OutputSummary:
        """The rows written and where; only after the with-block committed."""
        if self._state != "committed":
            raise RuntimeError(f"no result: the writer is {self._state}")
        return OutputSummary(self._rows, self.where)

    @contextmanager
    def _file_errors(self) -> Iterator[None]:
        """A full disk or a denied folder is the user's to fix: say so in our words."""
        try:
            yield
        except OSError as exc:
            raise ScoreIOError(f"cannot write to '{self.where}': {_first_line(exc)}") from None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _write(self, table: pa.Table) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...


class _ParquetWriter(OutputWriter):
    """One Parquet file, written beside its target and renamed over it at commit."""

    def __init__(self, path: Path, run_id: str, schema: pa.Schema, check_columns: bool) -> None:
        super().__init__(str(path), run_id, schema)
        self.path = path
        self.check_columns = check_columns
        self._staged = _Staged(path)

    def _open(self) -> None:
        folder = self.path.parent
        shown = f"{folder}{os.sep}" if self.check_columns else str(self.path)
        parent = folder.parent if self.check_columns else folder
        if not parent.is_dir():
            raise ScoreIOError(f"cannot write '{shown}': the folder '{parent}' does not exist")
        if self.check_columns:  # a dataset: its folder is ours to make, and its runs must agree
            folder.mkdir(exist_ok=True)
            others = sorted(p for p in folder.glob("run-*.parquet") if p != self.path)
            if others:
                _check_same_columns(
                    f"the dataset '{shown}'",
                    "dataset",
                    _parquet_columns(others[-1]),
                    self.schema.names,
                )
        self._staged.open(self.schema)

    def _write(self, table: pa.Table) -> None:
        self._staged.write(table)

    def _commit(self) -> None:
        staged = self._staged.close()
        os.replace(staged, self.path)
        _fsync(self.path.parent)

    def _rollback(self) -> None:
        self._staged.discard()


class _DuckDBWriter(OutputWriter):
    """Batches staged in a hidden Parquet file, inserted in one DuckDB transaction at commit."""

    def __init__(self, spec: DuckDBOutput, run_id: str, schema: pa.Schema) -> None:
        super().__init__(str(spec), run_id, schema)
        self.spec = spec
        self._staged = _Staged(spec.path)

    def _open(self) -> None:
        if not self.spec.path.parent.is_dir():
            raise ScoreIOError(
                f"cannot write '{self.spec}': the folder '{self.spec.path.parent}' does not exist"
            )
        if self.spec.path.exists():  # fail before scoring if the table cannot take these scores
            with self._connect(read_only=True) as con:
                self._check(con)
        self._staged.open(self.schema)

    def _write(self, table: pa.Table) -> None:
        self._staged.write(table)

    def _commit(self) -> None:
        staged = self._staged.close()
        spec, names = self.spec, self.schema.names
        target = exp.table_(spec.table, db=spec.schema, quoted=True)
        rows = exp.select(*[exp.column(n, quoted=True) for n in names]).from_(
            exp.func("read_parquet", exp.Literal.string(str(staged)))
        )
        with self._connect(read_only=False) as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(_create_schema(spec.schema).sql("duckdb"))
                if not self._check(con):
                    con.execute(_create_table(target, self.schema).sql("duckdb"))
                con.execute(_delete_run(target, exp.Placeholder()).sql("duckdb"), [self.run_id])
                con.execute(_insert(target, names, rows).sql("duckdb"))
                con.execute("COMMIT")
            except BaseException as exc:
                with suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise ScoreIOError(f"cannot write to '{spec}': {_first_line(exc)}") from None
                raise
        self._staged.discard()

    def _rollback(self) -> None:
        self._staged.discard()

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.spec.path), read_only=read_only)
        except duckdb.Error as exc:
            raise ScoreIOError(f"cannot open '{self.spec.path}': {_first_line(exc)}") from None

    def _check(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether the table exists; an error if its columns are not these scores'."""
        found = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ?",
            [self.spec.schema, self.spec.table],
        ).fetchall()
        if found:
            _check_same_columns(f"'{self.spec}'", "table", [r[0] for r in found], self.schema.names)
        return bool(found)


class _PostgresWriter(OutputWriter):
    """Binary COPY (ADBC ingest) of every batch inside one transaction, committed at the end."""

    def __init__(self, spec: PostgresOutput, run_id: str, schema: pa.Schema) -> None:
        super().__init__(str(spec), run_id, schema)
        self.spec = spec
        self._conn: Any = None

    def _open(self) -> None:
        spec = self.spec
        target = exp.table_(spec.table, db=spec.schema, quoted=True)
        try:
            self._conn = postgres.connect(spec.url)
        except SourceError as exc:
            raise ScoreIOError(str(exc)) from None
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(_create_schema(spec.schema).sql("postgres"))
                cursor.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = $1 AND table_name = $2",
                    parameters=(spec.schema, spec.table),
                )
                found = dict(cursor.fetchall())
                if found:
                    _check_same_columns(f"'{spec}'", "table", list(found), self.schema.names)
                    self._check_types(found)
                else:
                    cursor.execute(_create_table(target, self.schema).sql("postgres"))
                delete = _delete_run(target, exp.Parameter(this=exp.Literal.number(1)))
                cursor.execute(delete.sql("postgres"), parameters=(self.run_id,))
        except MlprodError:
            raise
        except Exception as exc:  # the driver raises its own error types
            raise ScoreIOError(f"cannot write to '{spec}': {_first_line(exc)}") from None

    def _check_types(self, found: dict[str, str]) -> None:
        """Binary COPY takes each column's exact type: an ``integer`` column refuses int64."""
        for column in self.schema:
            wanted = _POSTGRES_TYPES[_sql_type(column, self.where)]
            if found[column.name] not in wanted:
                raise ScoreIOError(
                    f"cannot write these scores to '{self.spec}': its column '{column.name}' is "
                    f"{found[column.name]}, the scores' is {column.type} (stored as {wanted[0]}); "
                    "write to a new table, or drop or rename the old one"
                )

    def _write(self, table: pa.Table) -> None:
        try:
            with self._conn.cursor() as cursor:
                cursor.adbc_ingest(
                    self.spec.table, table, mode="append", db_schema_name=self.spec.schema
                )
        except Exception as exc:  # the driver raises its own error types
            raise ScoreIOError(f"cannot write to '{self.spec}': {_first_line(exc)}") from None

    def _commit(self) -> None:
        try:
            self._conn.commit()
        except Exception as exc:
            raise ScoreIOError(f"cannot commit to '{self.spec}': {_first_line(exc)}") from None
        self._conn.close()
        self._conn = None

    def _rollback(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.rollback()
            with suppress(Exception):
                self._conn.close()
            self._conn = None


class _Staged:
    """A hidden Parquet file beside ``target`` (same file system, so a rename is atomic)."""

    def __init__(self, target: Path) -> None:
        self.path = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        self._writer: pq.ParquetWriter | None = None

    def open(self, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(self.path, schema)

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table)

    def close(self) -> Path:
        """Finish the file and make it durable; its path, to rename or read."""
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        _fsync(self.path)
        return self.path

    def discard(self) -> None:
        if self._writer is not None:
            with suppress(Exception):
                self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)


def _parquet_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise ScoreIOError(f"cannot read the columns of '{path}': {_first_line(exc)}") from None


def _check_sql_columns(schema: pa.Schema, where: str) -> None:
    for column in schema:
        if not _NAME.fullmatch(column.name):
            raise ScoreIOError(
                f"cannot write column '{column.name}' to '{where}': column names are letters, "
                "digits and underscores that do not start with a digit"
            )
        _sql_type(column, where)


def _sql_type(column: pa.Field, where: str) -> str:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ" if kind.tz else "TIMESTAMP"
    if kind in _SQL_TYPES:
        return _SQL_TYPES[kind]
    raise ScoreIOError(
        f"cannot write column '{column.name}' of type {kind} to '{where}'; tables take "
        f"{one_of(str(t) for t in _SQL_TYPES)} and timestamps"
    )


def _check_same_columns(what: str, noun: str, found: list[str], ours: list[str]) -> None:
    lacks = sorted(set(ours) - set(found))
    extra = sorted(set(found) - set(ours))
    if not lacks and not extra:
        return
    differences = [f"the {noun} lacks {one_of(lacks)}"] if lacks else []
    if extra:
        differences.append(f"the {noun} has {one_of(extra)}, which the scores do not")
    new = "folder" if noun == "dataset" else noun
    raise ScoreIOError(
        f"cannot write these scores to {what}: {'; '.join(differences)}; columns are never "
        f"added or dropped, so write to a new {new}, or drop or rename the old one"
    )


def _create_schema(schema: str) -> exp.Create:
    return exp.Create(
        kind="SCHEMA", this=exp.Table(db=exp.to_identifier(schema, quoted=True)), exists=True
    )


def _create_table(target: exp.Table, schema: pa.Schema) -> exp.Create:
    columns = [
        exp.ColumnDef(
            this=exp.to_identifier(f.name, quoted=True),
            kind=exp.DataType.build(_sql_type(f, target.name)),
        )
        for f in schema
    ]
    return exp.Create(kind="TABLE", this=exp.Schema(this=target.copy(), expressions=columns))


def _delete_run(target: exp.Table, parameter: exp.Expr) -> exp.Delete:
    return exp.delete(target.copy(), where=exp.column(RUN_ID, quoted=True).eq(parameter))


def _insert(target: exp.Table, names: list[str], rows: exp.Select) -> exp.Insert:
    columns = [exp.to_identifier(n, quoted=True) for n in names]
    return exp.insert(rows, target.copy(), columns=columns)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
