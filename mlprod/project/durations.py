"""Durations as people write them in mlprod.yaml: ``7d``, ``3h``, ``90min``, ``2 weeks``."""

from __future__ import annotations

import re
from datetime import timedelta

from mlprod.errors import did_you_mean

_UNITS: dict[str, timedelta] = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "second": timedelta(seconds=1),
    "seconds": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "mins": timedelta(minutes=1),
    "minute": timedelta(minutes=1),
    "minutes": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "hr": timedelta(hours=1),
    "hour": timedelta(hours=1),
    "hours": timedelta(hours=1),
    "d": timedelta(days=1),
    "day": timedelta(days=1),
    "days": timedelta(days=1),
    "w": timedelta(weeks=1),
    "week": timedelta(weeks=1),
    "weeks": timedelta(weeks=1),
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
EXAMPLES = "like '7d', '3h', '90min' or '2 weeks'"


def parse_duration(text: object) -> timedelta:
    """Parse a duration, raising ``ValueError`` with a message written for the user."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool) and text == 0:
        return timedelta(0)
    if isinstance(text, int | float) and not isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: a number needs a unit; write it {EXAMPLES}")
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string {EXAMPLES}")
    match = _PATTERN.match(text)
    if match is None:
        if text.strip() in {"0", ""}:
            return timedelta(0)
        raise ValueError(f"invalid duration '{text}': expected a number and a unit, {EXAMPLES}")
    number, unit = match.groups()
    if unit.lower() not in _UNITS:
        hint = did_you_mean(unit, _UNITS)
        raise ValueError(
            f"invalid duration '{text}': unknown unit '{unit}'{hint}; write it {EXAMPLES}"
        )
    return float(number) * _UNITS[unit.lower()]


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration (``7d``, ``90min``, ``0s``)."""
    micros = value // timedelta(microseconds=1)
    for suffix, unit in (
        ("w", 7 * 86400e6),
        ("d", 86400e6),
        ("h", 3600e6),
        ("min", 60e6),
        ("s", 1e6),
    ):
        if micros % unit == 0 and micros != 0:
            return f"{int(micros // unit)}{suffix}"
    return f"{micros}us" if micros else "0s"
