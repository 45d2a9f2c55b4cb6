"""MLflow's scoring protocol (``POST /invocations``), so MLflow clients and tools can call mlprod.

A JSON body holds exactly one of the four shapes MLflow's scoring server documents, and
optionally ``"params"`` (ignored: an mlprod model takes none)::

    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]], "index": [0, 1]}}
    {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}
    {"inputs": {"a": [1, 3], "b": [2, 4]}}      or  {"inputs": [{"a": 1, "b": 2}, ...]}
    {"instances": [{"a": 1, "b": 2}, ...]}      or  {"instances": {"a": [1, 3], "b": [2, 4]}}

``text/csv`` is accepted too: a header row of request field names, then one row per record,
each cell converted by the type of its request field (an empty cell is null). The answer is
MLflow's: ``{"predictions": [score, ...]}``, the calibrated probability of each record in order.
Columns are given by name: a ``dataframe_split`` without ``columns`` and tensors without
names cannot say which value is which field, so they are refused.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

from mlprod.features.requests import RequestField
from mlprod.serve.bodies import check_count, describe, record_list, reject
from mlprod.serve.contract import FieldProblem
from mlprod.serve.errors_http import HttpError

SHAPES = ("dataframe_split", "dataframe_records", "inputs", "instances")
PARAMS = "params"
_SHAPE_LIST = ", ".join(f"'{s}'" for s in SHAPES)


def _refuse(message: str) -> HttpError:
    return HttpError(422, message)


def mlflow_records(body: Any, limit: int) -> list[dict[str, Any]]:
    """The records of a JSON body in one of MLflow's four shapes."""
    if not isinstance(body, dict):
        raise _refuse(
            f"expected a JSON object with one of {_SHAPE_LIST} (MLflow's scoring protocol), "
            f"got {describe(body)}"
        )
    unknown = sorted(set(body) - {*SHAPES, PARAMS})
    shapes = [s for s in SHAPES if s in body]
    if unknown or len(shapes) != 1:
        found = ", ".join(f"'{k}'" for k in sorted(body)) or "no key"
        raise _refuse(f"expected exactly one of {_SHAPE_LIST} and optionally 'params', got {found}")
    if not isinstance(body.get(PARAMS, {}), dict):
        raise _refuse(f"'params' must be an object, got {describe(body[PARAMS])}")
    shape = shapes[0]
    value = body[shape]
    if shape == "dataframe_split":
        return _split_records(value, limit)
    if isinstance(value, list):
        return record_list(value, limit, shape)
    if isinstance(value, dict) and shape != "dataframe_records":
        return _column_records(value, shape, limit)
    expected = "a list of records" if shape == "dataframe_records" else "records or columns"
    raise _refuse(f"'{shape}' must hold {expected}, got {describe(value)}")


def _column_records(columns: dict[str, Any], shape: str, limit: int) -> list[dict[str, Any]]:
    """``{"a": [1, 3], "b": [2, 4]}`` -> two records; all scalars -> one record."""
    if not columns:
        raise _refuse(f"'{shape}' holds no column")
    lists = [isinstance(v, list) for v in columns.values()]
    if not any(lists):
        return [dict(columns)]
    if not all(lists):
        scalar = next(name for name, v in columns.items() if not isinstance(v, list))
        raise _refuse(
            f"'{shape}' must map every column to a list of values, "
            f"but '{scalar}' holds {describe(columns[scalar])}"
        )
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"'{n}' has {k}" for n, k in sorted(lengths.items()))
        raise _refuse(f"the columns of '{shape}' have different lengths: {shown}")
    count = next(iter(lengths.values()))
    check_count(count, limit)
    names = list(columns)
    values = list(columns.values())
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _split_records(split: Any, limit: int) -> list[dict[str, Any]]:
    """``{"columns": [...], "data": [[...], ...], "index": [...]}`` -> records (index ignored)."""
    if not isinstance(split, dict):
        raise _refuse(f"'dataframe_split' must be an object, got {describe(split)}")
    extra = sorted(set(split) - {"columns", "data", "index"})
    if extra or "data" not in split or "columns" not in split:
        found = ", ".join(f"'{k}'" for k in sorted(split)) or "no key"
        raise _refuse(
            f"'dataframe_split' must have 'columns' and 'data' (and optionally 'index'), "
            f"got {found}"
        )
    columns, data, index = split["columns"], split["data"], split.get("index")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _refuse("'dataframe_split.columns' must be a list of field names (strings)")
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise _refuse(f"'dataframe_split.columns' names {twice[0]!r} more than once")
    if not isinstance(data, list):
        raise _refuse(f"'dataframe_split.data' must be a list of rows, got {describe(data)}")
    check_count(len(data), limit)
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise _refuse(
            f"'dataframe_split.index' must be a list with one entry per row ({len(data)})"
        )
    problems = [
        FieldProblem(
            i,
            "",
            f"expected a row of {len(columns)} values in 'dataframe_split.data', "
            + (f"got {len(row)}" if isinstance(row, list) else f"got {describe(row)}"),
        )
        for i, row in enumerate(data)
        if not isinstance(row, list) or len(row) != len(columns)
    ]
    if problems:
        raise reject(problems)
    return [dict(zip(columns, row, strict=True)) for row in data]


def csv_records(body: bytes, fields: Sequence[RequestField], limit: int) -> list[dict[str, Any]]:
    """The records of a CSV body, each cell converted by the type of its request field; a cell
    that does not convert is kept as text, so the service names it in its 422."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HttpError(400, "the CSV body is not valid UTF-8 text") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as error:
        raise HttpError(400, f"the request body is not valid CSV: {error}") from None
    rows = [row for row in rows if row]  # blank lines carry no record
    if not rows:
        raise _refuse("the CSV body is empty; expected a header row of field names, then rows")
    header, data = rows[0], rows[1:]
    check_count(len(data), limit)
    convert = {f.name: _CONVERTERS.get(f.type, _text) for f in fields}
    unknown = [name for name in header if name not in convert]
    if unknown or len(set(header)) != len(header):
        problem = f"unknown field {unknown[0]!r}" if unknown else "a field named twice"
        raise _refuse(
            f"the CSV header row has {problem}; expected the request fields "
            + ", ".join(f"'{n}'" for n in convert)
        )
    converters = [convert.get(name, _text) for name in header]
    problems = [
        FieldProblem(i, "", f"expected {len(header)} cells as in the header row, got {len(row)}")
        for i, row in enumerate(data)
        if len(row) != len(header)
    ]
    if problems:
        raise reject(problems)
    return [
        {name: to(cell) for name, to, cell in zip(header, converters, row, strict=True)}
        for row in data
    ]


def _text(cell: str) -> Any:
    return None if cell == "" else cell


def _int(cell: str) -> Any:
    try:
        return int(cell) if cell else None
    except ValueError:
        return cell


def _float(cell: str) -> Any:
    try:
        value = float(cell) if cell else None
    except ValueError:
        return cell
    return value if value is None or math.isfinite(value) else cell


_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _bool(cell: str) -> Any:
    return None if cell == "" else _BOOLS.get(cell.lower(), cell)


_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": _int, "float": _float, "bool": _bool}
