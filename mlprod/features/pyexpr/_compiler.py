"""The walker: compiles a tree node by node through the handler of each node type, starting
from the leaves (columns, literals, intervals)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any

from sqlglot import exp

from mlprod.errors import FeatureError
from mlprod.features.pyexpr._functions import (
    _LN,
    _abs,
    _c_pow,
    _concat,
    _date_part,
    _date_trunc,
    _double_fn,
    _dpipe,
    _epoch,
    _epoch_scaled,
    _exp,
    _extract,
    _float_test,
    _int_arg_fn,
    _like,
    _log_handler,
    _make_date,
    _part_anonymous,
    _part_fn,
    _replace,
    _right,
    _round_handler,
    _sign,
    _sqrt,
    _strpos,
    _substring_handler,
    _text_fn,
    _to_span,
    _trim,
    _whole,
)
from mlprod.features.pyexpr._nodes import (
    ANY,
    BIGINT,
    BOOL,
    DATE,
    DECIMAL,
    DOUBLE,
    FLOAT,
    INT,
    IVL,
    NULL,
    TEXT,
    TS,
    Row,
    RowFunction,
    UnsupportedExpression,
    _const,
    _describe,
    _fold,
    _known_null,
    _Node,
)
from mlprod.features.pyexpr._operators import (
    _ARITHMETIC,
    _COMPARE,
    _and,
    _arithmetic,
    _between,
    _case,
    _cast,
    _coalesce,
    _comparison,
    _date_fn,
    _distinct,
    _extreme,
    _if,
    _iff,
    _in,
    _is,
    _neg,
    _not,
    _nullif,
    _or,
)
from mlprod.features.pyexpr._values import _INT32, _INT64, _US, _RowError
from mlprod.project.config import ColumnType


def compile_row_function(
    tree: exp.Expr,
    columns: Mapping[str, str] | None = None,
    *,
    types: Mapping[str, ColumnType] | None = None,
) -> RowFunction:
    """A callable giving DuckDB's value of ``tree`` for one row (a mapping of column values).

    ``columns`` maps a column name of the expression to the key to read from the row (default:
    the same name). ``types`` optionally gives a column's type as in mlprod.yaml; then a whole
    number given for a float column counts as a float, and CASE, COALESCE, LEAST and GREATEST
    give DuckDB's common type (an int branch beside a float one gives a float). Raises
    ``UnsupportedExpression`` for any construct without an evaluator.
    """
    shown = tree.this if isinstance(tree, exp.Paren) else tree
    text = shown.sql("duckdb")
    node = _Compiler(text, dict(columns or {}), dict(types or {})).compile(tree)
    fn = node.fn

    def run(row: Row) -> Any:
        try:
            value = fn(row)
        except _RowError as exc:
            raise FeatureError(f"cannot evaluate '{text}' for this row: {exc}") from None
        except KeyError as exc:
            raise FeatureError(
                f"cannot evaluate '{text}': the row has no column {exc}; pass every column "
                "the expression reads"
            ) from None
        except OverflowError as exc:
            raise FeatureError(
                f"cannot evaluate '{text}' for this row: {exc}; online evaluation covers the "
                "years 1 to 9999 and 64-bit numbers"
            ) from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise FeatureError(
                f"cannot evaluate '{text}' for this row: {exc}; pass each column as int, "
                "float, str, bool, datetime or date, as its type says"
            ) from None
        return float(value) if type(value) is Decimal else value

    return run


class _Compiler:
    """Walks a tree once; each method returns the closure for one node and its static type."""

    def __init__(self, text: str, columns: dict[str, str], types: dict[str, ColumnType]) -> None:
        self.text = text
        self.columns = columns
        self.types = types

    def unsupported(self, what: str) -> UnsupportedExpression:
        return UnsupportedExpression(
            f"cannot compile '{self.text}' for online evaluation: {what} has no online "
            "evaluator; evaluate this expression in DuckDB"
        )

    def compile(self, node: exp.Expr) -> _Node:
        handler = _HANDLERS.get(type(node))
        if handler is None:
            if isinstance(node, exp.Anonymous):
                handler = _ANONYMOUS.get(node.name.lower())
                if handler is None:
                    raise self.unsupported(f"function '{node.name.lower()}'")
            else:
                raise self.unsupported(_describe(node))
        return handler(self, node)

    def arg(self, node: exp.Expr, key: str = "this") -> _Node:
        child = node.args.get(key)
        if not isinstance(child, exp.Expr):
            raise self.unsupported(f"{_describe(node)} without its '{key}' argument")
        compiled = self.compile(child)
        if compiled.type == FLOAT and not isinstance(node, exp.Cast | exp.Paren):
            raise self.unsupported("arithmetic or functions on FLOAT (REAL) values")
        return compiled

    def args(self, node: exp.Expr, *keys: str) -> list[_Node]:
        out = [self.arg(node, k) for k in keys if k != "expressions"]
        if "expressions" in keys:
            out += [self.compile(e) for e in node.expressions]
        return out

    def call(self, kind: str, impl: Callable[..., Any], children: Sequence[_Node]) -> _Node:
        """A NULL-propagating function of its children's values."""
        if any(_known_null(c) for c in children):
            return _const(None, kind)
        fns = [c.fn for c in children]
        if len(fns) == 1:
            (f,) = fns

            def call1(row: Row) -> Any:
                v = f(row)
                return None if v is None else impl(v)

            return _fold(call1, kind, children)
        if len(fns) == 2:
            f, g = fns

            def call2(row: Row) -> Any:
                a, b = f(row), g(row)
                return None if a is None or b is None else impl(a, b)

            return _fold(call2, kind, children)

        def calln(row: Row) -> Any:
            values = [h(row) for h in fns]
            return None if None in values else impl(*values)

        return _fold(calln, kind, children)


# --- leaves -------------------------------------------------------------------------------


_COLUMN_TYPES: dict[str, str] = {
    "int": BIGINT,
    "float": DOUBLE,
    "string": TEXT,
    "bool": BOOL,
    "timestamp": TS,
    "date": DATE,
}


def _column(c: _Compiler, node: exp.Expr) -> _Node:
    name = node.name
    key = c.columns.get(name, name)
    declared = c.types.get(name)
    kind = ANY if declared is None else _COLUMN_TYPES.get(declared)
    if kind is None:
        raise c.unsupported(f"column '{name}' of type '{declared}'")
    if kind == DOUBLE:
        return _Node(lambda row: float(v) if type(v := row[key]) is int else v, kind)
    return _Node(lambda row: row[key], kind)


def _literal(c: _Compiler, node: exp.Expr) -> _Node:
    assert isinstance(node, exp.Literal)
    text = node.this
    if node.is_string:
        return _const(text, TEXT)
    if re.fullmatch(r"\d+", text):
        value = int(text)
        if value <= _INT32[1]:
            return _const(value, INT)
        if value <= _INT64[1]:
            return _const(value, BIGINT)
        raise c.unsupported(f"the integer {text} (HUGEINT)")
    if re.fullmatch(r"\d*\.\d*", text) and sum(ch.isdigit() for ch in text) <= 38:
        number = Decimal(text)
        return _const(number, DECIMAL)._replace(scale=-int(number.as_tuple().exponent))
    try:
        return _const(float(text), DOUBLE)
    except ValueError:
        raise c.unsupported(f"the number literal {text}") from None


def _boolean(c: _Compiler, node: exp.Expr) -> _Node:
    return _const(bool(node.this), BOOL)


def _null(c: _Compiler, node: exp.Expr) -> _Node:
    return _const(None, NULL)


def _paren(c: _Compiler, node: exp.Expr) -> _Node:
    return c.compile(node.this)


_INTERVAL_UNITS = {
    "MICROSECOND": _US,
    "MILLISECOND": dt.timedelta(milliseconds=1),
    "SECOND": dt.timedelta(seconds=1),
    "MINUTE": dt.timedelta(minutes=1),
    "HOUR": dt.timedelta(hours=1),
    "DAY": dt.timedelta(days=1),
    "WEEK": dt.timedelta(weeks=1),
}


def _interval(c: _Compiler, node: exp.Expr) -> _Node:
    amount, unit = node.this, node.args.get("unit")
    if not isinstance(amount, exp.Literal):
        raise c.unsupported("an INTERVAL of a computed amount (use to_minutes(...) and friends)")
    text = amount.this if unit is None else f"{amount.this} {unit.name}"
    parts = re.fullmatch(r"\s*((?:[+-]?\d+\s+[A-Za-z]+\s*)+)", text)
    if parts is None:
        raise c.unsupported(f"the interval '{text}' (only whole amounts of units)")
    total = dt.timedelta()
    for number, name in re.findall(r"([+-]?\d+)\s+([A-Za-z]+)", parts.group(1)):
        name = name.upper().removesuffix("S")
        if name not in _INTERVAL_UNITS:
            raise c.unsupported(f"the interval unit {name} (months and years have none)")
        total += int(number) * _INTERVAL_UNITS[name]
    return _const(total, IVL)


_Handler = Callable[[_Compiler, exp.Expr], _Node]
_HANDLERS: dict[type[exp.Expr], _Handler] = {
    exp.Column: _column,
    exp.Literal: _literal,
    exp.Boolean: _boolean,
    exp.Null: _null,
    exp.Paren: _paren,
    exp.Interval: _interval,
    exp.And: _and,
    exp.Or: _or,
    exp.Not: _not,
    exp.Is: _is,
    exp.NullSafeEQ: _distinct(True),
    exp.NullSafeNEQ: _distinct(False),
    **dict.fromkeys(_COMPARE, _comparison),
    exp.Between: _between,
    exp.In: _in,
    exp.Case: _case,
    exp.If: _if,
    exp.Coalesce: _coalesce,
    exp.Nullif: _nullif,
    exp.Greatest: _extreme(True),
    exp.Least: _extreme(False),
    **dict.fromkeys(_ARITHMETIC, _arithmetic),
    exp.Neg: _neg,
    exp.Cast: _cast,
    exp.TryCast: _cast,
    exp.Date: _date_fn,
    exp.Abs: _abs,
    exp.Sign: lambda c, node: c.call(INT, _sign, [c.arg(node)]),
    exp.Round: _round_handler,
    exp.Floor: _whole(ROUND_FLOOR),
    exp.Ceil: _whole(ROUND_CEILING),
    exp.Trunc: _whole(ROUND_DOWN),
    exp.Sqrt: _double_fn(_sqrt),
    exp.Cbrt: _double_fn(math.cbrt),
    exp.Ln: _double_fn(_LN),
    exp.Log: _log_handler,
    exp.Exp: _double_fn(_exp),
    exp.Pow: _double_fn(_c_pow, "this", "expression"),
    exp.IsNan: _float_test(math.isnan),
    exp.IsInf: _float_test(math.isinf),
    exp.Pi: lambda c, node: _const(math.pi, DOUBLE),
    exp.Year: _part_fn("YEAR"),
    exp.Quarter: _part_fn("QUARTER"),
    exp.Month: _part_fn("MONTH"),
    exp.Day: _part_fn("DAY"),
    exp.Hour: _part_fn("HOUR"),
    exp.Minute: _part_fn("MINUTE"),
    exp.Second: _part_fn("SECOND"),
    exp.DayOfWeek: _part_fn("DOW"),
    exp.DayOfWeekIso: _part_fn("ISODOW"),
    exp.DayOfYear: _part_fn("DOY"),
    exp.Week: _part_fn("WEEK"),
    exp.Extract: _extract,
    exp.TimeToUnix: _epoch,
    exp.TimestampTrunc: _date_trunc,
    exp.DateTrunc: _date_trunc,
    exp.DateFromParts: _make_date,
    exp.ToDays: _to_span(dt.timedelta(days=1), bounds=_INT32),
    exp.Lower: _text_fn(TEXT, str.lower, "this"),
    exp.Upper: _text_fn(TEXT, str.upper, "this"),
    exp.Length: _text_fn(BIGINT, len, "this"),
    exp.Reverse: _text_fn(TEXT, lambda s: s[::-1], "this"),
    exp.Concat: _concat,
    exp.DPipe: _dpipe,
    exp.Substring: _substring_handler,
    exp.Trim: _trim,
    exp.StartsWith: _text_fn(BOOL, str.startswith, "this", "expression"),
    exp.EndsWith: _text_fn(BOOL, str.endswith, "this", "expression"),
    exp.Contains: _text_fn(BOOL, lambda s, sub: sub in s, "this", "expression"),
    exp.Like: _like(False),
    exp.ILike: _like(True),
    exp.Replace: _text_fn(TEXT, _replace, "this", "expression", "replacement"),
    exp.Left: _int_arg_fn(lambda s, n: s[:n], "expression"),
    exp.Right: _int_arg_fn(_right, "expression"),
    exp.Repeat: _int_arg_fn(lambda s, n: s * max(n, 0), "times"),
    exp.StrPosition: _strpos,
}
_ANONYMOUS: dict[str, _Handler] = {
    "iff": _iff,
    "date_part": _date_part,
    "datepart": _date_part,
    "millisecond": _part_anonymous("MILLISECOND"),
    "microsecond": _part_anonymous("MICROSECOND"),
    "weekday": _part_anonymous("DOW"),
    "yearweek": _part_anonymous("YEARWEEK"),
    "isoyear": _part_anonymous("ISOYEAR"),
    "epoch_us": _epoch_scaled(1, 1),
    "epoch_ns": _epoch_scaled(1000, 1),
    "to_weeks": _to_span(dt.timedelta(weeks=1), bounds=_INT32),
    "to_hours": _to_span(dt.timedelta(hours=1)),
    "to_minutes": _to_span(dt.timedelta(minutes=1)),
    "to_seconds": _to_span(dt.timedelta(seconds=1), whole=False),
    "to_milliseconds": _to_span(dt.timedelta(milliseconds=1), whole=False),
    "to_microseconds": _to_span(_US),
}
