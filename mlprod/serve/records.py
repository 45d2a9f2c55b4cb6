"""Check live records against the request schema and turn JSON values into typed values.

Every problem is reported, one per field and record, in words a caller can act on:
an unknown field (with "did you mean"), a missing one, a value of the wrong type, a null where
the contract forbids it, or a value outside the contract's categories. Times are ISO 8601;
one with an offset is converted to UTC, one without is taken as UTC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from mlprod.errors import did_you_mean, one_of
from mlprod.features.requests import RequestField
from mlprod.serve.contract import FieldProblem, RequestRejected

Converter = Callable[[Any], Any]


class _Mismatch(Exception):
    """A value that does not fit its field; the message says what was expected."""


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string '{shown}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise _Mismatch(f"expected an integer, got {_describe(value)}")


def _float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _Mismatch(f"expected a number, got {_describe(value)}")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Mismatch(f"expected a string, got {_describe(value)}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Mismatch(f"expected true or false, got {_describe(value)}")


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time as naive UTC (an offset is converted; none means UTC already)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Mismatch(
                f"expected an ISO 8601 time such as '2013-06-01T14:30:00Z', got {_describe(value)}"
            ) from None
    else:
        raise _Mismatch(f"expected an ISO 8601 time as a string, got {_describe(value)}")
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Mismatch(f"expected a date such as '2013-06-01', got {_describe(value)}")


CONVERTERS: dict[str, Converter] = {
    "int": _int,
    "float": _float,
    "string": _string,
    "bool": _bool,
    "timestamp": parse_time,
    "date": _date,
}


class RecordParser:
    """Validates records for one request schema; built once per model, used per request."""

    def __init__(
        self,
        fields: Sequence[RequestField],
        categories: Mapping[str, Sequence[str]] | None = None,
        max_records: int = 1000,
    ) -> None:
        self.fields = list(fields)
        self.names = [f.name for f in fields]
        self._by_name = {f.name: f for f in fields}
        self._convert = {f.name: CONVERTERS[f.type] for f in fields}
        self._categories = {k: frozenset(v) for k, v in (categories or {}).items()}
        self.max_records = max_records

    def parse(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """Typed records, or :class:`RequestRejected` with every problem found."""
        if not records:
            raise RequestRejected([FieldProblem(0, "", "no records to score")])
        if len(records) > self.max_records:
            raise RequestRejected(
                [
                    FieldProblem(
                        0,
                        "",
                        f"{len(records)} records in one request; at most {self.max_records} "
                        "are accepted (split the request)",
                    )
                ]
            )
        problems: list[FieldProblem] = []
        parsed: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                problems.append(
                    FieldProblem(
                        index,
                        "",
                        f"expected an object with the request fields, got {_describe(record)}",
                    )
                )
                continue
            parsed.append(self._record(index, record, problems))
        if problems:
            raise RequestRejected(problems)
        return parsed

    def _record(
        self, index: int, record: Mapping[str, Any], problems: list[FieldProblem]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in record:
            if name not in self._by_name:
                hint = did_you_mean(str(name), self.names) or (
                    f"; the request fields are {one_of(self.names, 20)}"
                )
                problems.append(FieldProblem(index, str(name), f"unknown field{hint}"))
        for field in self.fields:
            name = field.name
            if name not in record:
                problems.append(
                    FieldProblem(index, name, f"missing field: expected {_expected(field)}")
                )
                continue
            value = record[name]
            if value is None:
                if not field.nullable:
                    problems.append(
                        FieldProblem(
                            index, name, f"null is not allowed: expected {_expected(field)}"
                        )
                    )
                row[name] = None
                continue
            try:
                row[name] = self._convert[name](value)
            except _Mismatch as exc:
                problems.append(FieldProblem(index, name, str(exc)))
                continue
            allowed = self._categories.get(name)
            if allowed is not None and row[name] not in allowed:
                problems.append(
                    FieldProblem(index, name, f"'{row[name]}' is not one of {one_of(allowed, 20)}")
                )
        return row


def _expected(field: RequestField) -> str:
    kind = {
        "int": "an integer",
        "float": "a number",
        "string": "a string",
        "bool": "true or false",
        "timestamp": "an ISO 8601 time",
        "date": "an ISO 8601 date",
    }[field.type]
    return kind + (" or null" if field.nullable else "")
