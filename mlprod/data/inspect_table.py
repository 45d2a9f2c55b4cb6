"""Look at a table a user points ``mlprod init`` at: where it is, its columns and their values.

What a contract needs is inferred from the data itself: the type family of each column, whether
it holds nulls, how many distinct values it has and, for a few, which. A CSV is sniffed by
DuckDB, except that a column DuckDB reads as boolean from text such as ``Yes``/``No`` stays text:
the user will write ``answer = 'Yes'``, and the contract must read the file as it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.types import type_family
from mlprod.errors import SourceError
from mlprod.project.config import ColumnType

# A string column with at most this many distinct values gets its categories listed.
MAX_CATEGORIES = 20
_BOOLEAN_TEXT = {"true", "false"}
_DUCKDB_TABLE = re.compile(r"^(?P<path>.+\.(?:duckdb|db|ddb)):(?P<table>[A-Za-z_][A-Za-z0-9_]*)$")
_KINDS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type: ColumnType
    nulls: int
    distinct: int
    categories: list[str] | None  # the values of a low-cardinality string column, sorted


@dataclass(frozen=True)
class TableFacts:
    location: dict[str, Any]  # the source's `from:` with the path as given
    rows: int
    columns: list[ColumnFacts]

    def column(self, name: str) -> ColumnFacts | None:
        return next((c for c in self.columns if c.name == name), None)


def table_file(given: str) -> Path:
    """The file behind ``given``: the file itself, or the database of ``FILE.duckdb:TABLE``."""
    match = _DUCKDB_TABLE.match(given)
    return Path(match["path"] if match else given)


def inspect_table(
    con: duckdb.DuckDBPyConnection, given: str, relation: str = "__init_table"
) -> TableFacts:
    """Read ``given`` into ``relation`` and describe its columns.

    ``given`` is a CSV or Parquet file, or ``FILE.duckdb:TABLE``.
    """
    path = table_file(given)
    location = _location(given)
    shown = f"'{given}'"
    if not path.exists():
        raise SourceError(f"mlprod init: {shown} does not exist")
    kind = location["kind"]
    try:
        if kind == "csv":
            if path.stat().st_size == 0:
                raise SourceError(f"mlprod init: {shown} is empty (not even a header line)")
            delimiter = "\t" if path.suffix.lower() == ".tsv" else None
            if delimiter is not None:
                location["delimiter"] = delimiter
            scan = con.read_csv(str(path), delimiter=delimiter)
            scan = _text_for_word_booleans(con, scan, path, delimiter)
        elif kind == "parquet":
            scan = con.read_parquet(str(path))
        else:
            con.execute("ATTACH ? AS __init_db (READ_ONLY)", [str(path)])
            scan = con.table(f"__init_db.main.{location['table']}")  # an identifier (regex)
        scan.to_table(relation)
    except duckdb.Error as exc:
        message = str(exc).splitlines()[0]
        raise SourceError(f"mlprod init: cannot read {shown}: {message}") from None
    rows = con.execute(_count(relation)).fetchall()[0][0]
    if rows == 0:
        raise SourceError(f"mlprod init: {shown} has no rows")
    table = con.table(relation)
    columns = [
        _facts(con, relation, name, str(duck_type))
        for name, duck_type in zip(table.columns, table.types, strict=True)
    ]
    return TableFacts(location, rows, columns)


def _location(given: str) -> dict[str, Any]:
    match = _DUCKDB_TABLE.match(given)
    if match:
        return {"kind": "duckdb", "path": match["path"], "table": match["table"]}
    kind = _KINDS.get(Path(given).suffix.lower())
    if kind is None:
        raise SourceError(
            f"mlprod init: cannot tell how to read '{given}': give a .csv, .tsv or .parquet "
            "file, or FILE.duckdb:TABLE"
        )
    return {"kind": kind, "path": given}


def _text_for_word_booleans(
    con: duckdb.DuckDBPyConnection,
    scan: duckdb.DuckDBPyRelation,
    path: Path,
    delimiter: str | None,
) -> duckdb.DuckDBPyRelation:
    """The scan again with the file's own text for boolean columns not written true/false."""
    booleans = [n for n, t in zip(scan.columns, scan.types, strict=True) if str(t) == "BOOLEAN"]
    if not booleans:
        return scan
    text = con.read_csv(str(path), all_varchar=True, delimiter=delimiter)
    as_text = []
    for name in booleans:
        column = sql.col(name).sql("duckdb")
        values = text.aggregate(f"list(DISTINCT lower({column}))").fetchall()[0][0]
        if not {v for v in values if v is not None} <= _BOOLEAN_TEXT:
            as_text.append(name)
    if not as_text:
        return scan
    types = {
        name: ("VARCHAR" if name in as_text else str(kind))
        for name, kind in zip(scan.columns, scan.types, strict=True)
    }
    return con.read_csv(str(path), dtype=types, delimiter=delimiter)


def _count(relation: str) -> str:
    return exp.select(exp.Count(this=exp.Star())).from_(sql.table(relation)).sql("duckdb")


def _facts(con: duckdb.DuckDBPyConnection, relation: str, name: str, duck_type: str) -> ColumnFacts:
    family = type_family(duck_type)
    if family is None:
        raise SourceError(
            f"mlprod init: column '{name}' has type {duck_type}, which a contract cannot "
            "declare (int, float, string, bool, timestamp, date)"
        )
    column = exp.column(name, quoted=True)
    query = exp.select(
        exp.Count(this=exp.Star()) - exp.Count(this=column),
        exp.Count(this=exp.Distinct(expressions=[column])),
    ).from_(sql.table(relation))
    nulls, distinct = con.execute(query.sql("duckdb")).fetchall()[0]
    categories = None
    if family == "string" and distinct <= MAX_CATEGORIES:
        listed = (
            exp.select(column)
            .distinct()
            .from_(sql.table(relation))
            .where(exp.Not(this=exp.Is(this=column, expression=exp.Null())))
            .order_by(column)
        )
        categories = [str(r[0]) for r in con.execute(listed.sql("duckdb")).fetchall()]
    return ColumnFacts(name, family, nulls, distinct, categories)
