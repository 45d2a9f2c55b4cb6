"""DuckDB's meaning of values, one row at a time: casts, comparison and arithmetic.

These run when a row is evaluated; what DuckDB refuses raises ``_RowError``, which the
compiled callable turns into a ``FeatureError``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from decimal import ROUND_HALF_UP, Context, Decimal
from decimal import InvalidOperation as _InvalidDecimal
from functools import lru_cache
from typing import Any


class _RowError(Exception):
    """A value DuckDB would refuse for this row; the callable re-raises it as FeatureError."""


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DEC = Context(prec=100)
_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)
_INF = math.inf
_HW_NAN = -math.nan  # the NaN an x86 FPU makes (sign bit set); DuckDB prints it as -nan


# --- comparison -------------------------------------------------------------------------------


def _cmp(a: Any, b: Any) -> int:
    """DuckDB's order of two non-NULL values: -1, 0 or 1 (NaN is above all, equal to itself)."""
    if type(a) is not type(b):
        a, b = _comparable(a, b)
    if type(a) is float:
        a_nan, b_nan = a != a, b != b
        if a_nan or b_nan:
            return int(a_nan) - int(b_nan)
    return int(a > b) - int(a < b)


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    ta, tb = type(a), type(b)
    if ta is str or tb is str:  # DuckDB casts the text to the other side's type
        return (_cast_like(a, b), b) if ta is str else (a, _cast_like(b, a))
    if ta is bool or tb is bool:
        a, b = (int(a) if ta is bool else a), (int(b) if tb is bool else b)
        ta, tb = type(a), type(b)
    if ta in _NUM_KINDS and tb in _NUM_KINDS:
        return (float(a), float(b)) if float in (ta, tb) else (a, b)
    if ta is dt.date and tb is dt.datetime:
        return _midnight(a), b
    if ta is dt.datetime and tb is dt.date:
        return a, _midnight(b)
    if ta is tb:
        return a, b
    raise _RowError(f"cannot compare {_kind(a)} with {_kind(b)}")


_NUM_KINDS = (int, float, Decimal)
# --- arithmetic -------------------------------------------------------------------------------


def _kind(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a double",
        Decimal: "a decimal",
        str: "text",
        dt.datetime: "a timestamp",
        dt.date: "a date",
        dt.timedelta: "an interval",
    }.get(type(v), type(v).__name__)


def _midnight(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day)


def _checked(v: int, bounds: tuple[int, int], what: str) -> int:
    if bounds[0] <= v <= bounds[1]:
        return v
    raise _RowError(f"{what} overflows {'INTEGER' if bounds == _INT32 else 'BIGINT'} ({v})")


def _numbers(a: Any, b: Any, op: str) -> tuple[Any, Any]:
    """Both operands in one numeric kind: DOUBLE over DECIMAL over integers, as DuckDB."""
    ta, tb = type(a), type(b)
    if ta not in _NUM_KINDS or tb not in _NUM_KINDS:
        raise _RowError(f"cannot apply {op} to {_kind(a)} and {_kind(b)}")
    if ta is float or tb is float:
        return float(a), float(b)
    if ta is Decimal or tb is Decimal:
        return Decimal(a), Decimal(b)
    return a, b


def _add(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    ta, tb = type(a), type(b)
    if ta is dt.timedelta or tb is dt.timedelta or isinstance(a, dt.date) or isinstance(b, dt.date):
        if ta is dt.timedelta and tb is not dt.timedelta:
            a, b, ta, tb = b, a, tb, ta
        if tb is dt.timedelta and ta in (dt.timedelta, dt.datetime):
            return a + b
        if tb is dt.timedelta and ta is dt.date:
            return _midnight(a) + b
        if ta is int and tb is dt.date:
            a, b, ta, tb = b, a, tb, ta
        if ta is dt.date and tb is int:
            return a + dt.timedelta(days=b)
        raise _RowError(f"cannot add {_kind(a)} and {_kind(b)}")
    x, y = _numbers(a, b, "+")
    if type(x) is int:
        return _checked(x + y, bounds, "addition")
    return _DEC.add(x, y) if type(x) is Decimal else x + y


def _sub(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    ta, tb = type(a), type(b)
    if isinstance(a, dt.date) or ta is dt.timedelta:
        if ta is dt.date and tb is dt.date:
            return (a - b).days
        if ta is dt.date and tb is int:
            return a - dt.timedelta(days=b)
        if ta is dt.date and tb is not int:
            a, ta = _midnight(a), dt.datetime
        if tb is dt.date:
            b, tb = _midnight(b), dt.datetime
        if (ta, tb) in (
            (dt.datetime, dt.timedelta),
            (dt.datetime, dt.datetime),
            (dt.timedelta, dt.timedelta),
        ):
            return a - b
        raise _RowError(f"cannot subtract {_kind(b)} from {_kind(a)}")
    x, y = _numbers(a, b, "-")
    if type(x) is int:
        return _checked(x - y, bounds, "subtraction")
    return _DEC.subtract(x, y) if type(x) is Decimal else x - y


def _mul(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    if type(a) is dt.timedelta or type(b) is dt.timedelta:
        span, factor = (a, b) if type(a) is dt.timedelta else (b, a)
        if type(factor) in _NUM_KINDS and type(span) is dt.timedelta:
            product = span * (float(factor) if type(factor) is Decimal else factor)
            _checked(product // _US, _INT64, "interval multiplication")
            return product
        raise _RowError(f"cannot multiply {_kind(a)} by {_kind(b)}")
    x, y = _numbers(a, b, "*")
    if type(x) is int:
        return _checked(x * y, bounds, "multiplication")
    return _DEC.multiply(x, y) if type(x) is Decimal else x * y


def _fdiv(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    """``/`` is DOUBLE division; by zero it gives ±inf or NaN (DuckDB 2.0), never an error."""
    if type(a) is dt.timedelta and type(b) in _NUM_KINDS:
        return a / b
    x, y = _numbers(a, b, "/")
    x, y = float(x), float(y)
    if y == 0.0:
        if x != x or x == 0.0:
            return x if x != x else _HW_NAN
        return math.copysign(_INF, x) * math.copysign(1.0, y)
    return x / y


def _idiv(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    """``//`` truncates integers; on DOUBLE or DECIMAL it is plain division; by zero an error."""
    x, y = _numbers(a, b, "//")
    if y == 0:
        raise _RowError("integer division by zero")
    if type(x) is int:
        q = abs(x) // abs(y)
        return _checked(q if (x < 0) == (y < 0) else -q, bounds, "division")
    return float(x) / float(y)


def _mod(a: Any, b: Any, bounds: tuple[int, int]) -> Any:
    """``%`` keeps the sign of the dividend; by zero an error, except on DOUBLE (NaN)."""
    x, y = _numbers(a, b, "%")
    if type(x) is float:
        if x != x or y != y:
            return x if x != x else y
        if y == 0.0 or math.isinf(x):
            return _HW_NAN
        return math.fmod(x, y)
    if y == 0:
        raise _RowError("modulo by zero")
    if type(x) is Decimal:
        return _DEC.remainder(x, y)
    r = abs(x) % abs(y)
    return -r if x < 0 else r


# --- casts ----------------------------------------------------------------------------------------


def _to_int(v: Any, bounds: tuple[int, int] = _INT64) -> int:
    t = type(v)
    if t is int or t is bool:
        r = int(v)
    elif t is float:
        if not math.isfinite(v):
            raise _RowError(f"cannot cast {v} to an integer")
        r = round(v)  # DOUBLE to integer rounds half to even
    elif t is Decimal:
        r = int(v.to_integral_value(ROUND_HALF_UP))  # DECIMAL rounds half away from zero
    elif t is str:
        r = _parse_int(v)
    else:
        raise _RowError(f"cannot cast {_kind(v)} to an integer")
    return _checked(r, bounds, "the cast")


def _parse_int(text: str) -> int:
    s = text.strip()
    if re.fullmatch(r"[+-]?\d+(?:_\d+)*", s):
        return int(s)
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        return int(s, 16)
    try:
        return int(Decimal(s).to_integral_value(ROUND_HALF_UP))
    except (_InvalidDecimal, ValueError, OverflowError):
        raise _RowError(f"cannot cast '{text}' to an integer") from None


def _to_double(v: Any) -> float:
    t = type(v)
    if t in (int, bool, float, Decimal):
        return float(v)
    if t is str:
        try:
            return float(v.strip())
        except ValueError:
            raise _RowError(f"cannot cast '{v}' to DOUBLE") from None
    raise _RowError(f"cannot cast {_kind(v)} to DOUBLE")


def _to_float32(v: Any) -> float:
    try:
        return float(struct.unpack("f", struct.pack("f", _to_double(v)))[0])
    except OverflowError:
        raise _RowError(f"{v} is out of range for FLOAT") from None


_TRUE_TEXT = {"true", "t", "yes", "y", "1"}
_FALSE_TEXT = {"false", "f", "no", "n", "0"}


def _to_bool(v: Any) -> bool:
    t = type(v)
    if t is bool:
        return bool(v)
    if t in _NUM_KINDS:
        return bool(v != 0)
    if t is str:
        s = v.lower()  # unlike numbers, DuckDB does not strip spaces here
        if s in _TRUE_TEXT or s in _FALSE_TEXT:
            return s in _TRUE_TEXT
        raise _RowError(f"cannot cast '{v}' to BOOLEAN")
    raise _RowError(f"cannot cast {_kind(v)} to BOOLEAN")


def _to_timestamp(v: Any) -> dt.datetime:
    t = type(v)
    if t is dt.datetime:
        return v  # type: ignore[no-any-return]
    if t is dt.date:
        return _midnight(v)
    if t is str:
        return _parse_timestamp(v)
    raise _RowError(f"cannot cast {_kind(v)} to TIMESTAMP")


_TIMESTAMP_TEXT = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.(\d+))?)?"
    r"\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)


@lru_cache(maxsize=256)
def _parse_timestamp(text: str) -> dt.datetime:
    """ISO dates and times as DuckDB reads them; a zone offset is ignored, as DuckDB does."""
    m = _TIMESTAMP_TEXT.fullmatch(text.strip())
    if m is None:
        raise _RowError(f"cannot cast '{text}' to TIMESTAMP")
    year, month, day, hour, minute, second, fraction = m.groups()
    try:
        return dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "")[:6].ljust(6, "0")),
        )
    except ValueError:
        raise _RowError(f"cannot cast '{text}' to TIMESTAMP") from None


def _to_date(v: Any) -> dt.date:
    t = type(v)
    if t is dt.date:
        return v  # type: ignore[no-any-return]
    if t is dt.datetime:
        return v.date()  # type: ignore[no-any-return]
    if t is str:
        return _parse_timestamp(v).date()
    raise _RowError(f"cannot cast {_kind(v)} to DATE")


def _to_text(v: Any) -> str:
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        if v != v:
            return "-nan" if math.copysign(1.0, v) < 0 else "nan"
        return repr(v)  # DuckDB prints the shortest round-trip form, as Python does
    if t is Decimal:
        return format(v, "f")
    if t is dt.datetime:
        text = f"{v.date().isoformat()} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        return text + f".{v.microsecond:06d}".rstrip("0") if v.microsecond else text
    if t is dt.date:
        return v.isoformat()  # type: ignore[no-any-return]
    raise _RowError(f"cannot cast {_kind(v)} to VARCHAR online")


def _cast_like(text: str, other: Any) -> Any:
    """Text compared with a value of another type is cast to that type, as DuckDB does."""
    t = type(other)
    if t is int:
        return _to_int(text)
    if t is float:
        return _to_double(text)
    if t is Decimal:
        try:
            return Decimal(text.strip())
        except _InvalidDecimal:
            raise _RowError(f"cannot cast '{text}' to a number") from None
    if t is bool:
        return _to_bool(text)
    if t is dt.datetime:
        return _to_timestamp(text)
    if t is dt.date:
        return _to_date(text)
    raise _RowError(f"cannot compare text with {_kind(other)}")


def _truth(v: Any) -> bool | None:
    if v is None or v is True or v is False:
        return v  # type: ignore[no-any-return]
    return _to_bool(v)  # DuckDB casts implicitly: 1 AND TRUE, 'true' AND TRUE
