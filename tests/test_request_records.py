"""Live records are checked against the request schema, every problem named by field."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from mlprod.features.requests import RequestField
from mlprod.serve.contract import RequestRejected
from mlprod.serve.records import RecordParser

FIELDS = [
    RequestField("flight_id", "int", False, True),
    RequestField("origin", "string", False),
    RequestField("distance", "float", False),
    RequestField("tailnum", "string", True),
    RequestField("scheduled", "timestamp", False),
    RequestField("day", "date", True),
    RequestField("international", "bool", True),
]
PARSER = RecordParser(FIELDS, {"origin": ["EWR", "JFK", "LGA"]}, max_records=3)
GOOD: dict[str, Any] = {
    "flight_id": 7,
    "origin": "JFK",
    "distance": 1000,
    "tailnum": None,
    "scheduled": "2013-06-01T16:30:00+02:00",
    "day": "2013-06-01",
    "international": False,
}


def problems(records: list[Any]) -> list[tuple[int, str, str]]:
    with pytest.raises(RequestRejected) as caught:
        PARSER.parse(records)
    return [(p.record, p.field, p.message) for p in caught.value.problems]


def test_values_are_typed_and_times_are_utc() -> None:
    (row,) = PARSER.parse([GOOD])
    assert row == {
        "flight_id": 7,
        "origin": "JFK",
        "distance": 1000.0,
        "tailnum": None,
        "scheduled": datetime(2013, 6, 1, 14, 30),
        "day": date(2013, 6, 1),
        "international": False,
    }
    assert type(row["distance"]) is float


def test_every_problem_is_named_by_record_and_field() -> None:
    bad = {**GOOD, "flight_id": "7", "origni": "JFK", "international": 0}
    del bad["origin"]
    assert problems([GOOD, bad]) == [
        (1, "origni", "unknown field (did you mean 'origin'?)"),
        (1, "flight_id", "expected an integer, got the string '7'"),
        (1, "origin", "missing field: expected a string"),
        (1, "international", "expected true or false, got 0"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("flight_id", 1.5, "expected an integer, got 1.5"),
        ("flight_id", True, "expected an integer, got true"),
        ("flight_id", None, "null is not allowed: expected an integer"),
        ("distance", "far", "expected a number, got the string 'far'"),
        ("origin", "XYZ", "'XYZ' is not one of 'EWR', 'JFK', 'LGA'"),
        ("origin", ["JFK"], "expected a string, got a list"),
        (
            "scheduled",
            "tomorrow",
            "expected an ISO 8601 time such as '2013-06-01T14:30:00Z', got the string "
            "'tomorrow'",
        ),
        ("day", "1 June", "expected a date such as '2013-06-01', got the string '1 June'"),
        ("extra", 1, "unknown field; the request fields are 'day', 'distance', 'flight_id', "
         "'international', 'origin', 'scheduled', 'tailnum'"),
    ],
)  # fmt: skip
def test_one_wrong_value(field: str, value: Any, message: str) -> None:
    assert problems([{**GOOD, field: value}]) == [(0, field, message)]


def test_integral_floats_are_integers() -> None:
    assert PARSER.parse([{**GOOD, "flight_id": 7.0}])[0]["flight_id"] == 7


def test_limits_and_shapes() -> None:
    assert problems([]) == [(0, "", "no records to score")]
    assert problems([GOOD] * 4) == [
        (0, "", "4 records in one request; at most 3 are accepted (split the request)")
    ]
    assert problems([GOOD, [1, 2]]) == [
        (1, "", "expected an object with the request fields, got a list")
    ]


def test_the_error_message_names_the_first_problem() -> None:
    with pytest.raises(RequestRejected) as caught:
        PARSER.parse([{**GOOD, "flight_id": "x", "distance": "y"}])
    assert str(caught.value) == (
        "record 0, field 'flight_id': expected an integer, got the string 'x' (and 1 more)"
    )
