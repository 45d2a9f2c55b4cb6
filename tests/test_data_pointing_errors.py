"""Errors that point at the data: a bad value names its file, line, column, value and the
declared type; files are read with the contract's types, not a guess; an empty or header-only
file says so; a column the data has but the contract lacks is named as undeclared; and times
with a zone, at any precision, are read as naive UTC.

Each test writes a small file of its own (a CSV, or Parquet written by pandas) into a project
folder, and runs it through the CLI or the Python API as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import yaml
from expect import raises

from mlprod import Project
from mlprod.errors import ContractError, FeatureError, SourceError

AS_OF = datetime(2030, 1, 1)
HEADER = "id,seen_at,age,smoker,sick,income"
ROWS = [
    "1,2024-01-01 10:00:00,30,Yes,0,100",
    "2,2024-01-02 10:00:00,41,No,1,200",
    "3,2024-01-03 10:00:00,52,Yes,1,300",
    "4,2024-01-04 10:00:00,28,No,0,400",
    "5,2024-01-05 10:00:00,35,No,0,500",
    "6,2024-01-06 10:00:00,47,Yes,1,600",
    "7,2024-01-07 10:00:00,39,No,0,700",
]


def config(path: str = "people.csv", kind: str = "csv", **columns: Any) -> dict[str, Any]:
    """A project over one source of people, with a feature for age and one for smoking."""
    declared: dict[str, Any] = {
        "id": {"type": "int", "nullable": False},
        "seen_at": {"type": "timestamp", "nullable": False},
        "age": {"type": "int"},
        "smoker": {"type": "string", "categories": ["No", "Yes"]},
        "sick": {"type": "int"},
    }
    declared.update(columns)
    return {
        "name": "people",
        "sources": {"people": {"from": {"kind": kind, "path": path}, "columns": declared}},
        "spine": {
            "source": "people",
            "keys": ["id"],
            "time": "seen_at",
            "label": "sick = 1",
            "label_available_at": "seen_at",
        },
        "features": [
            {"name": "age_years", "kind": "expr", "expr": "age"},
            {"name": "smoker_answer", "kind": "expr", "expr": "smoker"},
        ],
    }


def project(folder: Path, settings: dict[str, Any], csv: str | None = None) -> Project:
    folder.mkdir(parents=True, exist_ok=True)
    if csv is not None:
        (folder / "people.csv").write_text(csv)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return Project.load(folder)


def lines(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


# --- a bad value names the file, the line, the column, the value and the declared type -------


def test_a_bad_int_on_line_7(tmp_path: Path) -> None:
    rows = [*ROWS[:5], "6,2024-01-06 10:00:00,forty,Yes,1,600", ROWS[6]]
    people = project(tmp_path, config(), lines(*rows))
    with raises(
        ContractError,
        "source 'people': csv file 'people.csv' line 7, column 'age': 'forty' is not an int "
        "(the type declared in sources.people.columns.age.type); fix the value or the "
        "declared type",
    ):
        people.build_features(AS_OF)


def test_several_bad_values_name_the_first_and_count_the_lines(tmp_path: Path) -> None:
    rows = [ROWS[0], "2,2024-01-02 10:00:00,41,No,yes,200", ROWS[2], "4,someday,28,No,0,400"]
    people = project(tmp_path, config(), lines(*rows))
    with raises(
        ContractError,
        "source 'people': csv file 'people.csv' line 3 (the first of 2 bad values), column "
        "'sick': 'yes' is not an int (the type declared in sources.people.columns.sick.type); "
        "fix the value or the declared type",
    ):
        people.build_features(AS_OF)


def test_a_declared_type_that_does_not_match_the_data_is_blamed(tmp_path: Path) -> None:
    """Ages written with a fraction, declared int: the declaration is named, not the feature
    expression that reads the column."""
    rows = [row.replace(",30,", ",30.5,") for row in ROWS]
    people = project(tmp_path, config(), lines(*rows))
    with raises(
        ContractError,
        "source 'people': csv file 'people.csv' line 2, column 'age': '30.5' is not an int "
        "(the type declared in sources.people.columns.age.type); fix the value or the "
        "declared type",
    ):
        people.build_features(AS_OF)


def test_a_parquet_column_of_another_type_names_the_declared_type(tmp_path: Path) -> None:
    frame = _frame()
    frame["age"] = frame["age"] + 0.5
    frame.to_parquet(tmp_path / "people.parquet")
    people = project(tmp_path, config("people.parquet", "parquet"))
    with raises(
        ContractError,
        "source 'people': column 'age' changed type: the contract says int "
        "(sources.people.columns.age.type), the data has DOUBLE (float); correct the declared "
        "type if the data is right",
    ):
        people.build_features(AS_OF)


def test_yes_no_declared_string_stays_a_string(tmp_path: Path) -> None:
    """DuckDB alone would read Yes/No as a boolean and refuse the string contract."""
    people = project(tmp_path, config(), lines(*ROWS))
    table = people.build_features(AS_OF)
    assert table.column("smoker_answer").to_pylist() == [
        "Yes",
        "No",
        "Yes",
        "No",
        "No",
        "Yes",
        "No",
    ]
    assert table.column("age_years").to_pylist() == [30, 41, 52, 28, 35, 47, 39]


def test_yes_no_declared_bool_is_read_as_a_bool(tmp_path: Path) -> None:
    settings = config(smoker={"type": "bool"})
    settings["features"][1]["expr"] = "CASE WHEN smoker THEN 1 ELSE 0 END"
    people = project(tmp_path, settings, lines(*ROWS))
    table = people.build_features(AS_OF)
    assert table.column("smoker_answer").to_pylist() == [1, 0, 1, 0, 0, 1, 0]


# --- empty and header-only files ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_file(tmp_path: Path, text: str) -> None:
    people = project(tmp_path, config(), text)
    with raises(
        SourceError, "source 'people': csv file 'people.csv' is empty (not even a header line)"
    ):
        people.build_features(AS_OF)


def test_a_header_only_file(tmp_path: Path) -> None:
    people = project(tmp_path, config(), HEADER + "\n")
    with raises(
        SourceError, "source 'people': csv file 'people.csv' has only a header line, no rows"
    ):
        people.build_features(AS_OF)


# --- a column the data has but the contract does not declare ---------------------------------


@pytest.mark.parametrize(
    ("feature", "where"),
    [
        ({"name": "income_k", "kind": "expr", "expr": "income / 1000"}, "feature 'income_k'"),
        (
            {"name": "income_of", "kind": "lookup", "source": "people", "keys": ["id"]}
            | {"value": "income"},
            "feature 'income_of'",
        ),
    ],
)
def test_an_undeclared_column_read_by_a_feature(
    tmp_path: Path, feature: dict[str, Any], where: str
) -> None:
    settings = config()
    settings["features"].append(feature)
    people = project(tmp_path, settings, lines(*ROWS))
    with raises(
        FeatureError,
        f"{where}: column 'income' is in csv file 'people.csv' but not declared in "
        "sources.people.columns; declare it there (with its type) to read it",
    ):
        people.check()


def test_an_undeclared_column_in_the_label(tmp_path: Path) -> None:
    settings = config()
    settings["spine"]["label"] = "income > 300"
    people = project(tmp_path, settings, lines(*ROWS))
    with raises(
        FeatureError,
        "mlprod.yaml: spine.label: column 'income' is in csv file 'people.csv' but not declared "
        "in sources.people.columns; declare it there (with its type) to read it",
    ):
        people.check()


def test_a_column_missing_from_the_data_too_is_still_unknown(tmp_path: Path) -> None:
    settings = config()
    settings["features"].append({"name": "wage", "kind": "expr", "expr": "wages / 1000"})
    people = project(tmp_path, settings, lines(*ROWS))
    with raises(
        FeatureError,
        "feature 'wage': the spine (and the other features) has no column 'wages' (did you "
        "mean 'age'?)",
    ):
        people.check()


@pytest.mark.parametrize(
    ("command", "rows", "feature", "expected"),
    [
        (
            ["config", "check"],
            ROWS,
            {"name": "income_k", "kind": "expr", "expr": "income / 1000"},
            "error: feature 'income_k': column 'income' is in csv file 'people.csv' but not "
            "declared in sources.people.columns; declare it there (with its type) to read it",
        ),
        (
            ["features", "build", "--as-of", "2030-01-01"],
            [*ROWS[:5], "6,2024-01-06 10:00:00,forty,Yes,1,600"],
            None,
            "error: source 'people': csv file 'people.csv' line 7, column 'age': 'forty' is not "
            "an int (the type declared in sources.people.columns.age.type); fix the value or the "
            "declared type",
        ),
    ],
)
def test_the_cli_says_it_in_one_line(
    tmp_path: Path,
    command: list[str],
    rows: list[str],
    feature: dict[str, Any] | None,
    expected: str,
) -> None:
    settings = config()
    if feature is not None:
        settings["features"].append(feature)
    project(tmp_path, settings, lines(*rows))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlprod"), *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert " ".join((done.stdout + done.stderr).split()) == expected


# --- times with a zone, at any precision, are naive UTC --------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "seen_at": pd.to_datetime(
                ["2024-01-01 10:00:00.123", "2024-03-31 01:30:00.000", "2024-07-01 23:59:59.500"]
            ).astype("datetime64[ns]"),
            "age": [30, 41, 52],
            "smoker": ["Yes", "No", "Yes"],
            "sick": [0, 1, 1],
        }
    )


def _matrix(folder: Path, frame: pd.DataFrame) -> pd.DataFrame:
    folder.mkdir()
    frame.to_parquet(folder / "people.parquet")
    settings = config("people.parquet", "parquet")
    settings["features"].append({"name": "seen", "kind": "expr", "expr": "seen_at"})
    return project(folder, settings).build_features(AS_OF).to_pandas()


def test_pandas_parquet_with_utc_nanoseconds(tmp_path: Path) -> None:
    naive = _matrix(tmp_path / "naive", _frame())
    zoned = _frame()
    zoned["seen_at"] = zoned["seen_at"].dt.tz_localize("UTC")
    assert str(zoned["seen_at"].dtype) == "datetime64[ns, UTC]"
    read = _matrix(tmp_path / "utc", zoned)
    pd.testing.assert_frame_equal(read, naive)
    assert list(read["seen"]) == list(_frame()["seen_at"])


def test_parquet_in_another_zone_and_precision(tmp_path: Path) -> None:
    naive = _matrix(tmp_path / "naive", _frame())
    zoned = _frame()
    local = zoned["seen_at"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    zoned["seen_at"] = local.astype("datetime64[ms, America/New_York]")
    read = _matrix(tmp_path / "ny", zoned)
    # Read back at millisecond precision, the same instants as the naive UTC nanoseconds.
    assert list(read["seen"]) == list(naive["seen"])
    assert read.drop(columns="seen").equals(naive.drop(columns="seen"))


def test_csv_offsets_are_read_as_utc(tmp_path: Path) -> None:
    rows = [
        "1,2024-01-01T12:00:00+02:00,30,Yes,0,100",
        "2,2024-01-02 10:00:00Z,41,No,1,200",
        "3,2024-01-03 05:00:00-05:00,52,Yes,1,300",
    ]
    settings = config()
    settings["features"].append({"name": "seen", "kind": "expr", "expr": "seen_at"})
    table = project(tmp_path, settings, lines(*rows)).build_features(AS_OF)
    assert table.column("seen").to_pylist() == [
        datetime(2024, 1, 1, 10),
        datetime(2024, 1, 2, 10),
        datetime(2024, 1, 3, 10),
    ]


def test_duckdb_table_with_a_zone(tmp_path: Path) -> None:
    database = tmp_path / "people.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("SET TimeZone = 'Asia/Tokyo'")
        con.execute(
            "CREATE TABLE people AS SELECT * FROM (VALUES "
            "(1, TIMESTAMPTZ '2024-01-01 19:00:00+09', 30, 'Yes', 0), "
            "(2, TIMESTAMPTZ '2024-01-02 10:00:00+00', 41, 'No', 1)) "
            "AS t(id, seen_at, age, smoker, sick)"
        )
    settings = config()
    settings["sources"]["people"]["from"] = {
        "kind": "duckdb",
        "path": "people.duckdb",
        "table": "people",
    }
    settings["features"].append({"name": "seen", "kind": "expr", "expr": "seen_at"})
    table = project(tmp_path, settings).build_features(AS_OF)
    assert table.column("seen").to_pylist() == [datetime(2024, 1, 1, 10), datetime(2024, 1, 2, 10)]
