"""Business value declared per row: ``train.value.tp: "distance * 0.1"`` on the flights example.

The config is checked like the spine's label (columns of the spine source, did-you-mean, a
number), the matrix carries each expression as ``value_<outcome>`` (never a feature), and
training picks the threshold that is worth the most on validation with each row's own values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from conftest import copy_example

from mlprod import Project
from mlprod.errors import ConfigError, FeatureError, MlprodError, TrainError
from mlprod.evaluate._html import format_number
from mlprod.evaluate.value import TIE_TOLERANCE, value_at
from mlprod.features.matrix import Matrix
from mlprod.train.splits import split_matrix
from mlprod.train.trainer import TrainedModel, train_pipeline
from mlprod.train.value import outcome_values

MakeProject = Callable[[dict[str, Any]], Project]

# A late flight caught is worth a tenth of its distance; a false alarm costs 20; a late flight
# left alone costs a minute of delay each (two hours for a cancellation). The delay is the
# outcome itself: were value_fn a feature, the model would score an AUC near 1.
VALUE = {"tp": "distance * 0.1", "fp": -20, "fn": "-coalesce(dep_delay, 120)", "tn": 0}
FEATURES = [  # in the example's order
    "sched_hour",
    "sched_minute_of_day",
    "day_of_week",
    "distance_miles",
    "carrier",
    "origin",
    "carrier_origin_mean_delay_7d",
    "origin_delayed_3h",
    "origin_departures_3h",
]


def raises(kind: type[MlprodError], message: str) -> Any:
    return pytest.raises(kind, match=f"^{re.escape(message)}$")


def small(config: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """The example with a few features, three months to train one LightGBM on without tuning,
    and per-row values (on one thread: on a busy machine LightGBM's two spinning threads take
    several times as long)."""
    config["features"] = [f for f in config["features"] if f["name"] in FEATURES]
    train = config["train"]
    train["split"]["train_start"] = "2013-06-01"
    params = {"learning_rate": 0.1, "n_estimators": 100, "num_threads": 1}
    train["models"] = [{"kind": "lightgbm", "params": params}]
    train["tuning"] = {"trials": 1}
    train.pop("ensemble")
    # Isotonic scores take few distinct values, so every threshold can be priced by brute force.
    train["calibration"] = "isotonic"
    train["value"] = value
    return config


# --- the config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "text", "kind", "message"),
    [
        (
            "tp",
            "0.2 * distnce",
            FeatureError,
            "mlprod.yaml: train.value.tp: source 'flights' has no column 'distnce' "
            "(did you mean 'distance'?)",
        ),
        (
            "fn",
            "carrier",
            FeatureError,
            "mlprod.yaml: train.value.fn: 'carrier' gives VARCHAR, expected a number",
        ),
        (
            "tp",
            "distance > 1000",
            FeatureError,
            "mlprod.yaml: train.value.tp: 'distance > 1000' gives BOOLEAN, expected a number",
        ),
        (
            "fp",
            "-plane_year",
            FeatureError,
            "mlprod.yaml: train.value.fp: source 'flights' has no column 'plane_year'",
        ),
        (
            "tn",
            "flights.distance",
            FeatureError,
            "mlprod.yaml: train.value.tn: expression 'flights.distance' refers to "
            "'flights.distance'; write column names without a table prefix",
        ),
        (
            "tp",
            None,
            ConfigError,
            "mlprod.yaml: train.value.tp: should be a number or a SQL expression, found None",
        ),
        (
            "tp",
            " ",
            ConfigError,
            "mlprod.yaml: train.value.tp: is empty; give a number or a SQL expression such as "
            "'0.2 * distance'",
        ),
    ],
)
def test_value_expressions_are_checked_like_the_label(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    outcome: str,
    text: Any,
    kind: type[MlprodError],
    message: str,
) -> None:
    flights_config["train"]["value"][outcome] = text
    with raises(kind, message):
        make_project(flights_config).check()


def test_only_constant_values_can_make_every_threshold_worth_the_same(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["train"]["value"] = {"tp": 5, "fp": 0, "fn": "5", "tn": 0}
    with raises(
        ConfigError,
        "mlprod.yaml: train.value: the value matrix makes every threshold worth the same; give "
        "tp, fp, fn or tn a value (e.g. tp: 300, fp: -100)",
    ):
        make_project(flights_config)
    flights_config["train"]["value"]["fn"] = "distance * 0"  # per row: not judged up front
    project = make_project(flights_config)
    assert project.check()["distance_miles"] == "BIGINT"


def test_a_feature_cannot_take_the_name_of_a_value_column(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["train"]["value"]["tp"] = "distance * 0.1"
    flights_config["features"].append({"name": "value_tp", "kind": "expr", "expr": "distance"})
    n = len(flights_config["features"]) - 1
    with raises(
        ConfigError,
        f"mlprod.yaml: features[{n}].name: 'value_tp' is a column of the training matrix already "
        "(the per-row value of train.value.tp); choose another name",
    ):
        make_project(flights_config).check()


def test_the_json_schema_describes_a_value_per_row() -> None:
    from mlprod.project.config import ProjectConfig

    schema = ProjectConfig.model_json_schema(by_alias=True)["$defs"]["ValueConfig"]
    tp = schema["properties"]["tp"]
    assert tp["anyOf"] == [{"type": "number"}, {"type": "string", "minLength": 1}]
    assert "'0.2 * distance'" in tp["description"]


# --- the matrix and training ----------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> Project:
    folder = copy_example(tmp_path_factory.mktemp("value_column"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(small(config, VALUE), sort_keys=False))
    return Project.load(folder)


@pytest.fixture(scope="module")
def matrix(project: Project) -> Matrix:
    return project.build_matrix()


@pytest.fixture(scope="module")
def trained(project: Project, matrix: Matrix) -> TrainedModel:
    return train_pipeline(project.config, project.graph, matrix, project.store)


def test_the_matrix_carries_each_value_expression_but_not_as_a_feature(matrix: Matrix) -> None:
    table = matrix.table
    names = table.column_names
    assert names[:6] == [
        "flight_id",
        "prediction_time",
        "label",
        "label_available_at",
        "value_tp",
        "value_fn",
    ]
    assert "value_fp" not in names and "value_tn" not in names  # constants need no column
    assert table.schema.field("value_tp").type == pa.float64()
    assert matrix.features == FEATURES
    distance = table.column("distance_miles").to_numpy()
    # DuckDB multiplies by the decimal 0.1 exactly, then rounds once: as dividing by 10 does.
    assert np.array_equal(table.column("value_tp").to_numpy(), distance / 10)
    assert table.column("value_fn").null_count == 0


def test_training_chooses_the_best_threshold_with_each_rows_values(
    project: Project, matrix: Matrix, trained: TrainedModel
) -> None:
    assert project.config.train is not None
    pipeline = trained.pipeline
    assert "value_tp" not in pipeline.features and "value_fn" not in pipeline.features
    assert pipeline.features == FEATURES
    assert trained.metrics["test"]["auc"] < 0.85, "value_fn (the delay) leaked into the model"

    split = split_matrix(matrix.table, project.config.train.split)
    valid = split.valid
    late = valid.column("label").to_numpy(zero_copy_only=False)
    score = pipeline.predict_proba(valid)
    tp = valid.column("value_tp").to_numpy()
    fn = valid.column("value_fn").to_numpy()
    candidates = np.append(np.unique(score), np.nextafter(score.max(), math.inf))
    assert len(candidates) < 2000
    totals = np.array(
        [
            tp[(score >= t) & late].sum()
            - 20.0 * ((score >= t) & ~late).sum()
            + fn[(score < t) & late].sum()
            for t in candidates
        ]
    )
    gains = np.where(late, tp - fn, -20.0)
    ties = totals >= totals.max() - TIE_TOLERANCE * np.abs(gains).sum()
    assert pipeline.threshold == candidates[ties].max()
    assert score.min() < pipeline.threshold < score.max(), "acting on some flights pays"
    reported = trained.metrics["validation"]["value"]["total"]
    assert reported == pytest.approx(totals.max(), rel=1e-12)


def test_the_report_prices_the_test_rows_with_their_own_values(
    project: Project, matrix: Matrix, trained: TrainedModel
) -> None:
    assert project.config.train is not None
    metrics = json.loads((trained.artefact / "metrics.json").read_text())
    assert set(metrics["test"]["value"]) == {"total", "per_1000_rows", "currency"}
    test = split_matrix(matrix.table, project.config.train.split).test.open("checking the report")
    assert project.config.train.value is not None
    worth = outcome_values(project.config.train.value, test)
    y = test.column("label").to_numpy(zero_copy_only=False)
    expected = value_at(y, trained.pipeline.predict_proba(test), metrics["threshold"], worth)
    assert metrics["test"]["value"]["total"] == pytest.approx(expected, rel=1e-12)
    page = (trained.artefact / "report.html").read_text()
    assert "<code>distance * 0.1</code>" in page
    assert "<code>-coalesce(dep_delay, 120)</code>" in page
    assert "Mean on validation rows" in page and "Mean on test rows" in page
    # Over the late test flights: a tenth of their mean distance.
    late = y.astype(bool)
    tp = test.column("value_tp").to_numpy()[late].mean()
    assert f"<td>{format_number(tp)}</td>" in page


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            "-dep_delay",  # null for the 8,255 cancelled flights
            "mlprod.yaml: train.value.fn: '-dep_delay' is null on 8,255 of 336,776 rows of the "
            "training matrix; every row needs a value (write coalesce(-dep_delay, 0) if a missing "
            "value is worth nothing)",
        ),
        (
            "CASE WHEN month = 12 THEN -1e308 * 10 ELSE -distance END",
            "mlprod.yaml: train.value.fn: 'CASE WHEN month = 12 THEN -1e308 * 10 ELSE -distance "
            "END' is NaN or infinite on 28,135 of 336,776 rows of the training matrix; every row "
            "needs a value",
        ),
    ],
)
def test_a_missing_value_stops_training_before_any_model_is_fitted(
    make_project: MakeProject, flights_config: dict[str, Any], fn: str, message: str
) -> None:
    project = make_project(small(flights_config, {**VALUE, "fn": fn}))
    matrix = project.build_matrix(features=["sched_hour"])
    with raises(TrainError, message):
        train_pipeline(project.config, project.graph, matrix, project.store)
    assert not (project.store / "models").exists()
