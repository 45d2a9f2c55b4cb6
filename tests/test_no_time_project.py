"""A table without time or id (issue 10, point 2): a CSV of sklearn's breast-cancer data,
its 30 measurements made features by one `kind: columns` line, trained end to end.

Also: what needs a time is refused at load with a message naming it, and a feature may have
the name of a column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from mlprod import Project
from mlprod.errors import ConfigError, FeatureError
from mlprod.project.loading import parse_config


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """569 rows: 30 measurements, a text column with nulls, a 'M'/'B' diagnosis; no time, no
    id. Returns the file and the measurement columns."""
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    path = tmp_path_factory.mktemp("cancer") / "cancer.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "size", "diagnosis"])
        for i, (row, target) in enumerate(zip(data.data, data.target, strict=True)):
            area = row[names.index("mean_area")]
            size = "" if i % 50 == 0 else ("large" if area > 700 else "small")
            writer.writerow([*row, size, "B" if target else "M"])
    return path, names


def cancer_config(csv_path: Path, names: list[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {n: {"type": "float"} for n in names}
    columns["size"] = {"type": "string"}
    columns["diagnosis"] = {"type": "string", "nullable": False}
    return {
        "name": "cancer",
        "sources": {"cells": {"from": {"kind": "csv", "path": str(csv_path)}, "columns": columns}},
        "spine": {"source": "cells", "label": "diagnosis = 'M'"},
        "features": [{"kind": "columns", "columns": "all"}],
        "train": {
            "split": {"method": "random", "valid_fraction": 0.25, "test_fraction": 0.25},
            "models": [{"kind": "lightgbm", "params": {"n_estimators": 30, "num_leaves": 7}}],
            "tuning": {"trials": 1},
        },
    }


def write(folder: Path, config: dict[str, Any]) -> Project:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Project.load(folder)


def test_table_without_time_or_id_trains_to_a_registered_model(
    tmp_path: Path, cancer_csv: tuple[Path, list[str]]
) -> None:
    csv_path, names = cancer_csv
    project = write(tmp_path / "cancer", cancer_config(csv_path, names))
    features = [f.name for f in project.config.feature_definitions]
    assert features == [*names, "size"], "every column but the label, in the file's order"
    assert project.graph.nodes["size"].feature.categorical is not None
    assert project.graph.nodes["mean_radius"].feature.categorical is None

    matrix = project.build_features()
    assert matrix.num_rows == 569
    assert matrix.column_names[:4] == [
        "row_number",
        "prediction_time",
        "label",
        "label_available_at",
    ]
    assert matrix.column("row_number").to_pylist() == list(range(1, 570)), "the file's order"
    assert len(set(matrix.column("prediction_time").to_pylist())) == 1, "one constant time"
    first = matrix.slice(0, 1).to_pylist()[0]
    assert first["mean_radius"] == pytest.approx(17.99)
    assert first["label"] is True  # the first row of the data set is malignant

    summary = project.train()
    assert summary.model_version == 1
    assert summary.test_auc > 0.9
    metrics = json.loads((Path(summary.artefact_path) / "metrics.json").read_text())
    report = (Path(summary.artefact_path) / "report.html").read_text()
    note = (
        "The spine declares no keys: each event is identified by its row number in source "
        "'cells' (row_number, from 1, in the source's row order)."
    )
    assert note.replace("'", "&#x27;") in report
    assert metrics["test"]["auc"] == pytest.approx(summary.test_auc)

    # The registered model scores the table's rows; every feature is named like its column.
    scored = tmp_path / "scores.parquet"
    batch = project.score("cancer/1", "cells", str(scored))
    assert batch.rows == 569
    scores = pq.read_table(scored)
    assert "row_number" not in scores.column_names, "a request has no row number to carry"
    assert scores.column("score").to_pylist()[0] > 0.5  # the first row is malignant

    # What cannot work without a time or keys says so, instead of a KeyError.
    with pytest.raises(FeatureError) as caught:
        project.parity("cancer/1", sample=5)
    assert str(caught.value) == (
        "parity replays the spine's events at their time by their keys, but spine.time is not "
        "declared in mlprod.yaml"
    )
    with pytest.raises(FeatureError) as caught:
        project.outcomes()
    assert str(caught.value) == (
        "outcomes find each logged prediction's row by its keys and take its label once known, "
        "but spine.label_available_at is not declared in mlprod.yaml"
    )


def test_columns_shorthand_lists_and_exceptions(cancer_csv: tuple[Path, list[str]]) -> None:
    csv_path, names = cancer_csv
    config = cancer_config(csv_path, names)
    config["features"] = [
        {"kind": "columns", "columns": "all", "except": ["size", "mean_area"]},
        {"name": "mean_radius", "kind": "expr", "expr": "mean_radius * 2"},
    ]
    loaded = parse_config(config).feature_definitions
    assert [f.name for f in loaded][-2:] == ["worst_fractal_dimension", "mean_radius"]
    assert len(loaded) == 29, "30 measurements less mean_area; mean_radius is its own feature"
    config["features"] = [{"kind": "columns", "columns": ["mean_area", "size"]}]
    assert [f.name for f in parse_config(config).feature_definitions] == ["mean_area", "size"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["features"].__setitem__(
                0, {"kind": "columns", "columns": "all", "except": ["sise"]}
            ),
            "mlprod.yaml: features[0].except: the spine source 'cells' has no column 'sise' "
            "(did you mean 'size'?)",
        ),
        (
            lambda c: c["features"].__setitem__(0, {"kind": "columns", "columns": ["diagnosis"]}),
            "mlprod.yaml: features[0].columns: 'diagnosis' cannot be a feature: spine.label reads "
            "it; leave it out of the list",
        ),
        (
            lambda c: c["features"].__setitem__(0, {"kind": "columns", "columns": "some"}),
            "mlprod.yaml: features[0].columns: should be 'all' or a list of column names, "
            "found 'some'",
        ),
    ],
)
def test_columns_shorthand_errors(
    cancer_csv: tuple[Path, list[str]], change: Any, expected: str
) -> None:
    config = cancer_config(*cancer_csv)
    change(config)
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert str(caught.value) == expected


TIME_FIX = "declare spine.time and spine.label_available_at"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["features"].append(
                {
                    "name": "n_cells",
                    "kind": "aggregate",
                    "source": "cells",
                    "keys": ["size"],
                    "function": "count",
                    "window": "7d",
                }
            ),
            "mlprod.yaml: features[1]: aggregate feature 'n_cells' reads the rows known before "
            f"each prediction's time, but spine.time is not declared; {TIME_FIX}, or remove the "
            "feature",
        ),
        (
            lambda c: c["features"].append(
                {
                    "name": "last_area",
                    "kind": "asof",
                    "source": "cells",
                    "keys": ["size"],
                    "value": "mean_area",
                }
            ),
            "mlprod.yaml: features[1]: asof feature 'last_area' reads the rows known before each "
            f"prediction's time, but spine.time is not declared; {TIME_FIX}, or remove the feature",
        ),
        (
            lambda c: (
                c["sources"].__setitem__(
                    "sizes",
                    {
                        "from": c["sources"]["cells"]["from"],
                        "time": "checked",
                        "columns": {"size": {"type": "string"}, "checked": {"type": "timestamp"}},
                    },
                ),
                c["features"].append(
                    {
                        "name": "size_checked",
                        "kind": "lookup",
                        "source": "sizes",
                        "keys": ["size"],
                        "value": "checked",
                    }
                ),
            ),
            "mlprod.yaml: features[1]: lookup feature 'size_checked' reads source 'sizes', whose "
            "rows have a time (sources.sizes.time), so it needs each prediction's time, but "
            f"spine.time is not declared; {TIME_FIX}, or remove the feature",
        ),
        (
            lambda c: c["train"].__setitem__(
                "split",
                {"method": "out_of_time", "train_end": "2020-01-01", "valid_end": "2021-01-01"},
            ),
            "mlprod.yaml: train.split.method: 'out_of_time' cuts the events by their prediction "
            f"time, but spine.time is not declared; use method: random or kfold, or {TIME_FIX}",
        ),
        (
            lambda c: c["train"].__setitem__(
                "split", {"method": "time_series_cv", "valid_end": "2021-01-01"}
            ),
            "mlprod.yaml: train.split.method: 'time_series_cv' cuts the events by their "
            "prediction time, but spine.time is not declared; use method: random or kfold, or "
            f"{TIME_FIX}",
        ),
        (
            lambda c: c["spine"].__setitem__("label_available_at", "now()"),
            "mlprod.yaml: spine.time: required with spine.label_available_at (the prediction time "
            "each outcome's availability is compared with); for a table without time leave out "
            "both",
        ),
        (
            lambda c: c["spine"].__setitem__("time", "now()"),
            "mlprod.yaml: spine.label_available_at: required with spine.time (when each outcome "
            "becomes known); for a table without time leave out both",
        ),
    ],
    ids=[
        "aggregate",
        "asof",
        "timed_lookup",
        "out_of_time",
        "time_series_cv",
        "no_time",
        "no_label_time",
    ],
)
def test_what_needs_a_time_is_refused_at_load(
    tmp_path: Path, cancer_csv: tuple[Path, list[str]], change: Any, expected: str
) -> None:
    config = cancer_config(*cancer_csv)
    change(config)
    with pytest.raises(ConfigError) as caught:
        write(tmp_path / "p", config)
    assert str(caught.value) == expected


def test_a_feature_may_have_the_name_of_a_column(
    tmp_path: Path, cancer_csv: tuple[Path, list[str]]
) -> None:
    """The feature means the feature; its own expression reads the column."""
    config = cancer_config(*cancer_csv)
    config["spine"]["keys"] = []
    config["features"] = [
        {"name": "mean_radius", "kind": "expr", "expr": "mean_radius * 2"},
        {"name": "radius_plus", "kind": "expr", "expr": "mean_radius + 1"},
        {"name": "size", "kind": "expr", "expr": "size", "categorical": {}},
    ]
    project = write(tmp_path / "named", config)
    types = project.check()
    assert types["mean_radius"] == "DOUBLE"
    assert project.graph.nodes["radius_plus"].deps == ("mean_radius",)
    matrix = project.build_features()
    first = matrix.slice(0, 1).to_pylist()[0]
    assert first["mean_radius"] == pytest.approx(2 * 17.99)
    assert first["radius_plus"] == pytest.approx(2 * 17.99 + 1)
    assert matrix.column("size").to_pylist()[:3] == [None, "large", "large"]


def test_numbering_needs_a_free_row_number_name(
    tmp_path: Path, cancer_csv: tuple[Path, list[str]]
) -> None:
    config = cancer_config(*cancer_csv)
    config["sources"]["cells"]["columns"]["row_number"] = {"type": "int"}
    project = write(tmp_path / "p", config)
    with pytest.raises(ConfigError) as caught:
        _ = project.graph
    assert str(caught.value) == (
        "mlprod.yaml: spine.keys: not declared, so events are numbered as 'row_number', but "
        "source 'cells' has a column of that name; declare spine.keys"
    )
