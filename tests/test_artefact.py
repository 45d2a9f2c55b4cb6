"""The artefact: a versioned contract that round-trips to identical predictions, loads wherever
training code lives, runs no code but model classes, checks its input, and refuses tampering,
newer formats, another major mlprod and other libraries."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
import struct
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import expect
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlprod import Project
from mlprod.artefact import (
    ARTEFACT_FORMAT,
    FittedPipeline,
    InputSchema,
    load_artefact,
    read_manifest,
    reference_statistics,
    save_artefact,
)
from mlprod.errors import ArtefactError, InputError
from mlprod.features.matrix import StepTime
from mlprod.train.encoders import TabularEncoder
from mlprod.train.ensemble import EncodedModel
from mlprod.train.models import fit_model
from mlprod.train.trainer import input_schema

FEATURES = ["sched_hour", "distance_miles", "carrier", "origin", "dest", "origin_temp"]
MLPROD = metadata.version("mlprod")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("artefact_project")
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    example = Path(__file__).resolve().parent.parent / "examples" / "flights" / "mlprod.yaml"
    (folder / "mlprod.yaml").write_text(example.read_text())
    project = Project.load(folder)
    matrix = project.build_matrix(features=FEATURES)
    time = matrix.table.column("prediction_time")
    train = matrix.table.filter(pc.less(time, datetime(2013, 3, 1)))
    valid = matrix.table.filter(
        pc.and_(pc.greater_equal(time, datetime(2013, 3, 8)), pc.less(time, datetime(2013, 4, 1)))
    )
    test = matrix.table.filter(pc.greater_equal(time, datetime(2013, 11, 8)))
    schema = input_schema(project.graph, matrix, FEATURES)
    return {"windows": (train, valid, test), "schema": schema}


@pytest.fixture(scope="module")
def windows(built: dict[str, Any]) -> tuple[pa.Table, ...]:
    windows: tuple[pa.Table, ...] = built["windows"]
    return windows


def _labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)


@pytest.fixture(scope="module")
def pipeline(built: dict[str, Any]) -> FittedPipeline:
    train, valid, _ = built["windows"]
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
        reference=reference_statistics(train, FEATURES, scores), input_schema=built["schema"],
    )  # fmt: skip


def _rewrite(folder: Path, pickled: bytes, **manifest_changes: Any) -> None:
    """Replace the pickle (and the manifest's hashes, as if it had been saved so)."""
    (folder / "pipeline.pkl").write_bytes(pickled)
    manifest = read_manifest(folder)
    manifest["files"]["pipeline.pkl"] = hashlib.sha256(pickled).hexdigest()
    text = "\n".join(f"{name}:{digest}" for name, digest in sorted(manifest["files"].items()))
    manifest["content_hash"] = hashlib.sha256(text.encode()).hexdigest()
    for key, value in manifest_changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))


# --- the round trip and the manifest ---------------------------------------------------------


def test_round_trip_gives_identical_predictions(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...], tmp_path: Path
) -> None:
    test = windows[2]
    manifest = save_artefact(pipeline, tmp_path / "model")
    loaded = load_artefact(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(test), pipeline.predict_proba(test))
    assert manifest["libraries"]["lightgbm"]
    assert manifest["format"] == ARTEFACT_FORMAT == 1
    assert manifest["mlprod_version"] == MLPROD
    assert set(manifest["files"]) == {"pipeline.pkl"}
    assert loaded.reference["features"]["origin"]["shares"].keys() == {"EWR", "JFK", "LGA"}


def test_the_input_schema_is_in_the_manifest_and_on_the_pipeline(
    pipeline: FittedPipeline, tmp_path: Path
) -> None:
    manifest = save_artefact(pipeline, tmp_path / "model")
    schema = manifest["input_schema"]
    assert InputSchema.from_dict(schema) == pipeline.input_schema
    assert load_artefact(tmp_path / "model").input_schema == pipeline.input_schema
    assert schema["keys"] == ["flight_id"]
    features = {f["name"]: f for f in schema["features"]}
    assert list(features) == FEATURES
    assert {n: f["dtype"] for n, f in features.items()} == {
        "sched_hour": "int64",
        "distance_miles": "int64",
        "carrier": "string",
        "origin": "string",
        "dest": "string",
        "origin_temp": "double",
    }
    assert all(len(f["definition_hash"]) == 16 for f in features.values())
    request = {f["name"]: f for f in schema["request"]}
    assert request["flight_id"]["key"] is True
    assert {"hour", "distance", "carrier", "origin", "dest"} <= set(request)
    assert all(set(f) == {"name", "type", "nullable", "key"} for f in schema["request"])


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


# --- loading does not depend on where training code lives ---------------------------------------


def test_a_model_whose_classes_moved_still_loads(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...], tmp_path: Path
) -> None:
    """The pickle records mlprod.train.models etc.; as if those modules had moved since."""
    save_artefact(pipeline, tmp_path / "model")
    pickled = (tmp_path / "model" / "pipeline.pkl").read_bytes()
    assert b"mlprod.train.models" in pickled
    moved = pickled.replace(b"mlprod.train.", b"mlprod.moved.")  # same length: frames stay valid
    assert b"mlprod.train." not in moved
    _rewrite(tmp_path / "model", moved)
    with pytest.raises(ModuleNotFoundError):
        __import__("mlprod.moved.models")
    loaded = load_artefact(tmp_path / "model")
    test = windows[2]
    assert np.array_equal(loaded.predict_proba(test), pipeline.predict_proba(test))


def test_an_artefact_made_before_formats_loads_as_format_0(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...], tmp_path: Path
) -> None:
    """As the first mlprod saved it: a plain pickle naming mlprod.train.pipeline, no format
    and no input schema in the manifest, no input schema on the pipeline."""
    save_artefact(pipeline, tmp_path / "model")
    old = copy.copy(pipeline)
    del old.__dict__["input_schema"]
    pickled = pickle.dumps(old, protocol=3)  # protocol 3 names classes as text lines
    pickled = pickled.replace(b"mlprod.artefact.pipeline\n", b"mlprod.train.pipeline\n")
    assert b"mlprod.train.pipeline\nFittedPipeline" in pickled
    _rewrite(tmp_path / "model", pickled, format=None, input_schema=None)
    loaded = load_artefact(tmp_path / "model")
    assert loaded.input_schema is None
    test = windows[2]
    assert np.array_equal(loaded.predict_proba(test), pipeline.predict_proba(test))
    with expect.raises(InputError, f"missing feature column 'origin_temp'; {_FEATURES_TEXT}"):
        loaded.predict_proba(test.drop_columns(["origin_temp"]))


def test_an_unregistered_mlprod_class_fails_at_save_time(
    pipeline: FittedPipeline, tmp_path: Path
) -> None:
    odd = copy.copy(pipeline)
    odd.lineage = {"step": StepTime("result", 1.0, (), False)}
    with expect.raises(
        ArtefactError,
        "cannot save the model: it holds the mlprod class 'mlprod.features.matrix.StepTime', "
        "which is not in the artefact class table; add 'StepTime': "
        "'mlprod.features.matrix:StepTime' to mlprod/artefact/classes.py",
    ):
        save_artefact(odd, tmp_path / "model")
    assert not (tmp_path / "model").exists()


class _RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('os').getpid()",))


def test_a_pickle_that_would_run_code_is_refused(pipeline: FittedPipeline, tmp_path: Path) -> None:
    save_artefact(pipeline, tmp_path / "model")
    _rewrite(tmp_path / "model", pickle.dumps(_RunsCode(), protocol=5))
    with expect.raises(
        ArtefactError,
        f"artefact {tmp_path / 'model'}: the model refers to 'builtins.eval', which is not one "
        "a model is made of; refusing to load it (only model classes load, so that an "
        "artefact cannot run code)",
    ):
        load_artefact(tmp_path / "model")
    with expect.raises(
        ArtefactError,
        "cannot save the model: it refers to 'builtins.eval', which is not one a model is made of",
    ):
        save_artefact(dataclasses.replace(pipeline, lineage={"x": _RunsCode()}), tmp_path / "other")


# --- versions ----------------------------------------------------------------------------------


def test_a_newer_format_is_refused(pipeline: FittedPipeline, tmp_path: Path) -> None:
    save_artefact(pipeline, tmp_path / "model")
    _rewrite(tmp_path / "model", (tmp_path / "model" / "pipeline.pkl").read_bytes(), format=2)
    with expect.raises(
        ArtefactError,
        f"artefact {tmp_path / 'model'} was made by mlprod {MLPROD} with artefact format 2; "
        f"this mlprod ({MLPROD}) reads formats up to 1; upgrade mlprod",
    ):
        load_artefact(tmp_path / "model")


def test_another_major_mlprod_is_refused_and_a_minor_one_loads(
    pipeline: FittedPipeline, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    save_artefact(pipeline, folder)
    pickled = (folder / "pipeline.pkl").read_bytes()
    major = int(MLPROD.split(".")[0])
    _rewrite(folder, pickled, mlprod_version=f"{major + 1}.0.0")
    with expect.raises(
        ArtefactError,
        f"artefact {folder} was made by mlprod {major + 1}.0.0, but this is mlprod {MLPROD}; "
        f"a model loads only in the major version that made it. Load it with mlprod "
        f"{major + 1}.x or retrain the model with this one",
    ):
        load_artefact(folder)
    _rewrite(folder, pickled, mlprod_version=f"{major}.99.3")
    assert load_artefact(folder).model_name == "lightgbm"


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


# --- the input is checked against the schema ---------------------------------------------------

_FEATURES_TEXT = (
    "the model scores rows with its 6 features: 'carrier', 'dest', 'distance_miles', "
    "'origin', 'origin_temp', 'sched_hour'"
)


def test_a_missing_feature_column_is_named(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...]
) -> None:
    test = windows[2].slice(0, 100)
    for score in (pipeline.predict_proba, pipeline.raw_scores, pipeline.decide):
        with expect.raises(
            InputError, f"missing feature column 'origin_temp' (double); {_FEATURES_TEXT}"
        ):
            score(test.drop_columns(["origin_temp"]))
    with expect.raises(
        InputError,
        f"missing feature columns 'sched_hour' (int64), 'origin' (string); {_FEATURES_TEXT}",
    ):
        pipeline.predict_proba(test.drop_columns(["sched_hour", "origin"]))
    twice = test.append_column("origin", test.column("origin"))
    with expect.raises(InputError, "feature column 'origin' is given more than once; give it once"):
        pipeline.predict_proba(twice)


def test_a_mistyped_feature_column_is_named(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...]
) -> None:
    test = windows[2].slice(0, 100)
    as_text = _replace(test, "origin_temp", pc.cast(test.column("origin_temp"), pa.string()))
    for score in (pipeline.predict_proba, pipeline.raw_scores, pipeline.decide):
        with expect.raises(InputError, "feature 'origin_temp': expected double, got string"):
            score(as_text)
    as_number = _replace(test, "origin", pa.array(np.arange(100.0)))
    with expect.raises(InputError, "feature 'origin': expected string, got double"):
        pipeline.predict_proba(as_number)
    fractions = _replace(test, "sched_hour", pa.array(np.full(100, 6.5)))
    with expect.raises(
        InputError,
        "feature 'sched_hour': expected int64, got double with values that do not fit int64 "
        "(e.g. fractions or out-of-range numbers)",
    ):
        pipeline.predict_proba(fractions)
    frame = test.to_pandas()
    frame["origin_temp"] = "warm"
    with expect.raises(InputError, "feature 'origin_temp': expected double, got string"):
        pipeline.predict_proba(frame)


def test_compatible_types_are_cast_and_extra_columns_ignored(
    pipeline: FittedPipeline, windows: tuple[pa.Table, ...]
) -> None:
    test = windows[2].slice(0, 500)
    expected = pipeline.predict_proba(test)
    whole = _replace(test, "origin_temp", pc.round(test.column("origin_temp")))
    as_int = _replace(test, "origin_temp", pc.cast(whole.column("origin_temp"), pa.int64()))
    assert np.array_equal(pipeline.predict_proba(as_int), pipeline.predict_proba(whole))
    as_float = _replace(test, "sched_hour", pc.cast(test.column("sched_hour"), pa.float64()))
    assert np.array_equal(pipeline.predict_proba(as_float), expected)
    nulls = _replace(test, "origin_temp", pa.nulls(test.num_rows))
    typed_nulls = _replace(test, "origin_temp", pa.nulls(test.num_rows, pa.float64()))
    assert np.array_equal(pipeline.predict_proba(nulls), pipeline.predict_proba(typed_nulls))
    only_features = test.select(list(reversed(FEATURES)))  # no keys, no label, another order
    assert np.array_equal(pipeline.predict_proba(only_features), expected)
    with_extra = test.append_column("not_a_feature", pa.array(["x"] * test.num_rows))
    assert np.array_equal(pipeline.predict_proba(with_extra), expected)
    assert np.array_equal(pipeline.predict_proba(test.to_pandas()), expected)
    frame = pd.DataFrame({name: test.column(name).to_pylist() for name in FEATURES})
    frame["origin_temp"] = None
    assert np.array_equal(pipeline.predict_proba(frame), pipeline.predict_proba(typed_nulls))


def _replace(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def test_a_frame_between_a_module_and_its_name_is_still_read() -> None:
    """Framing is not on the stack: a pickle whose frame boundary falls between the module and
    the class name (as the breast-cancer model's did) names the class directly."""
    from mlprod.artefact.pickling import pickled_names

    def frame(body: bytes) -> bytes:
        return b"\x95" + struct.pack("<Q", len(body)) + body

    def text(value: str) -> bytes:  # SHORT_BINUNICODE, then MEMOIZE
        return b"\x8c" + bytes([len(value)]) + value.encode() + b"\x94"

    data = (
        b"\x80\x04" + frame(text("collections")) + frame(text("OrderedDict") + b"\x93\x94)R\x94.")
    )
    assert pickle.loads(data) == {}
    assert pickled_names(data) == {("collections", "OrderedDict")}
