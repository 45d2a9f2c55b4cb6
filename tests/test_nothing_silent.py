"""Nothing passes silently (issue 10, points 4 and 5): each case below was once accepted
without a word, and now stops with an exact message or prints a warning that the summary,
``--json`` and the report carry too.

Trainings run on two days of real flights (about 1,800 rows) with a few dozen trees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import yaml
from expect import raises

from mlprod import Project
from mlprod.errors import ConfigError, FeatureError
from mlprod.project import model_params
from mlprod.registry.models import show_model
from mlprod.train.value import F1_RULE, f1_threshold

AS_OF = datetime(2014, 1, 1)
LIGHTGBM_DOCS = "see https://lightgbm.readthedocs.io/en/latest/Parameters.html for its parameters"


def _write(folder: Path, small_db: Path, config: dict[str, Any], sql: str | None = None) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    database = folder / "data" / "nycflights13.duckdb"
    if not database.exists():
        database.write_bytes(small_db.read_bytes())
        if sql:
            with duckdb.connect(str(database)) as con:
                con.execute(sql)
    config.pop("example_data", None)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


# --- misspelt model parameters: refused when the config loads ------------------------------


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        (
            "params",
            "num_leafs",
            31,
            "params: unknown lightgbm parameter 'num_leafs' (did you mean 'num_leaves'?); "
            + LIGHTGBM_DOCS,
        ),
        (
            "search",
            "learning_rat",
            {"low": 0.01, "high": 0.2},
            "search: unknown lightgbm parameter 'learning_rat' (did you mean 'learning_rate'?); "
            + LIGHTGBM_DOCS,
        ),
    ],
)
def test_misspelt_lightgbm_parameter(
    tmp_path: Path,
    flights_config: dict[str, Any],
    section: str,
    name: str,
    value: Any,
    message: str,
) -> None:
    flights_config["train"]["models"][0][section][name] = value
    (tmp_path / "mlprod.yaml").write_text(yaml.safe_dump(flights_config, sort_keys=False))
    with raises(ConfigError, f"mlprod.yaml: train.models[0]: {message}"):
        Project.load(tmp_path)


def test_misspelt_logistic_parameter(tmp_path: Path, flights_config: dict[str, Any]) -> None:
    flights_config["train"]["models"][1]["params"] = {"penalty": "l2", "c": 1.0}
    (tmp_path / "mlprod.yaml").write_text(yaml.safe_dump(flights_config, sort_keys=False))
    with raises(
        ConfigError,
        "mlprod.yaml: train.models[1]: params: unknown logistic parameter 'c' (did you mean "
        "'C'?); logistic takes 'C', 'class_weight', 'dual', 'fit_intercept', "
        "'intercept_scaling', 'l1_ratio', 'max_iter', 'n_jobs', 'penalty', 'tol', 'verbose', "
        "'warm_start'",
    ):
        Project.load(tmp_path)


def test_parameter_names_are_the_libraries_own() -> None:
    """The lists that config loading checks against are what the installed libraries take."""
    from lightgbm.basic import _ConfigAliases
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    aliases = _ConfigAliases._get_all_param_aliases()
    assert set(aliases) == model_params.LIGHTGBM_MAIN
    assert {n for main, more in aliases.items() for n in [main, *more]} == model_params.LIGHTGBM
    set_by_trainer = {"random_state", "solver"}
    assert set(LogisticRegression().get_params()) - set_by_trainer == model_params.LOGISTIC
    forest = set(RandomForestClassifier().get_params()) - {"random_state"}
    assert forest == model_params.RANDOM_FOREST


def test_config_load_imports_no_model_library() -> None:
    """Checking parameter names costs no import of LightGBM or scikit-learn (seconds each)."""
    example = Path(__file__).resolve().parent.parent / "examples" / "flights"
    code = (
        "import sys; from mlprod.project.loading import load_config; "
        f"load_config(__import__('pathlib').Path({str(example)!r})); "
        "print(sorted(m for m in ('lightgbm', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- duplicate spine keys and labels that are not 0/1: refused by the build -----------------


def test_duplicate_spine_keys(
    tmp_path: Path, small_db: Path, flights_config: dict[str, Any]
) -> None:
    duplicate = "INSERT INTO flights SELECT * FROM flights WHERE flight_id IN "
    sql = f"{duplicate} (9); {duplicate} (5, 9)"  # 9 on four rows, 5 on two
    folder = _write(tmp_path / "p", small_db, flights_config, sql)
    with raises(
        FeatureError,
        "spine source 'flights' has 2 duplicate keys (6 rows), e.g. flight_id=9 on 4 rows; "
        "spine.keys must identify each event once (add a column to spine.keys, or leave the "
        "duplicates out with spine.filter)",
    ):
        Project.load(folder).build_matrix(AS_OF, ["sched_hour"])


@pytest.mark.parametrize(
    ("label", "found"),
    [("carrier", "VARCHAR"), ("dep_delay / 60", "DOUBLE"), ("time_hour", "TIMESTAMP")],
)
def test_label_that_is_not_boolean_fails_config_check(
    tmp_path: Path, small_db: Path, flights_config: dict[str, Any], label: str, found: str
) -> None:
    flights_config["spine"]["label"] = label
    project = Project.load(_write(tmp_path / "p", small_db, flights_config))
    message = (
        f"mlprod.yaml: spine.label: '{label}' gives {found}, expected a boolean or a 0/1 "
        'integer; write a condition, e.g. "churned = \'Yes\'" or "amount > 0"'
    )
    with raises(FeatureError, message):
        project.check()
    with raises(FeatureError, message):
        project.build_matrix(AS_OF, ["sched_hour"])


def test_integer_label_other_than_0_1_fails_features_build(
    tmp_path: Path, small_db: Path, flights_config: dict[str, Any]
) -> None:
    label = "CAST(coalesce(dep_delay, 60) >= 15 AS INTEGER) + CAST(dep_delay > 120 AS INTEGER)"
    flights_config["spine"]["label"] = label
    project = Project.load(_write(tmp_path / "p", small_db, flights_config))
    project.check()  # an integer label binds: its values are only known to the build
    with raises(
        FeatureError,
        f"mlprod.yaml: spine.label: '{label}' gives 37 values other than 0 and 1 among 1,773 "
        "labelled events (e.g. 2); the label must be a boolean or 0/1 (write a condition, "
        "e.g. 'amount > 0')",
    ):
        project.build_matrix(AS_OF, ["sched_hour"])


def test_events_without_a_label_time_are_counted_as_left_out(
    tmp_path: Path, small_db: Path, flights_config: dict[str, Any]
) -> None:
    known = flights_config["spine"]["label_available_at"]
    flights_config["spine"]["label_available_at"] = (
        f"CASE WHEN flight_id % 100 = 0 THEN NULL ELSE {known} END"
    )
    matrix = Project.load(_write(tmp_path / "p", small_db, flights_config)).build_matrix(
        AS_OF, ["sched_hour"]
    )
    with duckdb.connect(str(small_db), read_only=True) as con:
        [(unknown,)] = con.sql("SELECT count(*) FROM flights WHERE flight_id % 100 = 0").fetchall()
    assert unknown > 0
    assert matrix.events["label_pending"] == unknown
    assert matrix.events["rows"] == 1_785 - unknown


# --- the threshold without a value section --------------------------------------------------


def test_f1_threshold_is_the_best_f1_on_validation() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.06).astype(int)
    score = np.clip(0.05 + 0.3 * y + rng.normal(0, 0.1, 400), 0, 1)

    def f1(t: float) -> float:
        flagged = score >= t
        tp = int((flagged & (y == 1)).sum())
        return 2 * tp / (flagged.sum() + y.sum()) if tp else 0.0

    chosen = f1_threshold(y, score)
    assert f1(chosen) == max(f1(t) for t in score)
    assert f1(chosen) > f1(0.5)  # a fixed 0.5 would flag almost nothing here


# --- one tiny training: leak warning, rows left out, threshold rule, baseline, test looks ----


@pytest.fixture(scope="module")
def leaky(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of flights, a label that is null for cancelled flights, features that are the
    spine's own columns only, one of them the label itself; no value section."""
    flights_config = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "examples/flights/mlprod.yaml").read_text()
    )
    columns = flights_config["sources"]["flights"]["columns"]
    columns["dep_delay"].pop("known")  # as a user who did not declare when it is known
    flights_config["spine"]["label"] = (
        "CASE WHEN dep_delay IS NULL THEN NULL ELSE dep_delay >= 15 END"
    )
    flights_config["features"] = [
        {"name": "sched_hour", "kind": "expr", "expr": "hour * 60 + minute"},
        {"name": "distance_miles", "kind": "expr", "expr": "distance"},
        {"name": "carrier", "kind": "expr", "expr": "carrier", "categorical": {}},
        {"name": "delayed", "kind": "expr", "expr": "dep_delay >= 15"},
    ]
    flights_config["train"] = {
        "split": {"method": "random", "valid_fraction": 0.3, "test_fraction": 0.3},
        "models": [{"kind": "lightgbm", "params": {"n_estimators": 30, "num_threads": 1}}],
        "calibration": "none",
        "registry_name": "leaky",
    }
    return _write(tmp_path_factory.mktemp("leaky") / "project", small_db, flights_config)


AS_OF_LEAKY = datetime(2013, 1, 2, 18)
LEAK = (
    "possible leak: feature 'delayed' alone predicts the label with AUC 1.0000 on validation "
    "(>= 0.99); check that it is known before the prediction time and is not the label itself"
)


def test_training_says_what_it_would_have_done_silently(leaky: Path) -> None:
    project = Project.load(leaky)
    first = project.train(AS_OF_LEAKY)
    assert first.warnings == (LEAK,)
    assert first.left_out == {"label_pending": 526, "label_missing": 12, "no_time": 0}
    assert first.threshold_rule == F1_RULE
    assert first.threshold != 0.5
    assert first.test_set_used_before == 0
    metrics = json.loads((Path(first.artefact_path) / "metrics.json").read_text())
    assert metrics["warnings"] == [LEAK]
    assert metrics["left_out"] == first.left_out
    assert metrics["threshold_rule"] == F1_RULE
    assert metrics["baseline"]["name"] == (
        "logistic regression (L2, C=1) on the spine's own columns (4 features; the model reads "
        "only these, so LightGBM on them would compare it with itself)"
    )
    report = Path(first.report_path).read_text()
    assert report.index("Warnings") < report.index("Headline")
    assert "feature &#x27;delayed&#x27; alone predicts the label" in report
    assert "label not yet known: 526; label is null: 12; no prediction time: 0" in report
    assert f"chosen by {F1_RULE}" in report
    assert "test set used 0 times before" in report

    # The same test rows again, through the CLI: the look is counted, and said first.
    train = [
        sys.executable,
        "-m",
        "mlprod.cli",
        "train",
        "-p",
        str(leaky),
        "--as-of",
        "2013-01-02T18:00:00",
    ]
    result = subprocess.run(train, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"warning: {LEAK}"
    assert lines[1].startswith(
        "warning: test set used 1 time before: earlier versions were tested on these "
    )
    assert lines[1].endswith(
        "test rows (fingerprint "
        f"{metrics['test_set']['fingerprint']}), so this test score is not a fresh estimate"
    )
    for line in (
        f"threshold chosen by {F1_RULE}",
        "spine events left out: label not yet known: 526; label is null: 12; no prediction time: 0",
        "test set used 1 time before",
    ):
        assert line in lines

    # And a third time, as JSON.
    result = subprocess.run([*train, "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    third = json.loads(result.stdout)
    assert third["warnings"][0] == LEAK
    assert third["warnings"][1].startswith("test set used 2 times before: ")
    assert third["test_set_used_before"] == 2
    assert third["threshold_rule"] == F1_RULE
    assert third["left_out"] == first.left_out
    third_metrics = json.loads((Path(third["artefact_path"]) / "metrics.json").read_text())
    assert third_metrics["test_set"] == {
        "fingerprint": metrics["test_set"]["fingerprint"],
        "used_before": 2,
    }
    assert "test set used 2 times before" in Path(third["report_path"]).read_text()

    versions = show_model(project.tracking_uri(), "leaky")["versions"]
    assert [v["test_set_used_before"] for v in versions] == [0, 1, 2]
    assert {v["test_fingerprint"] for v in versions} == {metrics["test_set"]["fingerprint"]}
