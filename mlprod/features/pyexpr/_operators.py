"""Compilers of SQL operators: logic, comparison, choice (CASE, COALESCE, ...), arithmetic
and casts."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from mlprod.features.pyexpr._nodes import (
    _NUMERIC,
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
    _fold,
    _known_null,
    _Node,
)
from mlprod.features.pyexpr._values import (
    _INT32,
    _INT64,
    _add,
    _checked,
    _cmp,
    _fdiv,
    _idiv,
    _kind,
    _midnight,
    _mod,
    _mul,
    _RowError,
    _sub,
    _to_bool,
    _to_date,
    _to_double,
    _to_float32,
    _to_int,
    _to_text,
    _to_timestamp,
    _truth,
)

if TYPE_CHECKING:
    from mlprod.features.pyexpr._compiler import _Compiler


# --- logic ----------------------------------------------------------------------------------


def _and(c: _Compiler, node: exp.Expr) -> _Node:
    f, g = (n.fn for n in c.args(node, "this", "expression"))

    def and_(row: Row) -> Any:
        a, b = _truth(f(row)), _truth(g(row))  # DuckDB evaluates both sides (and their errors)
        if a is False or b is False:
            return False
        return None if a is None or b is None else True

    return _fold(and_, BOOL, c.args(node, "this", "expression"))


def _or(c: _Compiler, node: exp.Expr) -> _Node:
    children = c.args(node, "this", "expression")
    f, g = (n.fn for n in children)

    def or_(row: Row) -> Any:
        a, b = _truth(f(row)), _truth(g(row))
        if a is True or b is True:
            return True
        return None if a is None or b is None else False

    return _fold(or_, BOOL, children)


def _not(c: _Compiler, node: exp.Expr) -> _Node:
    return c.call(BOOL, lambda v: not _truth(v), [c.arg(node)])


def _is(c: _Compiler, node: exp.Expr) -> _Node:
    child, target = c.arg(node), node.expression
    f = child.fn
    if isinstance(target, exp.Null):
        return _fold(lambda row: f(row) is None, BOOL, [child])
    if isinstance(target, exp.Boolean):
        want = bool(target.this)
        return _fold(lambda row: _truth(f(row)) is want, BOOL, [child])
    raise c.unsupported(f"IS {target.sql('duckdb')}")


def _distinct(equal: bool) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        children = c.args(node, "this", "expression")
        f, g = (n.fn for n in children)

        def same(row: Row) -> bool:
            a, b = f(row), g(row)
            if a is None or b is None:
                return (a is None and b is None) is equal
            return (_cmp(a, b) == 0) is equal

        return _fold(same, BOOL, children)

    return handler


# --- comparison -------------------------------------------------------------------------------


_COMPARE: dict[type[exp.Expr], Callable[[int], bool]] = {
    exp.EQ: lambda r: r == 0,
    exp.NEQ: lambda r: r != 0,
    exp.LT: lambda r: r < 0,
    exp.LTE: lambda r: r <= 0,
    exp.GT: lambda r: r > 0,
    exp.GTE: lambda r: r >= 0,
}
_FAST_COMPARE: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
}


def _comparison(c: _Compiler, node: exp.Expr) -> _Node:
    test, fast = _COMPARE[type(node)], _FAST_COMPARE[type(node)]
    left, right = c.args(node, "this", "expression")
    if _known_null(left) or _known_null(right):
        return _const(None, BOOL)
    f, g = left.fn, right.fn
    if right.const and not left.const:  # the usual `column < 500`: the constant is bound now
        b = g({})
        same = type(b)
        if same is not float or b != b:
            same = _NO_TYPE  # a float may be NaN, which Python orders differently

        def compare_constant(row: Row) -> Any:
            a = f(row)
            if a is None:
                return None
            return fast(a, b) if type(a) is same else test(_cmp(a, b))

        return _Node(compare_constant, BOOL)

    def compare(row: Row) -> Any:
        a, b = f(row), g(row)
        if a is None or b is None:
            return None
        ta = type(a)
        return fast(a, b) if ta is type(b) and ta is not float else test(_cmp(a, b))

    return _fold(compare, BOOL, [left, right])


class _NO_TYPE:  # a type no value has
    pass


def _compared(c: _Compiler, nodes: Sequence[_Node]) -> list[RowFunction]:
    """BETWEEN and IN compare all their values in one common type (DOUBLE if any is)."""
    try:
        return _common(c, nodes)[2]
    except UnsupportedExpression:  # text against a timestamp and the like: cast pairwise
        return [n.fn for n in nodes]


def _between(c: _Compiler, node: exp.Expr) -> _Node:
    if node.args.get("symmetric"):
        raise c.unsupported("BETWEEN SYMMETRIC")
    children = c.args(node, "this", "low", "high")
    f, lo, hi = _compared(c, children)

    def between(row: Row) -> Any:
        v, low, high = f(row), lo(row), hi(row)
        above = None if v is None or low is None else _cmp(v, low) >= 0
        below = None if v is None or high is None else _cmp(v, high) <= 0
        if above is False or below is False:
            return False
        return None if above is None or below is None else True

    return _fold(between, BOOL, children)


def _in(c: _Compiler, node: exp.Expr) -> _Node:
    if any(node.args.get(k) for k in ("query", "unnest", "field")):
        raise c.unsupported("IN over a query, list or field")
    children = c.args(node, "this", "expressions")
    f, *options = _compared(c, children)

    def in_(row: Row) -> Any:
        v = f(row)
        values = [o(row) for o in options]
        if v is None:
            return None
        if any(x is not None and _cmp(v, x) == 0 for x in values):
            return True
        return None if None in values else False

    return _fold(in_, BOOL, children)


# --- choice -------------------------------------------------------------------------------------


def _unify(c: _Compiler, kinds: Sequence[str]) -> str:
    """DuckDB's common type of CASE branches, COALESCE arguments and the like."""
    known = {k for k in kinds if k != NULL}
    if not known:
        return NULL
    if ANY in known:
        return ANY
    if len(known) == 1:
        return known.pop()
    if known <= _NUMERIC:
        return next(k for k in (DOUBLE, DECIMAL, BIGINT, INT) if k in known)
    if known == {TS, DATE}:
        return TS
    raise c.unsupported(f"a choice between values of types {', '.join(sorted(known))}")


def _scale(nodes: Sequence[_Node]) -> int:
    return max((n.scale for n in nodes if n.type == DECIMAL), default=0)


def _convert(node: _Node, kind: str, scale: int = 0) -> RowFunction:
    f = node.fn
    if kind == DECIMAL and (node.type != DECIMAL or node.scale != scale):
        step = Decimal(1).scaleb(-scale)
        return lambda row: None if (v := f(row)) is None else Decimal(v).quantize(step)
    if node.type == kind or kind in (ANY, NULL, BIGINT, INT):
        return f
    if kind == DOUBLE:
        return lambda row: None if (v := f(row)) is None else float(v)
    if kind == TS:
        return lambda row: _midnight(v) if type(v := f(row)) is dt.date else v
    return f


def _case(c: _Compiler, node: exp.Expr) -> _Node:
    operand = c.compile(node.this) if node.this is not None else None
    ifs = node.args.get("ifs") or []
    conditions = [c.arg(i, "this") for i in ifs]
    results = [c.arg(i, "true") for i in ifs]
    default = c.compile(node.args["default"]) if node.args.get("default") else _const(None, NULL)
    return _choice(c, operand, conditions, results, default)


def _if(c: _Compiler, node: exp.Expr) -> _Node:
    condition, then = c.arg(node, "this"), c.arg(node, "true")
    otherwise = c.arg(node, "false") if node.args.get("false") else _const(None, NULL)
    return _choice(c, None, [condition], [then], otherwise)


def _iff(c: _Compiler, node: exp.Expr) -> _Node:
    if len(node.expressions) != 3:
        raise c.unsupported("iff() without exactly three arguments")
    condition, then, otherwise = (c.compile(e) for e in node.expressions)
    return _choice(c, None, [condition], [then], otherwise)


def _common(c: _Compiler, nodes: Sequence[_Node]) -> tuple[str, int, list[RowFunction]]:
    """The common type of ``nodes`` and each node's closure converted to it."""
    kind, scale = _unify(c, [n.type for n in nodes]), _scale(nodes)
    return kind, scale, [_convert(n, kind, scale) for n in nodes]


def _choice(
    c: _Compiler,
    operand: _Node | None,
    conditions: Sequence[_Node],
    results: Sequence[_Node],
    default: _Node,
) -> _Node:
    kind, scale, fns = _common(c, [*results, default])
    pairs = [(cond.fn, result) for cond, result in zip(conditions, fns, strict=False)]
    otherwise = fns[-1]
    children = [*conditions, *results, default]
    if operand is None:

        def searched(row: Row) -> Any:
            for cond, result in pairs:
                v = cond(row)
                if v is True or (v is not None and v is not False and _to_bool(v)):
                    return result(row)
            return otherwise(row)

        return _fold(searched, kind, children)._replace(scale=scale)
    subject = operand.fn

    def simple(row: Row) -> Any:
        v = subject(row)
        for cond, result in pairs:
            w = cond(row)
            if v is not None and w is not None and _cmp(v, w) == 0:
                return result(row)
        return otherwise(row)

    return _fold(simple, kind, [operand, *children])._replace(scale=scale)


def _coalesce(c: _Compiler, node: exp.Expr) -> _Node:
    children = c.args(node, "this", "expressions")
    kind, scale, fns = _common(c, children)

    def coalesce(row: Row) -> Any:
        for f in fns:
            v = f(row)
            if v is not None:
                return v
        return None

    return _fold(coalesce, kind, children)._replace(scale=scale)


def _nullif(c: _Compiler, node: exp.Expr) -> _Node:
    children = c.args(node, "this", "expression")
    if _known_null(children[0]):
        return _const(None, children[0].type)
    f, g = (n.fn for n in children)

    def nullif(row: Row) -> Any:
        a, b = f(row), g(row)
        return None if a is not None and b is not None and _cmp(a, b) == 0 else a

    return _fold(nullif, children[0].type, children)._replace(scale=children[0].scale)


def _extreme(biggest: bool) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        children = c.args(node, "this", "expressions")
        kind, scale, fns = _common(c, children)

        def extreme(row: Row) -> Any:
            best = None
            for f in fns:
                v = f(row)
                if v is not None and (
                    best is None or ((_cmp(v, best) > 0) is biggest and _cmp(v, best) != 0)
                ):
                    best = v
            return best

        return _fold(extreme, kind, children)._replace(scale=scale)

    return handler


# --- arithmetic -------------------------------------------------------------------------------


_ARITHMETIC: dict[type[exp.Expr], Callable[[Any, Any, tuple[int, int]], Any]] = {
    exp.Add: _add,
    exp.Sub: _sub,
    exp.Mul: _mul,
    exp.Div: _fdiv,
    exp.IntDiv: _idiv,
    exp.Mod: _mod,
}


_INT_FAST: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
}


def _arith_type(node: exp.Expr, left: str, right: str) -> str:
    kinds = {left, right}
    if isinstance(node, exp.Div) and not kinds & {IVL, ANY}:
        return DOUBLE
    if kinds <= {INT}:
        return INT
    if kinds <= {INT, BIGINT}:
        return BIGINT
    if kinds <= _NUMERIC:
        if isinstance(node, exp.IntDiv) or DOUBLE in kinds:
            return DOUBLE
        return DECIMAL
    return _TIME_ARITHMETIC.get((type(node), left, right), ANY)


_TIME_ARITHMETIC: dict[tuple[type[exp.Expr], str, str], str] = {
    (exp.Sub, DATE, DATE): BIGINT,
    (exp.Sub, TS, TS): IVL,
    (exp.Sub, TS, DATE): IVL,
    (exp.Sub, DATE, TS): IVL,
    (exp.Add, TS, IVL): TS,
    (exp.Add, IVL, TS): TS,
    (exp.Sub, TS, IVL): TS,
    (exp.Add, DATE, IVL): TS,
    (exp.Add, IVL, DATE): TS,
    (exp.Sub, DATE, IVL): TS,
    (exp.Add, DATE, INT): DATE,
    (exp.Add, INT, DATE): DATE,
    (exp.Sub, DATE, INT): DATE,
    (exp.Add, IVL, IVL): IVL,
    (exp.Sub, IVL, IVL): IVL,
    (exp.Mul, IVL, INT): IVL,
    (exp.Mul, INT, IVL): IVL,
    (exp.Mul, IVL, BIGINT): IVL,
    (exp.Mul, BIGINT, IVL): IVL,
    (exp.Mul, IVL, DOUBLE): IVL,
    (exp.Mul, DOUBLE, IVL): IVL,
}


def _arithmetic(c: _Compiler, node: exp.Expr) -> _Node:
    left, right = c.args(node, "this", "expression")
    kind = _arith_type(node, left.type, right.type)
    if _known_null(left) or _known_null(right):
        return _const(None, kind)
    op, bounds = _ARITHMETIC[type(node)], _INT32 if kind == INT else _INT64
    scale = 0
    if kind == DECIMAL:
        both = (left.scale, right.scale)
        scale = sum(both) if isinstance(node, exp.Mul) else max(both)
    f, g = left.fn, right.fn
    if type(node) in (exp.Add, exp.Sub, exp.Mul):
        fast = _INT_FAST[type(node)]
        low, high = bounds
        if right.const and type(right.fn({})) is int and not left.const:
            b = right.fn({})

            def int_constant(row: Row) -> Any:
                a = f(row)
                if a is None:
                    return None
                if type(a) is int:
                    v = fast(a, b)
                    if low <= v <= high:
                        return v
                return op(a, b, bounds)

            return _Node(int_constant, kind, scale=scale)

        def int_first(row: Row) -> Any:
            a, b = f(row), g(row)
            if a is None or b is None:
                return None
            if type(a) is int and type(b) is int:
                v = fast(a, b)
                if low <= v <= high:
                    return v
            return op(a, b, bounds)

        return _fold(int_first, kind, [left, right])._replace(scale=scale)

    def arith(row: Row) -> Any:
        a, b = f(row), g(row)
        return None if a is None or b is None else op(a, b, bounds)

    return _fold(arith, kind, [left, right])._replace(scale=scale)


def _neg(c: _Compiler, node: exp.Expr) -> _Node:
    child = c.arg(node)
    bounds = _INT32 if child.type == INT else _INT64

    def neg(v: Any) -> Any:
        if type(v) is int:
            return _checked(-v, bounds, "negation")
        if type(v) in (float, Decimal, dt.timedelta):
            return -v
        raise _RowError(f"cannot negate {_kind(v)}")

    return c.call(child.type, neg, [child])._replace(scale=child.scale)


# --- casts ----------------------------------------------------------------------------------------


_CASTS: dict[exp.DType, tuple[str, Callable[[Any], Any]]] = {
    exp.DType.BIGINT: (BIGINT, _to_int),
    exp.DType.INT: (INT, lambda v: _to_int(v, _INT32)),
    exp.DType.SMALLINT: (INT, lambda v: _to_int(v, (-(2**15), 2**15 - 1))),
    exp.DType.TINYINT: (INT, lambda v: _to_int(v, (-128, 127))),
    exp.DType.DOUBLE: (DOUBLE, _to_double),
    exp.DType.FLOAT: (FLOAT, _to_float32),
    exp.DType.TEXT: (TEXT, _to_text),
    exp.DType.VARCHAR: (TEXT, _to_text),
    exp.DType.BOOLEAN: (BOOL, _to_bool),
    exp.DType.TIMESTAMP: (TS, _to_timestamp),
    exp.DType.TIMESTAMPNTZ: (TS, _to_timestamp),
    exp.DType.DATETIME: (TS, _to_timestamp),
    exp.DType.DATE: (DATE, _to_date),
}


def _cast(c: _Compiler, node: exp.Expr) -> _Node:
    target = node.args["to"]
    found = _CASTS.get(target.this)
    if found is None or (
        target.expressions and target.this not in (exp.DType.TEXT, exp.DType.VARCHAR)
    ):
        raise c.unsupported(f"CAST to {target.sql('duckdb')}")
    kind, convert = found
    child = c.arg(node)
    if child.type == IVL and kind == TEXT:
        raise c.unsupported("CAST of an INTERVAL to VARCHAR")
    if isinstance(node, exp.TryCast) or node.args.get("safe"):
        strict = convert

        def convert(v: Any) -> Any:
            try:
                return strict(v)
            except (_RowError, ValueError, OverflowError):
                return None

    return c.call(kind, convert, [child])


def _date_fn(c: _Compiler, node: exp.Expr) -> _Node:  # date(x) parses as CAST(x AS DATE)
    return c.call(DATE, _to_date, [c.arg(node)])
