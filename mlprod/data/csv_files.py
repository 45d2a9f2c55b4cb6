"""Read a CSV source with the types its contract declares, and point at the first bad value.

DuckDB would guess each column's type from a sample (``Yes``/``No`` becomes a boolean, a
column whose first rows are numbers becomes an integer) and then fail, or read something else
than was meant, on a later row. The contract already says what each column holds, so declared
columns are parsed as declared and the others are kept as text (nothing reads them). A value
that does not parse is reported with its file, line, column, the value and the declared type,
like a compiler error, rather than as a cast failure somewhere in a feature's query.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.contracts import check_schema
from mlprod.data.timezones import as_naive_utc
from mlprod.errors import ContractError, SourceError
from mlprod.project.config import ColumnType, CsvLocation, SourceConfig

# How each declared type is parsed. Timestamps are read with their zone (a value without one
# is UTC, the session's zone) and made naive UTC afterwards. Integers are read as text and
# checked before they are cast: DuckDB would round '30.5' to 31 without a word.
_PARSE_AS: dict[ColumnType, str] = {
    "int": "VARCHAR",
    "float": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
}
_ARTICLE = {"int": "an int", "float": "a float", "string": "a string", "bool": "a bool"}
_ARTICLE |= {"timestamp": "a timestamp", "date": "a date"}
_INTEGER = r"\s*[+-]?[0-9]+\s*"
_NOT_AN_INT = "mlprod: a value that is not a whole number in an int column"
_BIGINT = exp.DataType.build("BIGINT")
# Enough of a file to tell an empty one (or one of blank lines) from one with a header.
_PEEK_BYTES = 1 << 16


def load_csv(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    location: CsvLocation,
    path: Path,
) -> None:
    """Parse the file once into the table ``name``, with the declared types.

    Raises for an empty file, a header without rows, a declared column the file lacks, or a
    line that does not parse. Undeclared columns are kept as text.
    """
    shown = f"csv file '{location.path}'"
    if _is_blank(path):
        nothing = "not even a header line" if location.header else "no lines"
        raise SourceError(f"source '{name}': {shown} is empty ({nothing})")
    try:
        header = csv_columns(con, path, location)
    except duckdb.Error:
        _check_utf8(name, location, path)
        _check_field_counts(name, location, path)  # a line of another width confuses DuckDB
        raise
    if location.header:
        _check_field_counts(name, location, path, header)
    check_schema(name, source, dict.fromkeys(header, "VARCHAR"), names_only=True)
    ints = [c for c, contract in source.columns.items() if contract.type == "int"]
    try:
        relation = _guard_ints(_scan(con, name, source, location, path), ints)
        as_naive_utc(relation, source).to_table(name)
    except duckdb.Error as exc:
        if _NOT_AN_INT not in str(exc):
            _check_utf8(name, location, path)
            raise
        # Some value is not a whole number: read the file again as text to point at it.
        staging = f"__text_{name}"
        _scan(con, name, source, location, path).to_table(staging)
        found = [_first_reject(con, name, source, location)]
        found += _first_bad_ints(con, name, staging, ints, location, path)
        raise _bad_lines_error(name, location, [b for b in found if b is not None]) from None
    first = _first_reject(con, name, source, location)
    if first is not None:
        raise _bad_lines_error(name, location, [first])
    count = exp.select(exp.Count(this=exp.Star())).from_(sql.table(name))
    if con.execute(count.sql("duckdb", identify=True)).fetchall()[0][0] == 0 and location.header:
        raise SourceError(f"source '{name}': {shown} has only a header line, no rows")


def _scan(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    location: CsvLocation,
    path: Path,
) -> duckdb.DuckDBPyRelation:
    """The file's rows with the declared types (integers as text), keeping the lines that do
    not parse in ``__rejects_<name>`` instead of failing on the first."""
    for table in (f"__rejects_{name}", f"__reject_scans_{name}"):
        drop = exp.Drop(tables=[sql.table(table)], kind="TABLE", exists=True)
        con.execute(drop.sql("duckdb", identify=True))
    return con.read_csv(
        str(path),
        header=location.header,
        sep=location.delimiter,
        all_varchar=True,
        dtype={column: _PARSE_AS[c.type] for column, c in source.columns.items()},
        store_rejects=True,
        rejects_table=f"__rejects_{name}",
        rejects_scan=f"__reject_scans_{name}",
    )


def _guard_ints(relation: duckdb.DuckDBPyRelation, ints: list[str]) -> duckdb.DuckDBPyRelation:
    """Cast the integer columns, stopping the read at a value that is not a whole number."""
    if not ints:
        return relation
    projection = []
    for column in relation.columns:
        value: exp.Expr = sql.col(column)
        if column in ints:
            whole = exp.or_(
                exp.Is(this=value.copy(), expression=exp.null()),
                exp.func("regexp_full_match", value.copy(), exp.Literal.string(_INTEGER)),
            )
            stop = exp.func("error", exp.Literal.string(_NOT_AN_INT))
            cast = exp.cast(value.copy(), _BIGINT.copy())
            value = sql.alias(exp.If(this=whole, true=cast, false=stop), column)
        projection.append(value.sql("duckdb", identify=True))
    return relation.project(", ".join(projection))


@dataclass(frozen=True)
class _BadLines:
    """The first line of one kind of bad value, how many lines have it, and what is wrong."""

    line: int
    count: int
    problem: str
    in_contract: bool  # a value that breaks its declared type, not a malformed line


def _bad_lines_error(name: str, location: CsvLocation, found: list[_BadLines]) -> SourceError:
    """One message for the earliest bad line, counting every bad value."""
    first = min(found, key=lambda b: b.line)
    total = sum(b.count for b in found)
    more = f" (the first of {total} bad values)" if total > 1 else ""
    kind = ContractError if first.in_contract else SourceError
    return kind(
        f"source '{name}': csv file '{location.path}' line {first.line}{more}{first.problem}"
    )


def _declared(name: str, column: str, value: str, declared: ColumnType) -> str:
    return (
        f", column '{column}': {value!r} is not {_ARTICLE[declared]} (the type declared in "
        f"sources.{name}.columns.{column}.type); fix the value or the declared type"
    )


def _first_reject(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    location: CsvLocation,
) -> _BadLines | None:
    """The first line DuckDB could not read, if any: a value that does not parse as its
    declared type, or a malformed line (too many fields, ...)."""
    columns = ["line", "column_idx", "column_name", "error_type", "csv_line", "error_message"]
    query = (
        exp.select(*[sql.col(c) for c in columns])
        .select(exp.Window(this=exp.Count(this=exp.Star())))
        .from_(sql.table(f"__rejects_{name}"))
        .order_by(sql.col("line"), sql.col("column_idx"))
        .limit(1)
    )
    found = con.execute(query.sql("duckdb", identify=True)).fetchall()
    if not found:
        return None
    line, index, column, kind, text, message, total = found[0]
    if kind != "CAST" or column not in source.columns:
        return _BadLines(int(line), int(total), f": {message}", in_contract=False)
    value = _field(text, int(index) - 1, location.delimiter)
    problem = _declared(name, column, value, source.columns[column].type)
    return _BadLines(int(line), int(total), problem, in_contract=True)


def _first_bad_ints(
    con: duckdb.DuckDBPyConnection,
    name: str,
    table: str,
    columns: list[str],
    location: CsvLocation,
    path: Path,
) -> list[_BadLines | None]:
    """For each text column in ``columns`` of ``table``, its first value that is not a whole
    number, if any, found again in the file for its line (one scan for all of them)."""
    if not columns:
        return []
    probe = exp.select()
    for column in columns:
        value = sql.col(column)
        bad = exp.and_(
            exp.not_(exp.Is(this=value.copy(), expression=exp.null())),
            exp.not_(exp.func("regexp_full_match", value.copy(), exp.Literal.string(_INTEGER))),
        )
        probe = probe.select(
            exp.func("count_if", bad), exp.func("min", sql.case_when(bad.copy(), value.copy()))
        )
    counts = con.execute(probe.from_(sql.table(table)).sql("duckdb", identify=True)).fetchall()[0]
    found: list[_BadLines | None] = []
    order = con.table(table).columns
    for i, column in enumerate(columns):
        count, example = counts[2 * i], counts[2 * i + 1]
        if not count:
            continue
        index = order.index(column)
        line, first = _first_line(path, location, index, lambda v: not _is_integer(v))
        text = first if first is not None else str(example)
        problem = _declared(name, column, text, "int")
        found.append(_BadLines(line, int(count), problem, in_contract=True))
    return found


def _first_line(
    path: Path, location: CsvLocation, index: int, wrong: Callable[[str], bool]
) -> tuple[int, str | None]:
    """The line number and value of the first wrong value in the ``index``-th column of the
    file (read again on this error path only; lines count as an editor counts them)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        reader = csv.reader(file, delimiter=location.delimiter)
        if location.header:
            next(reader, None)
        for row in reader:
            if index < len(row) and row[index].strip() and wrong(row[index]):
                return reader.line_num, row[index]
    return 0, None


def _check_field_counts(
    name: str, location: CsvLocation, path: Path, header: list[str] | None = None
) -> None:
    """Raise for a line with more or fewer fields than the first. DuckDB's sniffer would take
    the widest line for the header instead (naming the columns after values), or give up; the
    file is read through only when the ``header`` DuckDB found is not as wide as its first line."""
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        reader = csv.reader(file, delimiter=location.delimiter)
        first = next(reader, [])
        if header is not None and len(first) == len(header):
            return
        what = "the header line" if location.header else "line 1"
        for row in reader:
            if row and len(row) != len(first):
                raise SourceError(
                    f"source '{name}': csv file '{location.path}' line {reader.line_num} has "
                    f"{len(row)} fields, but {what} has {len(first)}; quote values "
                    f"that contain '{location.delimiter}', or fix the line"
                )


def _check_utf8(name: str, location: CsvLocation, path: Path) -> None:
    """Raise for the first line that is not UTF-8 (a spreadsheet's export in its own encoding),
    which DuckDB reports without saying so on its first line."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"source '{name}': csv file '{location.path}' line {number} is not UTF-8 "
                    f"text (byte {line[exc.start]:#04x} at position {exc.start + 1}); save the "
                    "file as UTF-8"
                ) from None


def _is_integer(text: str) -> bool:
    return re.fullmatch(_INTEGER, text) is not None


def csv_columns(con: duckdb.DuckDBPyConnection, path: Path, location: CsvLocation) -> list[str]:
    """The file's column names, as DuckDB reads them (nothing is parsed but the header)."""
    relation = con.read_csv(
        str(path), header=location.header, sep=location.delimiter, all_varchar=True, sample_size=1
    )
    return list(relation.columns)


def _is_blank(path: Path) -> bool:
    with path.open("rb") as file:
        start = file.read(_PEEK_BYTES)
    return not start.strip() and path.stat().st_size <= _PEEK_BYTES


def _field(line: str, index: int, delimiter: str) -> str:
    """The ``index``-th field of a raw CSV line (quotes removed as the reader would)."""
    fields = next(csv.reader([line], delimiter=delimiter), [])
    return fields[index] if 0 <= index < len(fields) else line
