"""Exact summaries of a key's range in SQLite, for aggregates over long windows.

A summary is one aggregate query over the clustered ``(key, at)`` range: the number of rows,
each column's count, minimum and maximum, number of distinct values, and its sum and sum of
squares as exact integers.
Sums are exact only for integers, so a sum is given only when every value of the range is an
integer below 2**53 in magnitude (no NaN, no fraction): then the integer sum, rounded once, is
the correctly rounded sum ``math.fsum`` gives of the rows.

How that is known decides the query's cost:

* the store keeps, per online table, whether every value ever written to each column was such
  an integer (*whole*; updated in each write's transaction, never set back to true but by
  rebuilding the table). A whole column is summed as it is, in floating point: with ``n``
  values and a float sum of squares ``Q < 2**53``, every partial sum of squares is an integer
  below 2**53, hence exact, and every partial sum of values is at most ``sqrt(n * Q)`` in
  magnitude (Cauchy-Schwarz), exact too when ``n * Q < 2**106``;
* any other column is checked row by row in the query (its type, whether it is integral) and
  summed as integers; a range that fails the check is read row by row instead.

NaN is stored as the text ``'NaN'``: it makes a column not whole, and a checked range with one
is not summarized for its minimum, maximum, sums or distinct values (rows count each NaN as
a value of its own). Distinct values are SQLite's: equal numbers are equal whatever their
storage (``1 = 1.0``, ``-0.0 = 0.0``), as in a Python set; text compares by its bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlprod.data.online_store._shared import (
    ColumnSummary,
    Decoder,
    Summarize,
    Summary,
    TableLayout,
    ValueType,
)

WHOLE_TABLE = "mlprod_online_whole"
SETUP = f"CREATE TABLE IF NOT EXISTS {WHOLE_TABLE} (table_id TEXT PRIMARY KEY, whole TEXT NOT NULL)"
NUMERIC: frozenset[ValueType] = frozenset(("int", "float"))
_LIMIT = 2**53  # integers beyond it are not all floats
Part = tuple[str, int]  # (what a result column holds, the value column it is about)


def whole_columns(values: Sequence[pa.Array], types: Sequence[ValueType]) -> list[bool]:
    """Per value column of a batch: whether every value is an integer below 2**53."""
    return [_whole(array, kind) for array, kind in zip(values, types, strict=True)]


def _whole(array: pa.Array, kind: ValueType) -> bool:
    if kind not in NUMERIC:
        return False
    present = array.drop_null()
    if len(present) == 0:
        return True
    if kind == "float" and not pc.all(pc.equal(pc.floor(present), present)).as_py():
        return False  # a fraction, or NaN
    try:
        largest = pc.max(pc.abs_checked(present)).as_py()
    except pa.ArrowInvalid:
        return False  # the smallest int64 has no absolute value
    return bool(largest < _LIMIT)


def whole_check(layout: TableLayout, table_name: str) -> tuple[str, list[int]]:
    """A query counting, per numeric column, the stored values that are not whole (for a
    table made before whole columns were kept), and the columns it checks."""
    checked = [i for i, kind in enumerate(layout.values) if kind in NUMERIC]
    counts = [
        f'SUM("v{i}" IS NOT NULL AND (TYPEOF("v{i}") = \'text\' OR ABS("v{i}") >= '
        f'{float(_LIMIT)!r} OR "v{i}" <> CAST("v{i}" AS INTEGER)))'
        for i in checked
    ]
    return f"SELECT {', '.join(counts) or 'NULL'} FROM {table_name}", checked


def encode_whole(whole: Sequence[bool]) -> str:
    return json.dumps([bool(w) for w in whole])


def decode_whole(text: str) -> tuple[bool, ...]:
    return tuple(bool(w) for w in json.loads(text))


def statement_text(
    layout: TableLayout, want: Summarize, whole: Sequence[bool], table_name: str
) -> tuple[str, list[Part]]:
    """One aggregate query over a key's range (``table_name`` a placeholder the caller
    renames), and what each of its result columns holds."""
    parts: list[Part] = [("rows", -1)]
    selects = ["COUNT(*)"]
    for i in sorted({*want.counts, *want.orders, *want.totals, *want.distincts}):
        v = f'"v{i}"'
        parts.append(("count", i))
        selects.append(f"COUNT({v})")
        if i in want.orders:
            parts += [("min", i), ("max", i)]
            selects += [f"MIN({v})", f"MAX({v})"]
        if i in want.distincts:
            parts.append(("distinct", i))
            selects.append(f"COUNT(DISTINCT {v})")
        if whole[i]:
            if i in want.totals:
                parts += [("float_total", i), ("float_squares", i)]
                selects += [f"SUM({v})", f"SUM({v} * {v})"]
            continue
        if layout.values[i] == "float" and i in {*want.orders, *want.totals, *want.distincts}:
            parts.append(("nan", i))  # a NaN is stored as text
            selects.append(f"SUM(TYPEOF({v}) = 'text')")
        if i in want.totals:
            integer = f"CAST({v} AS INTEGER)"
            parts += [("fraction", i), ("total", i), ("squares", i)]
            selects += [
                f"SUM({v} IS NOT NULL AND (ABS({v}) >= {float(_LIMIT)!r} OR {v} <> {integer}))",
                f"SUM({integer})",
                f"SUM({integer} * {integer})",  # a product past int64 turns REAL: rows then
            ]
    statement = (
        f'SELECT {", ".join(selects)} FROM {table_name} WHERE "key" = ? AND "at" >= ? AND "at" < ?'
    )
    return statement, parts


def summary_of(
    record: Sequence[Any], parts: list[Part], decoders: Mapping[int, Decoder]
) -> Summary | None:
    """The summary in one aggregate query's answer, or None where it is not exact."""
    found: dict[int, dict[str, Any]] = {}
    rows = 0
    for (what, i), value in zip(parts, record, strict=True):
        if what == "rows":
            rows = value
        elif what == "count":
            found[i] = {"count": value}
        elif what in ("nan", "fraction"):
            if value:
                return None
        elif what in ("total", "squares"):
            if value is None:
                value = 0  # no value at all
            if type(value) is not int:
                return None  # some product went past int64
            found[i][what] = value
        elif what in ("float_total", "float_squares"):
            if value is None:
                value = 0
            if not float(value).is_integer():
                return None  # cannot happen for a whole column; safe all the same
            found[i][what.removeprefix("float_")] = int(value)
            found[i]["summed_as_floats"] = True
        elif what == "distinct":
            found[i][what] = value
        else:  # min, max
            if value is not None and i in decoders:
                value = decoders[i]([value])[0]
            found[i][what] = value
    columns: dict[int, ColumnSummary] = {}
    for i, got in found.items():
        total, squares = got.get("total"), got.get("squares")
        if (
            got.get("summed_as_floats")
            and squares is not None
            and (squares >= _LIMIT or got["count"] * squares >= _LIMIT**2)
        ):
            return None  # float sums of a whole column are exact only below these bounds
        columns[i] = ColumnSummary(
            got["count"], got.get("min"), got.get("max"), total, squares, got.get("distinct")
        )
    return Summary(rows, columns)
