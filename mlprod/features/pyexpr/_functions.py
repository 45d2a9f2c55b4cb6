"""Compilers of SQL functions: numeric, dates and times, and text."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from mlprod.features.pyexpr._nodes import (
    BIGINT,
    BOOL,
    DATE,
    DECIMAL,
    DOUBLE,
    INT,
    IVL,
    NULL,
    TEXT,
    TS,
    Row,
    _describe,
    _fold,
    _Node,
)
from mlprod.features.pyexpr._values import (
    _DEC,
    _EPOCH,
    _HW_NAN,
    _INF,
    _INT32,
    _INT64,
    _NUM_KINDS,
    _US,
    _checked,
    _fdiv,
    _kind,
    _midnight,
    _RowError,
    _to_int,
    _to_text,
)

if TYPE_CHECKING:
    from mlprod.features.pyexpr._compiler import _Compiler


# --- numeric functions --------------------------------------------------------------------------


def _number(v: Any, name: str) -> Any:
    if type(v) not in _NUM_KINDS:
        raise _RowError(f"{name}() takes a number, not {_kind(v)}")
    return v


def _c_round(x: float) -> float:
    """C's round(): half away from zero."""
    if not math.isfinite(x):
        return x
    whole = math.floor(abs(x))
    return math.copysign(whole + 1.0 if abs(x) - whole >= 0.5 else float(whole), x)


def _c_pow(x: float, y: float) -> float:
    """C's pow(): NaN or infinity where Python's math.pow raises."""
    try:
        return math.pow(x, y)
    except OverflowError:
        odd = y.is_integer() and y % 2 == 1
        return -_INF if x < 0 and odd else _INF
    except ValueError:
        if x == 0.0 and y < 0:
            return math.copysign(_INF, x) if y.is_integer() and y % 2 == 1 else _INF
        return _HW_NAN


def _round(v: Any, places: int) -> Any:
    v = _number(v, "round")
    if type(v) is int:
        if places >= 0:
            return v
        step = 10 ** (-places)
        q = (abs(v) + step // 2) // step * step
        return q if v >= 0 else -q
    if type(v) is Decimal:
        return (
            v.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, _DEC)
            if places >= 0
            else (v.scaleb(places).to_integral_value(ROUND_HALF_UP).scaleb(-places))
        )
    x = float(v)
    if places == 0 or not math.isfinite(x):
        return _c_round(x)
    if places > 0:
        scale = _c_pow(10.0, places)
        r = _c_round(x * scale) / scale
        return x if math.isinf(r) or r != r else r
    scale = _c_pow(10.0, -places)
    r = _c_round(x / scale) * scale
    return 0.0 if math.isinf(r) or r != r else r


def _round_handler(c: _Compiler, node: exp.Expr) -> _Node:
    child = c.arg(node)
    places_node = node.args.get("decimals")
    if places_node is None:
        return c.call(child.type, lambda v: _round(v, 0), [child])
    places = c.compile(places_node)
    if places.type not in (INT, NULL):
        raise c.unsupported("round() with a non-INTEGER number of places")
    rounded = c.call(child.type, _round, [child, places])
    if child.type == DECIMAL and places.const:
        return rounded._replace(scale=max(places.fn({}) or 0, 0))
    return rounded


_WHOLE: dict[str, Callable[[float], Any]] = {
    ROUND_FLOOR: math.floor,
    ROUND_CEILING: math.ceil,
    ROUND_DOWN: math.trunc,
}


def _whole(mode: str) -> Callable[[_Compiler, exp.Expr], _Node]:
    """floor, ceil and trunc: DOUBLE for integers and doubles (trunc keeps integers)."""
    to_float: Callable[[float], Any] = _WHOLE[mode]

    def whole(v: Any) -> Any:
        v = _number(v, "floor")
        if type(v) is Decimal:
            return v.to_integral_value(mode)
        if type(v) is int:
            return v if mode == ROUND_DOWN else float(v)
        return float(to_float(v)) if math.isfinite(v) else v

    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        if node.args.get("decimals") is not None:
            raise c.unsupported(f"{_describe(node)} with a number of places")
        child = c.arg(node)
        kind = child.type
        if kind in (INT, BIGINT):
            kind = kind if mode == ROUND_DOWN else DOUBLE
        return c.call(kind, whole, [child])

    return handler


def _abs(c: _Compiler, node: exp.Expr) -> _Node:
    child = c.arg(node)
    bounds = _INT32 if child.type == INT else _INT64

    def abs_(v: Any) -> Any:
        v = _number(v, "abs")
        return _checked(abs(v), bounds, "abs()") if type(v) is int else abs(v)

    return c.call(child.type, abs_, [child])._replace(scale=child.scale)


def _sign(v: Any) -> int:
    v = _number(v, "sign")
    return 1 if v > 0 else -1 if v < 0 else 0  # NaN is neither: 0


def _double_fn(impl: Callable[..., float], *keys: str) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        def run(*values: Any) -> float:
            return impl(*(float(_number(v, "math")) for v in values))

        present = [k for k in keys or ("this",) if node.args.get(k) is not None]
        return c.call(DOUBLE, run, c.args(node, *present))

    return handler


def _c_log(base: Callable[[float], float]) -> Callable[[float], float]:
    def log(x: float) -> float:
        if x != x or x < 0:
            return math.nan
        return -_INF if x == 0 else base(x)

    return log


_LN, _LOG10, _LOG2 = _c_log(math.log), _c_log(math.log10), _c_log(math.log2)


def _sqrt(x: float) -> float:
    return _HW_NAN if x < 0 else math.sqrt(x)


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return _INF


def _log_handler(c: _Compiler, node: exp.Expr) -> _Node:
    if node.args.get("expression") is None:  # DuckDB's log(x) is the base-10 logarithm
        return _double_fn(_LOG10)(c, node)
    return _double_fn(
        lambda b, x: _LN(x) / _LN(b) if _LN(b) != 0 else _fdiv(_LN(x), 0.0, _INT64),
        "this",
        "expression",
    )(c, node)


# --- dates and times ------------------------------------------------------------------------------


def _moment(v: Any, name: str) -> dt.date:
    if isinstance(v, dt.date):
        return v
    raise _RowError(f"{name}() takes a timestamp or a date, not {_kind(v)}")


def _micros(v: dt.date) -> int:
    moment = v if type(v) is dt.datetime else _midnight(v)
    return (moment - _EPOCH) // _US


def _time_of(v: dt.date) -> dt.datetime:
    return v if type(v) is dt.datetime else _midnight(v)  # type: ignore[return-value]


_PARTS: dict[str, tuple[str, Callable[[dt.date], Any]]] = {
    "YEAR": (BIGINT, lambda d: d.year),
    "MONTH": (BIGINT, lambda d: d.month),
    "DAY": (BIGINT, lambda d: d.day),
    "HOUR": (BIGINT, lambda d: _time_of(d).hour),
    "MINUTE": (BIGINT, lambda d: _time_of(d).minute),
    "SECOND": (BIGINT, lambda d: _time_of(d).second),
    "MILLISECOND": (BIGINT, lambda d: _time_of(d).second * 1000 + _time_of(d).microsecond // 1000),
    "MICROSECOND": (BIGINT, lambda d: _time_of(d).second * 1_000_000 + _time_of(d).microsecond),
    "DOW": (BIGINT, lambda d: d.isoweekday() % 7),  # Sunday is 0
    "ISODOW": (BIGINT, lambda d: d.isoweekday()),
    "DOY": (BIGINT, lambda d: d.timetuple().tm_yday),
    "WEEK": (BIGINT, lambda d: d.isocalendar()[1]),
    "ISOYEAR": (BIGINT, lambda d: d.isocalendar()[0]),
    "YEARWEEK": (BIGINT, lambda d: d.isocalendar()[0] * 100 + d.isocalendar()[1]),
    "QUARTER": (BIGINT, lambda d: (d.month - 1) // 3 + 1),
    "EPOCH": (DOUBLE, lambda d: _micros(d) / 1e6),
}
_PART_ALIASES = {
    "DAYOFWEEK": "DOW",
    "WEEKDAY": "DOW",
    "DAYOFYEAR": "DOY",
    "WEEKOFYEAR": "WEEK",
    "MILLISECONDS": "MILLISECOND",
    "MICROSECONDS": "MICROSECOND",
    "SECONDS": "SECOND",
    "MINUTES": "MINUTE",
    "HOURS": "HOUR",
    "DAYS": "DAY",
    "MONTHS": "MONTH",
    "YEARS": "YEAR",
    "WEEKS": "WEEK",
    "QUARTERS": "QUARTER",
}


def _part(c: _Compiler, name: str, child: _Node) -> _Node:
    key = _PART_ALIASES.get(name.upper(), name.upper())
    if key not in _PARTS:
        raise c.unsupported(f"the date part '{name.lower()}'")
    if child.type == IVL:
        raise c.unsupported(f"the date part '{name.lower()}' of an INTERVAL")
    kind, get = _PARTS[key]
    label = key.lower()
    return c.call(kind, lambda v: get(_moment(v, label)), [child])


def _part_fn(name: str) -> Callable[[_Compiler, exp.Expr], _Node]:
    return lambda c, node: _part(c, name, c.arg(node))


def _part_anonymous(name: str) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        if len(node.expressions) != 1:
            raise c.unsupported(f"{name.lower()}() without exactly one argument")
        return _part(c, name, c.compile(node.expressions[0]))

    return handler


def _extract(c: _Compiler, node: exp.Expr) -> _Node:
    return _part(c, node.this.name, c.arg(node, "expression"))


def _date_part(c: _Compiler, node: exp.Expr) -> _Node:
    if len(node.expressions) != 2 or not isinstance(node.expressions[0], exp.Literal):
        raise c.unsupported("date_part() without a literal part name")
    return _part(c, node.expressions[0].this, c.compile(node.expressions[1]))


def _epoch(c: _Compiler, node: exp.Expr) -> _Node:
    def epoch(v: Any) -> float:
        if type(v) is dt.timedelta:
            return (v // _US) / 1e6
        return _micros(_moment(v, "epoch")) / 1e6

    return c.call(DOUBLE, epoch, [c.arg(node)])


def _epoch_scaled(per_micro: int, divisor: int) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        if len(node.expressions) != 1:
            raise c.unsupported("an epoch function without exactly one argument")
        child = c.compile(node.expressions[0])
        return c.call(
            BIGINT, lambda v: _micros(_moment(v, "epoch")) * per_micro // divisor, [child]
        )

    return handler


def _truncate(unit: str, v: dt.date) -> dt.datetime:
    t = _time_of(v)
    if unit in ("MICROSECOND", "MICROSECONDS"):
        return t
    if unit in ("MILLISECOND", "MILLISECONDS"):
        return t.replace(microsecond=t.microsecond // 1000 * 1000)
    if unit in ("SECOND", "SECONDS"):
        return t.replace(microsecond=0)
    if unit in ("MINUTE", "MINUTES"):
        return t.replace(second=0, microsecond=0)
    if unit in ("HOUR", "HOURS"):
        return t.replace(minute=0, second=0, microsecond=0)
    day = _midnight(t)
    if unit in ("DAY", "DAYS"):
        return day
    if unit in ("WEEK", "WEEKS"):
        return day - dt.timedelta(days=t.weekday())  # ISO weeks start on Monday
    if unit in ("MONTH", "MONTHS"):
        return day.replace(day=1)
    if unit in ("QUARTER", "QUARTERS"):
        return day.replace(month=(t.month - 1) // 3 * 3 + 1, day=1)
    if unit in ("YEAR", "YEARS"):
        return day.replace(month=1, day=1)
    if unit in ("DECADE", "DECADES"):
        return day.replace(year=t.year // 10 * 10, month=1, day=1)
    raise _RowError(f"unknown date_trunc unit '{unit}'")


_TRUNC_UNITS = {
    "MICROSECOND",
    "MILLISECOND",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "WEEK",
    "MONTH",
    "QUARTER",
    "YEAR",
    "DECADE",
}


def _date_trunc(c: _Compiler, node: exp.Expr) -> _Node:
    unit = node.args.get("unit")
    name = unit.name.upper() if isinstance(unit, exp.Var | exp.Literal) else ""
    if name.removesuffix("S") not in _TRUNC_UNITS:
        raise c.unsupported(f"date_trunc to '{name.lower() or unit}'")
    return c.call(TS, lambda v: _truncate(name, _moment(v, "date_trunc")), [c.arg(node)])


def _make_date(c: _Compiler, node: exp.Expr) -> _Node:
    def make(y: Any, m: Any, d: Any) -> dt.date:
        try:
            return dt.date(_to_int(y), _to_int(m), _to_int(d))
        except ValueError:
            raise _RowError(f"{y}-{m}-{d} is not a date") from None

    return c.call(DATE, make, c.args(node, "year", "month", "day"))


def _span(
    unit: dt.timedelta, whole: bool, bounds: tuple[int, int] = _INT64
) -> Callable[[Any], dt.timedelta]:
    micros_per = unit // _US

    def span(v: Any) -> dt.timedelta:
        if type(v) is int or (whole and type(v) is bool):
            amount = _checked(v, bounds, "the interval") * micros_per
        elif not whole and type(v) in _NUM_KINDS:
            amount = round(float(v) * micros_per) if math.isfinite(float(v)) else 2**64
        else:
            raise _RowError(f"cannot make an interval of {_kind(v)}")
        if not _INT64[0] <= amount <= _INT64[1]:
            raise _RowError(f"the interval of {v} is out of range")
        return dt.timedelta(microseconds=amount)

    return span


def _to_span(
    unit: dt.timedelta, whole: bool = True, bounds: tuple[int, int] = _INT64
) -> Callable[[_Compiler, exp.Expr], _Node]:
    span = _span(unit, whole, bounds)

    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        children = (
            [c.compile(e) for e in node.expressions]
            if isinstance(node, exp.Anonymous)
            else [c.arg(node)]
        )
        if len(children) != 1:
            raise c.unsupported("an interval function without exactly one argument")
        if whole and children[0].type in (DECIMAL, DOUBLE):
            raise c.unsupported("a whole-unit interval function of a fractional number")
        return c.call(IVL, span, children)

    return handler


# --- text ---------------------------------------------------------------------------------------


def _text(v: Any, name: str) -> str:
    if type(v) is str:
        return v  # type: ignore[no-any-return]
    raise _RowError(f"{name}() takes text, not {_kind(v)}")


def _substring(v: Any, start: Any, length: Any = None) -> str:
    """DuckDB's 1-based substring: a start of 0 sits before the first character, a negative
    start counts from the end, a negative length goes backwards; then it is clipped."""
    s = _text(v, "substring")
    size = len(s)
    begin = start - 1 if start > 0 else size + start if start < 0 else -1
    if length is None:
        end = size
    elif length >= 0:
        end = begin + length
    else:
        begin, end = begin + length, begin
    begin, end = min(max(begin, 0), size), min(max(end, 0), size)
    return s[begin:end] if begin < end else ""


def _substring_handler(c: _Compiler, node: exp.Expr) -> _Node:
    keys = ["this", "start"] + (["length"] if node.args.get("length") is not None else [])
    return c.call(TEXT, _substring, c.args(node, *keys))


def _trim(c: _Compiler, node: exp.Expr) -> _Node:
    position = (node.args.get("position") or "BOTH").upper()
    children = c.args(node, "this", *(["expression"] if node.args.get("expression") else []))

    def trim(v: Any, chars: Any = " ") -> str:
        s, cut = _text(v, "trim"), _text(chars, "trim")
        if position == "LEADING":
            return s.lstrip(cut)
        return s.rstrip(cut) if position == "TRAILING" else s.strip(cut)

    return c.call(TEXT, trim, children)


@lru_cache(maxsize=256)
def _like_pattern(pattern: str, fold: bool) -> re.Pattern[str]:
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _like(fold: bool) -> Callable[[_Compiler, exp.Expr], _Node]:
    """LIKE and ILIKE: % is any run, _ any one character; no escape character by default."""

    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        if isinstance(node.expression, exp.Escape):
            raise c.unsupported("LIKE ... ESCAPE")
        negate = bool(node.args.get("negate"))

        def like(v: Any, pattern: Any) -> bool:
            s, p = _text(v, "like"), _text(pattern, "like")
            if fold:
                s, p = s.lower(), p.lower()
            return (_like_pattern(p, fold).fullmatch(s) is not None) is not negate

        return c.call(BOOL, like, c.args(node, "this", "expression"))

    return handler


def _text_fn(
    kind: str, impl: Callable[..., Any], *keys: str
) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        name = node.sql_name().lower() if isinstance(node, exp.Func) else node.key
        return c.call(kind, lambda *vs: impl(*(_text(v, name) for v in vs)), c.args(node, *keys))

    return handler


def _concat(c: _Compiler, node: exp.Expr) -> _Node:
    children = c.args(node, "expressions")
    fns = [n.fn for n in children]
    if any(n.type == IVL for n in children):
        raise c.unsupported("concatenating an INTERVAL")

    def concat(row: Row) -> str:  # concat() skips NULLs
        return "".join(_to_text(v) for f in fns if (v := f(row)) is not None)

    return _fold(concat, TEXT, children)


def _dpipe(c: _Compiler, node: exp.Expr) -> _Node:  # a || b is NULL when either is
    children = c.args(node, "this", "expression")
    if any(n.type == IVL for n in children):
        raise c.unsupported("concatenating an INTERVAL")
    return c.call(TEXT, lambda a, b: _to_text(a) + _to_text(b), children)


def _replace(v: str, old: str, new: str) -> str:
    return v.replace(old, new) if old else v


def _right(v: str, n: Any) -> str:
    return v[-n:] if n else ""  # a negative count drops that many from the start


def _int_arg(impl: Callable[[str, int], str], name: str) -> Callable[[Any, Any], str]:
    def run(v: Any, n: Any) -> str:
        if type(n) is not int:
            raise _RowError(f"{name}() takes an integer count, not {_kind(n)}")
        return impl(_text(v, name), n)

    return run


def _int_arg_fn(
    impl: Callable[[str, int], str], key: str
) -> Callable[[_Compiler, exp.Expr], _Node]:
    def handler(c: _Compiler, node: exp.Expr) -> _Node:
        name = node.sql_name().lower() if isinstance(node, exp.Func) else node.key
        return c.call(TEXT, _int_arg(impl, name), c.args(node, "this", key))

    return handler


def _strpos(c: _Compiler, node: exp.Expr) -> _Node:
    if node.args.get("position") is not None or node.args.get("occurrence") is not None:
        raise c.unsupported("strpos() from a position")
    return c.call(
        BIGINT,
        lambda s, sub: _text(s, "strpos").find(_text(sub, "strpos")) + 1,
        c.args(node, "this", "substr"),
    )


def _float_test(test: Callable[[float], bool]) -> Callable[[_Compiler, exp.Expr], _Node]:
    return lambda c, node: c.call(BOOL, lambda v: test(float(_number(v, "isnan"))), [c.arg(node)])
