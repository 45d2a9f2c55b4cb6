"""Config mistakes get an exact, helpful message, found without reading any data.

Names (columns, sources, features), the shape of mlprod.yaml, and the expressions only
DuckDB can judge (bound against the contracts' types in an empty database by `config check`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from expect import feature, index, raises

from mlprod import Project
from mlprod.errors import ConfigError, FeatureError

MakeProject = Callable[[dict[str, Any]], Project]


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
        "expected one of 'expr', 'lookup', 'asof', 'aggregate', 'columns'",
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


def test_the_first_broken_feature_is_named(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    """The matrix query is bound whole; when it fails, the features are bound one by one in
    dependency order, so the message names the first broken one, not any of them."""
    flights_config["features"] += [
        {"name": "late_broken", "kind": "expr", "expr": "early_broken + nofunc(hour)"},
        {"name": "early_broken", "kind": "expr", "expr": "carrier + 1"},
    ]
    with raises(
        FeatureError,
        "feature 'early_broken': Binder Error: No function matches the given name and argument "
        "types '+(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts.",
    ):
        make_project(flights_config).check()
