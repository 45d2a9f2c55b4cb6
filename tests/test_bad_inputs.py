"""A corpus of the bad inputs a new user makes (issue 10): each stops the `mlprod` command with
exit code 2, one exact line on stderr, and no traceback.

Every case starts from one small project, twelve people in a CSV and a config that reads them,
and breaks one thing: the YAML, a key, a type, a column, an expression, the data, the label,
the keys, a model parameter, the split, a window, a name. Most run the CLI in-process; a few
run the installed ``mlprod`` as a user would, to see what really reaches the terminal.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import assert_one_error_line, mlprod

CHECK = ("config", "check")
BUILD = ("features", "build", "--as-of", "2030-01-01")
TRAIN = ("train", "--as-of", "2030-01-01")

# `income` is in the file but not in the contract: nothing may read it until it is declared.
HEADER = "id,seen_at,age,smoker,sick,income"
ROWS = [
    f"{i},2024-01-{i:02d} 10:00:00,{20 + 3 * i},{'Yes' if i % 3 else 'No'},{i % 2},{100 * i}"
    for i in range(1, 13)
]
CSV = "\n".join([HEADER, *ROWS]) + "\n"
PEOPLE: dict[str, Any] = {
    "name": "people",
    "sources": {
        "people": {
            "from": {"kind": "csv", "path": "people.csv"},
            "time": "seen_at",
            "columns": {
                "id": {"type": "int", "nullable": False},
                "seen_at": {"type": "timestamp", "nullable": False},
                "age": {"type": "int"},
                "smoker": {"type": "string", "categories": ["No", "Yes"]},
                "sick": {"type": "int"},
            },
        }
    },
    "spine": {
        "source": "people",
        "keys": ["id"],
        "time": "seen_at",
        "label": "sick = 1",
        "label_available_at": "seen_at",
    },
    "features": [
        {"name": "age_years", "kind": "expr", "expr": "age"},
        {"name": "smoker_answer", "kind": "expr", "expr": "smoker", "categorical": {}},
    ],
    "train": {
        "split": {"method": "random", "valid_fraction": 0.3, "test_fraction": 0.3},
        "models": [{"kind": "lightgbm", "params": {"n_estimators": 5}}],
        "tuning": {"trials": 1},
        "calibration": "none",
    },
}
# The config as written, then a second `features:` that YAML alone would let replace the first.
WRITTEN = yaml.safe_dump(PEOPLE, sort_keys=False).splitlines()
TWICE = "\n".join([*WRITTEN, "features:", "- {name: x, kind: expr, expr: age}"]) + "\n"
WRITE_IT = "write it like '7d', '3h', '90min' or '2 weeks'"
NEEDS_TIME = "but spine.time is not declared"
DECLARE_TIME = "declare spine.time and spine.label_available_at"


@dataclass(frozen=True)
class Bad:
    """One bad input: what to break, the command that meets it, and the line it must print.

    ``{folder}`` in the command or the message stands for the project folder.
    """

    id: str
    message: str
    change: Callable[[dict[str, Any]], object] | None = None
    csv: str = CSV
    text: str | None = None  # mlprod.yaml as written, for what is not YAML of a config
    command: tuple[str, ...] = CHECK
    encoding: str = "utf-8"  # of the CSV


def with_rows(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def feature(**definition: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["features"].append(definition)


def column(name: str, **contract: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["sources"]["people"]["columns"][name].update(contract)


def spine(**settings: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["spine"].update(settings)


def train(**settings: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["train"].update(settings)


def model(**params: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["train"]["models"][0]["params"].update(params)


def timeless(then: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], None]:
    """A spine without time (a plain table), changed by ``then``."""

    def change(config: dict[str, Any]) -> None:
        del config["spine"]["time"], config["spine"]["label_available_at"]
        then(config)

    return change


def located(**location: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config["sources"]["people"].update({"from": location})


def declared_string_read_as_number(config: dict[str, Any]) -> None:
    """Ages declared string: ``age * 12`` is right for the data, the declaration is not."""
    config["sources"]["people"]["columns"]["age"]["type"] = "string"
    config["features"][0] = {"name": "age_months", "kind": "expr", "expr": "age * 12"}


def count_by_smoker(window: Any) -> Callable[[dict[str, Any]], None]:
    return feature(
        name="smokers_7d",
        kind="aggregate",
        source="people",
        keys=["smoker"],
        function="count",
        window=window,
    )


def cycle(config: dict[str, Any]) -> None:
    config["features"] += [
        {"name": "a", "kind": "expr", "expr": "b + 1"},
        {"name": "b", "kind": "expr", "expr": "a * 2"},
    ]


def out_of_time(train_end: str, valid_end: str) -> Callable[[dict[str, Any]], None]:
    split = {"method": "out_of_time", "train_end": train_end, "valid_end": valid_end}
    return train(split=split)


AGE_MISMATCH = (
    "feature 'age_months': column 'age' is declared string (sources.people.columns.age.type), "
    "but csv file 'people.csv' holds int values (BIGINT); correct the declared type"
)

CASES = [
    # --- the file itself ------------------------------------------------------------------
    Bad(
        "yaml-syntax-error",
        "mlprod.yaml: line 3, column 1: not valid YAML: expected ',' or ']', but got "
        "'<stream end>'",
        text="name: people\nsources: [a, b\n",
    ),
    Bad(
        "yaml-tab-indent",
        "mlprod.yaml: line 2, column 1: not valid YAML: found character '\\t' that cannot "
        "start any token",
        text="name: people\n\tsources: {}\n",
    ),
    Bad(
        "yaml-not-a-mapping",
        "mlprod.yaml: expected a mapping of settings at the top level",
        text="- people\n- sick\n",
    ),
    Bad(
        "key-written-twice",
        f"mlprod.yaml: line {len(WRITTEN) + 1}, column 1: not valid YAML: key 'features' is "
        f"written twice in one mapping (first on line {WRITTEN.index('features:') + 1}); keep one",
        text=TWICE,
    ),
    Bad(
        "no-config-in-folder",
        "{folder}/nowhere: no mlprod.yaml here; run mlprod in a project folder or pass "
        "--project DIR",
        command=(*CHECK, "--project", "{folder}/nowhere"),
    ),
    # --- keys and their values --------------------------------------------------------------
    Bad(
        "unknown-top-level-key",
        "mlprod.yaml: colour: unknown key 'colour'",
        lambda c: c.update(colour="red"),
    ),
    Bad(
        "misspelt-top-level-key",
        "mlprod.yaml: featurs: unknown key 'featurs' (did you mean 'features'?)",
        lambda c: c.update(featurs=c.pop("features")),
    ),
    Bad(
        "misspelt-nested-key",
        "mlprod.yaml: spine.lable: unknown key 'lable' (did you mean 'label'?)",
        lambda c: c["spine"].update(lable=c["spine"].pop("label")),
    ),
    Bad(
        "required-key-missing",
        "mlprod.yaml: name: required, but missing",
        lambda c: c.pop("name"),
    ),
    Bad(
        "wrong-type-of-field",
        "mlprod.yaml: sources.people.columns.age.nullable: should be a valid boolean, unable to "
        "interpret input, found 'sometimes'",
        column("age", nullable="sometimes"),
    ),
    Bad(
        "string-where-a-list-goes",
        "mlprod.yaml: spine.keys: should be a valid list, found 'id'",
        spine(keys="id"),
    ),
    Bad(
        "column-declared-by-type-alone",
        "mlprod.yaml: sources.people.columns.age: should be a mapping of settings (key: value), "
        "found 'int'",
        lambda c: c["sources"]["people"]["columns"].update(age="int"),
    ),
    Bad(
        "no-features",
        "mlprod.yaml: features: should have at least 1 entry, found 0",
        lambda c: c.update(features=[]),
    ),
    Bad(
        "unknown-column-type",
        "mlprod.yaml: sources.people.columns.age.type: should be 'int', 'float', 'string', "
        "'bool', 'timestamp' or 'date', found 'integer' (did you mean 'int'?)",
        column("age", type="integer"),
    ),
    Bad(
        "unknown-source-kind",
        "mlprod.yaml: sources.people.from: unknown kind 'excel'; expected one of 'csv', "
        "'parquet', 'duckdb', 'postgres', 'spark'",
        lambda c: c["sources"]["people"]["from"].update(kind="excel"),
    ),
    Bad(
        "unset-environment-variable",
        "mlprod.yaml: environment variable MLPROD_BAD_INPUTS_UNSET is not set; set it or write "
        "${MLPROD_BAD_INPUTS_UNSET:-default}",
        lambda c: c["sources"]["people"]["from"].update(path="${MLPROD_BAD_INPUTS_UNSET}/p.csv"),
    ),
    # --- names: sources, columns, features ------------------------------------------------
    Bad(
        "unknown-source",
        "mlprod.yaml: spine.source: unknown source 'peple' (did you mean 'people'?)",
        spine(source="peple"),
    ),
    Bad(
        "unknown-column-did-you-mean",
        "feature 'age_next': the spine (and the other features) has no column 'ag' (did you "
        "mean 'age'?)",
        feature(name="age_next", kind="expr", expr="ag + 1"),
    ),
    Bad(
        "column-in-file-not-declared",
        "feature 'income_k': column 'income' is in csv file 'people.csv' but not declared in "
        "sources.people.columns; declare it there (with its type) to read it",
        feature(name="income_k", kind="expr", expr="income / 1000"),
    ),
    Bad(
        "unknown-lookup-key",
        "feature 'age_of': key 'smokr' is neither a column of the spine source 'people' nor a "
        "feature (did you mean 'smoker'?)",
        feature(name="age_of", kind="lookup", source="people", keys=["smokr"], value="age"),
    ),
    Bad(
        "unknown-feature-to-build",
        "unknown feature 'age_yaers' (did you mean 'age_years'?)",
        command=(*BUILD, "--feature", "age_yaers"),
    ),
    Bad(
        "feature-named-twice",
        "mlprod.yaml: features[2].name: feature 'age_years' is already defined at features[0]",
        feature(name="age_years", kind="expr", expr="age + 1"),
    ),
    Bad(
        "dependency-cycle",
        "feature cycle: a -> b -> a; a feature cannot depend on itself",
        cycle,
    ),
    # --- unsafe identifiers and expressions -----------------------------------------------
    Bad(
        "unsafe-feature-name",
        "mlprod.yaml: features[2].name: invalid name 'x; DROP TABLE people': must be a name of "
        "letters, digits and '_' that does not start with a digit",
        feature(name="x; DROP TABLE people", kind="expr", expr="age"),
    ),
    Bad(
        "unsafe-column-name",
        "mlprod.yaml: sources.people.columns.a b: invalid name 'a b': must be a name of "
        "letters, digits and '_' that does not start with a digit",
        lambda c: c["sources"]["people"]["columns"].update({"a b": {"type": "int"}}),
    ),
    Bad(
        "query-in-an-expression",
        "feature 'x': expression '(SELECT 1)' contains a query or table; a row expression may "
        "only use the columns of its own row (declare an aggregate feature instead)",
        feature(name="x", kind="expr", expr="(SELECT 1)"),
    ),
    Bad(
        "two-statements-in-an-expression",
        "feature 'x': expected one expression, found 'age; DROP TABLE people'",
        feature(name="x", kind="expr", expr="age; DROP TABLE people"),
    ),
    Bad(
        "bad-expression-syntax",
        "feature 'x': cannot parse expression 'age +* 2': Invalid expression / Unexpected "
        "token (near character 8)",
        feature(name="x", kind="expr", expr="age +* 2"),
    ),
    Bad(
        "type-error-in-expression",
        "feature 'x': Binder Error: No function matches the given name and argument types "
        "'*(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts.",
        feature(name="x", kind="expr", expr="smoker * 2"),
    ),
    Bad(
        "mean-of-text",
        "feature 'm': function 'mean' needs a number, but value 'smoker' is VARCHAR",
        feature(
            name="m",
            kind="aggregate",
            source="people",
            keys=["smoker"],
            function="mean",
            value="smoker",
            window="7d",
        ),
    ),
    # --- a declared type the data contradicts: the declaration is blamed -----------------
    Bad("declared-type-not-the-data-check", AGE_MISMATCH, declared_string_read_as_number),
    Bad(
        "declared-type-not-the-data-build",
        AGE_MISMATCH,
        declared_string_read_as_number,
        command=BUILD,
    ),
    Bad(
        "declared-type-not-the-data-time",
        "mlprod.yaml: spine.time: column 'seen_at' is declared string "
        "(sources.people.columns.seen_at.type), but csv file 'people.csv' holds timestamp "
        "values (TIMESTAMP); correct the declared type",
        column("seen_at", type="string"),
    ),
    Bad(
        "time-expression-not-a-time",
        "mlprod.yaml: spine.time: 'age' gives BIGINT, expected a timestamp (UTC)",
        spine(time="age"),
    ),
    # --- the data -------------------------------------------------------------------------
    Bad(
        "missing-file",
        "source 'people': file 'peeple.csv' does not exist (looked for {folder}/peeple.csv)",
        lambda c: c["sources"]["people"]["from"].update(path="peeple.csv"),
        command=BUILD,
    ),
    Bad(
        "empty-csv",
        "source 'people': csv file 'people.csv' is empty (not even a header line)",
        csv="",
        command=BUILD,
    ),
    Bad(
        "header-only-csv",
        "source 'people': csv file 'people.csv' has only a header line, no rows",
        csv=HEADER + "\n",
        command=BUILD,
    ),
    Bad(
        "bad-int-in-csv",
        "source 'people': csv file 'people.csv' line 3, column 'age': 'forty' is not an int "
        "(the type declared in sources.people.columns.age.type); fix the value or the declared "
        "type",
        csv=with_rows(ROWS[0], "2,2024-01-02 10:00:00,forty,No,1,200", *ROWS[2:]),
        command=BUILD,
    ),
    Bad(
        "bad-timestamp-in-csv",
        "source 'people': csv file 'people.csv' line 4, column 'seen_at': 'yesterday' is not a "
        "timestamp (the type declared in sources.people.columns.seen_at.type); fix the value or "
        "the declared type",
        csv=with_rows(*ROWS[:2], "3,yesterday,29,No,1,300", *ROWS[3:]),
        command=BUILD,
    ),
    Bad(
        "line-with-an-extra-field",
        "source 'people': csv file 'people.csv' line 3 has 7 fields, but the header line has "
        "6; quote values that contain ',', or fix the line",
        csv=with_rows(ROWS[0], ROWS[1] + ",extra", *ROWS[2:]),
        command=BUILD,
    ),
    Bad(
        "wrong-delimiter",
        "source 'people': column 'id' is declared in the contract but missing from the data "
        "(columns the contract does not declare: 'id;seen_at;age;smoker;sick;income')",
        csv=CSV.replace(",", ";"),
        command=BUILD,
    ),
    Bad(
        "csv-not-utf-8",
        "source 'people': csv file 'people.csv' line 5 is not UTF-8 text (byte 0xed at "
        "position 27); save the file as UTF-8",
        csv=with_rows(*ROWS[:3], "4,2024-01-04 10:00:00,32,Sí,0,400", *ROWS[4:]),
        encoding="latin-1",
        command=BUILD,
    ),
    Bad(
        "csv-declared-as-duckdb",
        "source 'people': 'people.csv' is not a DuckDB database file; for a CSV or Parquet "
        "file write kind: csv or kind: parquet",
        located(kind="duckdb", path="people.csv", table="people"),
        command=BUILD,
    ),
    Bad(
        "postgres-not-answering",
        "source 'people': cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/test: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        located(kind="postgres", url="postgresql://postgres@127.0.0.1:1/test", table="people"),
        command=BUILD,
    ),
    Bad(
        "declared-column-not-in-file",
        "source 'people': column 'weight' is declared in the contract but missing from the data "
        "(columns the contract does not declare: 'income')",
        lambda c: c["sources"]["people"]["columns"].update(weight={"type": "float"}),
        command=BUILD,
    ),
    Bad(
        "value-outside-categories",
        "source 'people': column 'smoker' has 4 values outside its categories (e.g. 'No'); add "
        "it to sources.people.columns.smoker.categories if it is expected",
        column("smoker", categories=["Yes"]),
        command=BUILD,
    ),
    Bad(
        "null-in-a-non-nullable-column",
        "source 'people': column 'sick' has 1 null value (8.33% of 12 rows), but the contract "
        "says nullable: false",
        column("sick", nullable=False),
        csv=with_rows(*ROWS[:-1], "12,2024-01-12 10:00:00,56,No,,1200"),
        command=BUILD,
    ),
    # --- the spine: label, keys, filter ---------------------------------------------------
    Bad(
        "label-not-boolean",
        "mlprod.yaml: spine.label: 'smoker' gives VARCHAR, expected a boolean or a 0/1 integer; "
        'write a condition, e.g. "churned = \'Yes\'" or "amount > 0"',
        spine(label="smoker"),
    ),
    Bad(
        "label-not-0-or-1",
        "mlprod.yaml: spine.label: 'sick + 1' gives 6 values other than 0 and 1 among 12 "
        "labelled events (e.g. 2); the label must be a boolean or 0/1 (write a condition, "
        "e.g. 'amount > 0')",
        spine(label="sick + 1"),
        command=BUILD,
    ),
    Bad(
        "label-on-unknown-column",
        "mlprod.yaml: spine.label: source 'people' has no column 'sik' (did you mean 'sick'?)",
        spine(label="sik = 1"),
    ),
    Bad(
        "duplicate-spine-keys",
        "spine source 'people' has 1 duplicate key (2 rows), e.g. id=3 on 2 rows; spine.keys "
        "must identify each event once (add a column to spine.keys, or leave the duplicates "
        "out with spine.filter)",
        csv=with_rows(*ROWS, "3,2024-01-13 10:00:00,29,No,1,300"),
        command=BUILD,
    ),
    Bad(
        "filter-keeps-no-event",
        "the training matrix is empty: spine source 'people' has no events that pass spine.filter",
        spine(filter="age > 1000"),
        command=BUILD,
    ),
    Bad(
        "as-of-before-any-label",
        "the training matrix is empty: none of the 12 events of spine source 'people' has a "
        "label known as of 2000-01-01 00:00:00 (label not yet known: 12; label is null: 0; no "
        "prediction time: 0); build as of a later time (--as-of)",
        command=("features", "build", "--as-of", "2000-01-01"),
    ),
    Bad(
        "lookup-with-several-rows-per-key",
        "feature 'age_of_smoker': source 'people' has 8 rows for smoker='Yes'; a lookup needs at "
        "most one row per key (use an asof feature for a table that changes over time)",
        feature(name="age_of_smoker", kind="lookup", source="people", keys=["smoker"], value="age"),
        command=BUILD,
    ),
    # --- models and their parameters ------------------------------------------------------
    Bad(
        "unknown-model-parameter",
        "mlprod.yaml: train.models[0]: params: unknown lightgbm parameter 'num_leafs' (did you "
        "mean 'num_leaves'?); see https://lightgbm.readthedocs.io/en/latest/Parameters.html for "
        "its parameters",
        model(num_leafs=7),
    ),
    Bad(
        "unknown-model-kind",
        "mlprod.yaml: train.models[0].kind: should be 'lightgbm', 'logistic', 'random_forest', "
        "'svm' or 'mlp', found 'xgboost'",
        lambda c: c["train"]["models"][0].update(kind="xgboost"),
    ),
    Bad(
        "lightgbm-parameter-out-of-range",
        "model 'lightgbm': LightGBM cannot train with these parameters: num_leaves must be > 1 "
        "(given: n_estimators=5, num_leaves=-3)",
        model(num_leaves=-3),
        command=TRAIN,
    ),
    Bad(
        "scikit-learn-parameter-out-of-range",
        "model 'random_forest': The 'n_estimators' parameter of RandomForestClassifier must be "
        "an int in the range [1, inf). Got 0 instead.",
        train(models=[{"kind": "random_forest", "params": {"n_estimators": 0}}]),
        command=TRAIN,
    ),
    Bad(
        "value-matrix-all-the-same",
        "mlprod.yaml: train.value: the value matrix makes every threshold worth the same; give "
        "tp, fp, fn or tn a value (e.g. tp: 300, fp: -100)",
        train(value={"tp": 1, "fp": 1, "fn": 1, "tn": 1}),
    ),
    # --- splits ---------------------------------------------------------------------------
    Bad(
        "split-fractions-leave-nothing",
        "the random split's valid_fraction (0.5) and test_fraction (0.6) leave no rows to "
        "train on; make them sum to less than 1",
        train(split={"method": "random", "valid_fraction": 0.5, "test_fraction": 0.6}),
        command=TRAIN,
    ),
    Bad(
        "split-fraction-out-of-range",
        "mlprod.yaml: train.split.valid_fraction: should be less than 1, found 1.5",
        train(split={"method": "random", "valid_fraction": 1.5}),
    ),
    Bad(
        "one-fold",
        "mlprod.yaml: train.split.folds: should be greater than or equal to 2, found 1",
        train(split={"method": "kfold", "folds": 1}),
    ),
    Bad(
        "split-windows-out-of-order",
        "mlprod.yaml: train.split: valid_end (2024-01-03 00:00) must come after train_end "
        "(2024-01-05 00:00) plus the gap; the windows would overlap",
        out_of_time("2024-01-05", "2024-01-03"),
    ),
    Bad(
        "label-of-one-class-only",
        "the training part of the random split (seed 0, stratified by label) has only positive "
        "labels (4 rows); a classifier needs both. Widen the window or check the spine's label.",
        spine(label="sick >= 0"),
        command=TRAIN,
    ),
    # --- what needs a time, in a project without one --------------------------------------
    Bad(
        "aggregate-without-time",
        f"mlprod.yaml: features[2]: aggregate feature 'smokers_7d' reads the rows known before "
        f"each prediction's time, {NEEDS_TIME}; {DECLARE_TIME}, or remove the feature",
        timeless(count_by_smoker("7d")),
    ),
    Bad(
        "out-of-time-split-without-time",
        f"mlprod.yaml: train.split.method: 'out_of_time' cuts the events by their prediction "
        f"time, {NEEDS_TIME}; use method: random or kfold, or {DECLARE_TIME}",
        timeless(out_of_time("2024-01-05", "2024-01-08")),
    ),
    # --- windows --------------------------------------------------------------------------
    Bad(
        "window-unknown-unit",
        "mlprod.yaml: features[2].window: invalid duration '7 dayz': unknown unit 'dayz' (did "
        f"you mean 'day'?); {WRITE_IT}",
        count_by_smoker("7 dayz"),
    ),
    Bad(
        "window-without-unit",
        f"mlprod.yaml: features[2].window: invalid duration 7: a number needs a unit; {WRITE_IT}",
        count_by_smoker(7),
    ),
    Bad(
        "window-of-zero",
        "feature 'smokers_7d': window must be longer than zero",
        count_by_smoker("0d"),
    ),
]


def write_project(folder: Path, bad: Bad) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.csv").write_bytes(bad.csv.encode(bad.encoding))
    if bad.text is not None:
        (folder / "mlprod.yaml").write_text(bad.text)
        return
    config = copy.deepcopy(PEOPLE)
    if bad.change is not None:
        bad.change(config)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def arguments(bad: Bad, folder: Path) -> list[str]:
    args = [part.replace("{folder}", str(folder)) for part in bad.command]
    return args if "--project" in args else [*args, "--project", str(folder)]


@pytest.mark.parametrize("bad", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_is_one_exact_line(
    bad: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLPROD_BAD_INPUTS_UNSET", raising=False)
    write_project(tmp_path, bad)
    result = mlprod(*arguments(bad, tmp_path))
    assert_one_error_line(result, bad.message.replace("{folder}", str(tmp_path)))


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({case.message for case in CASES}) == len(CASES) - 1  # check and build: one message


# Run as the installed command: what a terminal really shows, and that nothing else does.
BY_THE_COMMAND = [
    "yaml-syntax-error",
    "declared-type-not-the-data-build",
    "line-with-an-extra-field",
    "filter-keeps-no-event",
]


@pytest.mark.parametrize("name", BY_THE_COMMAND)
def test_the_installed_command_prints_one_line(name: str, tmp_path: Path) -> None:
    bad = next(case for case in CASES if case.id == name)
    write_project(tmp_path, bad)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlprod"), *arguments(bad, tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"error: {bad.message.replace('{folder}', str(tmp_path))}\n",
    )


def test_a_declared_type_a_duckdb_table_contradicts(
    tmp_path: Path, small_db: Path, flights_config: dict[str, Any]
) -> None:
    """The same blame when the data is a DuckDB table: its schema says what the column holds."""
    flights_config.pop("example_data")
    flights_config["sources"]["flights"]["columns"]["dep_delay"]["type"] = "string"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nycflights13.duckdb").symlink_to(small_db)
    (tmp_path / "mlprod.yaml").write_text(yaml.safe_dump(flights_config, sort_keys=False))
    result = mlprod(*CHECK, "--project", tmp_path)
    assert_one_error_line(
        result,
        "mlprod.yaml: spine.label_available_at: column 'dep_delay' is declared string "
        "(sources.flights.columns.dep_delay.type), but table 'flights' in "
        "'data/nycflights13.duckdb' holds float values (DOUBLE); correct the declared type",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["features", "build", "--as-of", "yesterday"],
            "Invalid value for '--as-of': Input should be a valid datetime or date, input is too "
            "short (see mlprod features build --help)",
        ),
        (["train", "--bogus"], "No such option: --bogus (see mlprod train --help)"),
        (
            ["trian"],
            "No such command 'trian'. Did you mean 'train', 'retrain'? (see mlprod --help)",
        ),
    ],
    ids=["option-value", "unknown-option", "unknown-command"],
)
def test_a_usage_mistake_is_one_line_too(args: list[str], message: str, tmp_path: Path) -> None:
    """The command line itself: not Typer's framed usage box, one line and exit code 2."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlprod"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {message}\n")
