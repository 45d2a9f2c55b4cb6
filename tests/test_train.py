"""Training end to end on the flights example: the CLI, the registry, the pyfunc, the zoo."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from mlprod import ConfigError, Project
from mlprod.artefact import load_artefact
from mlprod.cli import app
from mlprod.project.training import ModelSpec, SearchRange, TuningConfig
from mlprod.train.candidates import labels
from mlprod.train.encoders import TabularEncoder
from mlprod.train.models import fit_model
from mlprod.train.tuning import tune

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
MakeProject = Callable[[dict[str, Any]], Project]


@pytest.fixture(scope="module")
def trained(example_run: tuple[Project, Any]) -> tuple[Project, Any]:
    """The example trained by ``mlprod run --json`` (a smaller search), and its summary: the
    session's one training of the example (conftest), which the deployment tests serve."""
    return example_run


def test_run_registers_a_model_that_beats_the_raw_column_baseline(
    trained: tuple[Project, Any],
) -> None:
    _, summary = trained
    keys = {"model_version", "test_auc", "test_auc_ci", "threshold", "test_value", "baseline_auc"}
    assert keys | {"report_path"} <= set(summary)
    assert summary["model_version"] == 1
    low, high = summary["test_auc_ci"]
    assert low < summary["test_auc"] < high
    assert summary["test_auc"] > summary["baseline_auc"] + 0.05
    report = Path(summary["report_path"])
    html = report.read_text()
    assert "http://" not in html and "https://" not in html
    metrics = json.loads((report.parent / "metrics.json").read_text())
    difference_low, _ = metrics["baseline"]["difference_ci"]
    assert difference_low > 0, "the gain over the baseline is significant"
    assert summary["features"]["rows"] == 336_776


def test_leaderboard_prices_the_ensembles(trained: tuple[Project, Any]) -> None:
    project, summary = trained
    manifest = json.loads((Path(summary["artefact_path"]) / "manifest.json").read_text())
    assert manifest["lineage"]["config_hash"]
    evaluation = project.evaluation("1")
    assert evaluation["test"]["auc"] == pytest.approx(summary["test_auc"], abs=1e-5)
    result = CliRunner().invoke(app, ["models", "show", "flights", "-p", str(project.folder)])
    assert result.exit_code == 0, result.output


def test_mlflow_pyfunc_scores_like_the_artefact(trained: tuple[Project, Any]) -> None:
    import mlflow

    from mlprod.registry import models, using_tracking_uri

    project, summary = trained
    uri = project.tracking_uri()
    models.promote(uri, "flights", 1)
    table = project.build_features(features=None).slice(300_000, 500)
    direct = load_artefact(summary["artefact_path"]).predict_proba(table)
    with using_tracking_uri(uri):
        loaded = mlflow.pyfunc.load_model("models:/flights@champion")
        via_mlflow = np.asarray(loaded.predict(table.to_pandas()))
    assert np.allclose(via_mlflow.ravel(), direct, atol=1e-12)


def test_promote_and_rollback_move_the_champion(trained: tuple[Project, Any]) -> None:
    project, _ = trained
    runner = CliRunner()
    out = runner.invoke(app, ["models", "promote", "flights", "1", "-p", str(project.folder)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["models", "rollback", "flights", "-p", str(project.folder)])
    assert out.exit_code == 2
    assert out.output.startswith("error: ")


@pytest.mark.parametrize("kind", ["random_forest", "svm", "mlp", "logistic"])
def test_every_model_kind_learns_something(trained: tuple[Project, Any], kind: str) -> None:
    project, _ = trained
    table = project.build_features(features=["sched_hour", "carrier", "origin", "origin_temp"])
    time = table.column("prediction_time")
    train = table.filter(pc.less(time, datetime(2013, 3, 1))).slice(0, 20_000)
    valid = table.filter(pc.greater_equal(time, datetime(2013, 3, 8))).slice(0, 10_000)
    encoder = TabularEncoder(["sched_hour", "carrier", "origin", "origin_temp"], {}, "dense")
    encoder.fit(train)
    x_train, x_valid = encoder.transform(train), encoder.transform(valid)
    params: dict[str, Any] = {"epochs": 5} if kind == "mlp" else {}
    if kind == "random_forest":
        params = {"n_estimators": 50}
    model = fit_model(kind, params, (x_train, labels(train)), (x_valid, labels(valid)), [], 0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels(valid), model.predict_proba(x_valid)) > 0.6


def test_an_interrupted_search_resumes(tmp_path: Path) -> None:
    spec = ModelSpec(kind="lightgbm", search={"feature_fraction": SearchRange(low=0, high=1)})
    seen: list[float] = []  # trials (with a pruning callback); refits of a best trial have none
    refits: list[float] = []

    def fit(params: dict[str, Any], callbacks: list[Any]) -> tuple[Any, float]:
        (seen if callbacks else refits).append(params["feature_fraction"])
        return object(), 1 - (params["feature_fraction"] - 0.3) ** 2

    journal = tmp_path / "study.log"
    first = tune(spec, fit, TuningConfig(trials=3), journal, "resume")  # type: ignore[arg-type]
    assert (first.trials, len(seen)) == (3, 3)
    second = tune(spec, fit, TuningConfig(trials=5), journal, "resume")  # type: ignore[arg-type]
    assert second.trials == 5
    assert len(seen) == 5, "only the two missing trials ran"
    assert len(refits) <= 1, "a best trial from the first session is refitted once"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t["models"].append({"kind": "xgboost"}),
            "mlprod.yaml: train.models[2].kind: should be 'lightgbm', 'logistic', "
            "'random_forest', 'svm' or 'mlp', found 'xgboost'",
        ),
        (
            lambda t: t["value"].pop("fp"),
            "mlprod.yaml: train.value.fp: required, but missing",
        ),
        (
            lambda t: t.update(
                split={"method": "time_series_cv", "valid_end": "2013-11-01", "valid_lenght": "30d"}
            ),
            "mlprod.yaml: train.split.valid_lenght: unknown key 'valid_lenght' "
            "(did you mean 'valid_length'?)",
        ),
        (
            lambda t: t.update(split={"method": "kfold", "folds": 1}),
            "mlprod.yaml: train.split.folds: should be greater than or equal to 2, found 1",
        ),
        (
            lambda t: t["split"].update(valid_end="2013-08-15"),
            "mlprod.yaml: train.split: valid_end (2013-08-15 00:00) must come after train_end "
            "(2013-09-01 00:00) plus the gap; the windows would overlap",
        ),
    ],
)
def test_bad_training_config_is_refused(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    change(flights_config["train"])
    with pytest.raises(ConfigError) as caught:
        make_project(flights_config)
    assert str(caught.value) == message


def test_human_output_of_train_and_evaluate(trained: tuple[Project, Any]) -> None:
    from mlprod.api import TrainSummary
    from mlprod.cli import _print_training, console

    project, summary = trained
    board = [
        {"name": "stacking(lightgbm+logistic)", "kind": "ensemble:stacking", "valid_auc": 0.7512},
        {"name": "lightgbm", "kind": "lightgbm", "valid_auc": 0.75, "fold_auc_std": 0.0123},
    ]
    fields = {k: summary[k] for k in ("model_version", "threshold", "test_value", "run_id")}
    result = TrainSummary(
        model_name="flights",
        test_auc=summary["test_auc"],
        test_auc_ci=tuple(summary["test_auc_ci"]),
        baseline_auc=summary["baseline_auc"],
        report_path=summary["report_path"],
        artefact_path=summary["artefact_path"],
        leaderboard=board,
        **fields,
    )
    with console.capture() as captured:
        _print_training(result)
    text = captured.get()
    assert "candidates" in text and f"test AUC {summary['test_auc']:.4f}" in text
    # Whole names and headings (no cut to a pipe's 80 columns); only the columns with values.
    assert "stacking(lightgbm+logistic)" in text and "0.7512" in text
    assert "± folds" in text and "0.012" in text and "size" not in text
    out = CliRunner().invoke(app, ["evaluate", "1", "-p", str(project.folder)])
    assert out.exit_code == 0, out.output
    assert "version 1" in out.output and "AUC" in out.output and '"auc"' not in out.output
