"""The artefact round-trips to identical predictions and refuses tampering and other libraries."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlprod import Project
from mlprod.artefact import ArtefactError, load_artefact, save_artefact
from mlprod.train.encoders import TabularEncoder
from mlprod.train.ensemble import EncodedModel
from mlprod.train.models import fit_model
from mlprod.train.pipeline import FittedPipeline, reference_statistics

FEATURES = ["sched_hour", "distance_miles", "carrier", "origin", "dest", "origin_temp"]


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> tuple[pa.Table, ...]:
    folder = tmp_path_factory.mktemp("artefact_project")
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    example = Path(__file__).resolve().parent.parent / "examples" / "flights" / "mlprod.yaml"
    (folder / "mlprod.yaml").write_text(example.read_text())
    table = Project.load(folder).build_features(features=FEATURES)
    time = table.column("prediction_time")
    train = table.filter(pc.less(time, datetime(2013, 3, 1)))
    valid = table.filter(
        pc.and_(pc.greater_equal(time, datetime(2013, 3, 8)), pc.less(time, datetime(2013, 4, 1)))
    )
    test = table.filter(pc.greater_equal(time, datetime(2013, 11, 8)))
    return train, valid, test


def _labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)


@pytest.fixture(scope="module")
def pipeline(windows: tuple[pa.Table, ...]) -> FittedPipeline:
    train, valid, _ = windows
    encoder = TabularEncoder(FEATURES, {}, "native").fit(train)
    assert set(encoder.levels_) == {"carrier", "origin", "dest"}  # strings become categories
    x_train, x_valid = encoder.transform(train), encoder.transform(valid)
    model = fit_model(
        "lightgbm",
        {"n_estimators": 200},
        (x_train, _labels(train)),
        (x_valid, _labels(valid)),
        encoder.categorical_indices,
        seed=0,
    )
    scores = model.predict_proba(x_valid)
    return FittedPipeline(
        "flights", {}, FEATURES, EncodedModel(encoder, model), "lightgbm", None, 0.3,
        reference=reference_statistics(train, FEATURES, scores),
    )  # fmt: skip


def test_round_trip_gives_identical_predictions(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...], tmp_path: Path
) -> None:
    test = windows[2]
    manifest = save_artefact(pipeline, tmp_path / "model")
    loaded = load_artefact(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(test), pipeline.predict_proba(test))
    assert manifest["libraries"]["lightgbm"]
    assert set(manifest["files"]) == {"pipeline.pkl"}
    assert loaded.reference["features"]["origin"]["shares"].keys() == {"EWR", "JFK", "LGA"}


def test_a_category_seen_only_in_test_maps_to_unknown(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...]
) -> None:
    train, _, test = windows
    seen = set(train.column("dest").to_pylist())
    new = sorted({d for d in test.column("dest").to_pylist() if d not in seen})
    assert new, "some destinations appear only late in 2013"
    assert isinstance(pipeline.scorer, EncodedModel)
    encoded = pipeline.scorer.encoder.levels_["dest"].transform(pa.array(new))
    assert set(encoded.to_pylist()) == {"__unknown__"}


def test_a_tampered_artefact_is_refused(pipeline: FittedPipeline, tmp_path: Path) -> None:
    save_artefact(pipeline, tmp_path / "model")
    with (tmp_path / "model" / "pipeline.pkl").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtefactError) as caught:
        load_artefact(tmp_path / "model")
    assert str(caught.value) == (
        f"artefact {tmp_path / 'model'}: pipeline.pkl was modified after the artefact was saved "
        "(its content hash no longer matches the manifest); refusing to load it"
    )


def test_other_library_versions_are_refused(pipeline: FittedPipeline, tmp_path: Path) -> None:
    manifest = save_artefact(pipeline, tmp_path / "model")
    made = manifest["libraries"]["lightgbm"]
    manifest["libraries"]["lightgbm"] = "3.3.5"
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError) as caught:
        load_artefact(tmp_path / "model")
    assert str(caught.value) == (
        f"artefact {tmp_path / 'model'} was made with lightgbm 3.3.5, but this environment has "
        f"{made}; predictions could differ, so it is refused. Install lightgbm==3.3.5 or "
        "retrain the model here"
    )
