"""The request schema: the event's own columns a prediction may read, and the leak it prevents.

A column declared ``known: at_availability`` (the flights' ``dep_delay``, known once the
flight has left) can never be read from the event's own row: not by an ``expr`` feature, a
join key or the spine's filter. The request schema is derived from what the features read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from expect import raises

from mlprod import Project
from mlprod.errors import FeatureError
from mlprod.features.requests import request_fields

MakeProject = Callable[[dict[str, Any]], Project]
LEAK = (
    "mlprod.yaml: {where} reads 'dep_delay' of the spine source 'flights', which is known only "
    "at the row's availability (sources.flights.columns.dep_delay.known: at_availability); a "
    "prediction cannot see it. Aggregate it over earlier rows instead"
)


def test_the_flights_request_schema(flights_project: Project) -> None:
    fields = request_fields(flights_project.graph)
    assert [(f.name, f.type, f.nullable, f.key) for f in fields] == [
        ("flight_id", "int", False, True),
        ("hour", "int", False, False),
        ("minute", "int", False, False),
        ("year", "int", False, False),
        ("month", "int", False, False),
        ("day", "int", False, False),
        ("distance", "int", False, False),
        ("carrier", "string", False, False),
        ("origin", "string", False, False),
        ("dest", "string", False, False),
        ("tailnum", "string", True, False),
        ("flight", "int", False, False),
    ]
    # Only what the named features need (plane_age needs plane_year, keyed by tailnum).
    assert [f.name for f in request_fields(flights_project.graph, ["plane_age"])] == [
        "flight_id",
        "tailnum",
        "year",
    ]


@pytest.mark.parametrize(
    ("feature", "where"),
    [
        ({"name": "delay_now", "kind": "expr", "expr": "dep_delay * 2"}, "feature 'delay_now'"),
        (
            {"name": "by_delay", "kind": "lookup", "source": "planes",
             "keys": {"dep_delay": "year"}, "value": "seats"},
            "feature 'by_delay' key",
        ),
    ],
)  # fmt: skip
def test_a_feature_cannot_read_a_late_column_of_its_own_row(
    make_project: MakeProject, flights_config: dict[str, Any], feature: dict[str, Any], where: str
) -> None:
    flights_config["features"].append(feature)
    with raises(FeatureError, LEAK.format(where=where)):
        _ = make_project(flights_config).graph


def test_the_spine_filter_cannot_read_a_late_column(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["spine"]["filter"] = "dep_delay < 600"
    with raises(FeatureError, LEAK.format(where="spine.filter")):
        _ = make_project(flights_config).graph


def test_aggregates_over_other_rows_may_read_a_late_column(flights_project: Project) -> None:
    """The leak is the event's own row; earlier rows' delays, once available, are fair."""
    assert flights_project.graph.nodes["carrier_origin_mean_delay_7d"].deps == ("carrier", "origin")
    assert "dep_delay" not in [f.name for f in request_fields(flights_project.graph)]
