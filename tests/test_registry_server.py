"""The registry on an MLflow tracking server: `registry: {tracking_uri: http://...}`.

A real `mlflow server` on loopback, its runs and versions in a fresh PostgreSQL database and its
artefacts in a folder it serves; a copy of the flights example pointed at it is trained,
registered, promoted, batch-scored and served. Nothing may land in the project's own store, and
the artefact scored is a verified copy downloaded into the local cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import copy_example, copy_flights
from expect import raises
from live_server import free_port
from typer.testing import CliRunner

from mlprod import Project
from mlprod.artefact import read_manifest
from mlprod.cli import app
from mlprod.errors import ArtefactError, ConfigError, RegistryError
from mlprod.project.loading import parse_config
from mlprod.registry._cache import CACHE_VARIABLE
from mlprod.train.trainer import config_hash

MODEL = "flights"
SERVER_START_SECONDS = 180
SCORE_AT = "2013-12-31T12:00:00"  # batch scoring: after every request row
AT = "2013-07-15T17:00:00"  # the live request's prediction time
RECORD: dict[str, Any] = {
    "flight_id": 1, "hour": 19, "minute": 0, "year": 2013, "month": 7, "day": 15,
    "distance": 1065, "carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
    "flight": 1545,
}  # fmt: skip

# --- the registry section ----------------------------------------------------------------------


@pytest.fixture
def no_environment_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.usefixtures("no_environment_uri")
def test_the_default_is_a_sqlite_store_inside_the_project(
    make_project: Callable[[dict[str, Any]], Project], flights_config: dict[str, Any]
) -> None:
    project = make_project(flights_config)
    assert project.tracking_uri() == f"sqlite:///{(project.store / 'mlflow.db').resolve()}"


@pytest.mark.usefixtures("no_environment_uri")
@pytest.mark.parametrize(
    ("registry", "train"),
    [
        ("http://127.0.0.1:5000", None),
        (None, "http://127.0.0.1:5000"),  # the older spelling
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),  # both, agreeing
    ],
)
def test_registry_tracking_uri_and_its_alias(
    make_project: Callable[[dict[str, Any]], Project],
    flights_config: dict[str, Any],
    registry: str | None,
    train: str | None,
) -> None:
    if registry:
        flights_config["registry"] = {"tracking_uri": registry}
    if train:
        flights_config["train"]["tracking_uri"] = train
    assert make_project(flights_config).tracking_uri() == "http://127.0.0.1:5000"


def test_two_different_tracking_uris_are_refused(flights_config: dict[str, Any]) -> None:
    flights_config["registry"] = {"tracking_uri": "http://mlflow:5000"}
    flights_config["train"]["tracking_uri"] = "sqlite:///old.db"
    with raises(
        ConfigError,
        "mlprod.yaml: registry.tracking_uri ('http://mlflow:5000') and train.tracking_uri "
        "('sqlite:///old.db') name different tracking stores; train.tracking_uri is the older "
        "spelling of registry.tracking_uri: keep only registry.tracking_uri",
    ):
        parse_config(flights_config)


def test_a_misspelt_registry_key_is_named(flights_config: dict[str, Any]) -> None:
    flights_config["registry"] = {"tracking_url": "http://mlflow:5000"}
    with raises(
        ConfigError,
        "mlprod.yaml: registry.tracking_url: unknown key 'tracking_url' "
        "(did you mean 'tracking_uri'?)",
    ):
        parse_config(flights_config)


def test_moving_the_registry_leaves_the_lineage_alone(flights_config: dict[str, Any]) -> None:
    """Where versions are kept is not what a model computes: the recorded config hash (and
    the definitions kept in the artefact) are the same on a server."""
    local = parse_config(flights_config)
    flights_config["registry"] = {"tracking_uri": "http://mlflow:5000"}
    assert config_hash(parse_config(flights_config)) == config_hash(local)


# --- a real MLflow server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    uri: str
    artifacts: Path  # the server's --artifacts-destination
    database: str  # its backend store, a database of its own


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The artefact cache of this module's commands (and servers), and no tracking URI from
    the environment: the project's registry section alone must point at the server."""
    folder = tmp_path_factory.mktemp("artefact-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_VARIABLE, str(folder))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield folder


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server` on a free loopback port, backed by a fresh PostgreSQL database (dropped
    afterwards) and serving the artefacts of a temporary folder."""
    import psycopg
    from sqlalchemy.engine import make_url

    database = f"mlprod_registry_{uuid.uuid4().hex[:12]}"
    backend = make_url(postgres_url).set(drivername="postgresql+psycopg", database=database)
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "mlflow", "server"),
                        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                        *("--backend-store-uri", backend.render_as_string(hide_password=False)),
                        *("--serve-artifacts", "--artifacts-destination", str(root / "artifacts")),
                    ],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its uvicorn process stops with it
                    # No job runner (for GenAI evaluations): a process that mlprod never uses.
                    env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                )
            try:
                uri = f"http://127.0.0.1:{port}"
                _wait_until_answers(
                    process, f"{uri}/health", log, SERVER_START_SECONDS, "mlflow server"
                )
                yield Server(uri, root / "artifacts", database)
            finally:
                _stop(process)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_until_answers(
    process: subprocess.Popen[bytes], url: str, log: Path, seconds: float, what: str
) -> None:
    """Until ``url`` answers 200; fails if the process exits first or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} did not answer {url} in {seconds:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group the server leads (its own session: only its processes)."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def project(
    server: Server, cache: Path, flights_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The flights example on two days of each month, with its smallest training (one
    logistic regression, one trial), its registry on the server."""
    root = tmp_path_factory.mktemp("registry-server")
    sample = copy_flights(flights_db, root / "sample.duckdb", "day <= 2")
    folder = copy_example(root)
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(sample)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    config.pop("example_data", None)
    config["train"]["models"] = [{"kind": "logistic", "params": {"C": 1.0}}]
    config["train"]["tuning"] = {"trials": 1, "seed": 0}
    config["train"].pop("ensemble", None)
    config["registry"] = {"tracking_uri": server.uri}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def mlprod(*args: str | Path) -> dict[str, Any]:
    """Run a command in this process; return what it printed as JSON (nothing else may be
    printed: MLflow's links to the server's pages would break --json)."""
    result = CliRunner().invoke(app, [*(str(a) for a in args), "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def trained(project: Path) -> dict[str, Any]:
    """`mlprod run` against the server: features, training, registration."""
    return mlprod("run", "--project", project)


@pytest.fixture(scope="module")
def champion(trained: dict[str, Any], project: Path) -> dict[str, Any]:
    """`mlprod models promote`: version 1 becomes the champion."""
    return mlprod("models", "promote", MODEL, trained["model_version"], "--project", project)


def client(server: Server) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


def assert_no_local_registry(project: Path) -> None:
    store = project / ".mlprod"
    assert store.is_dir()  # the matrix, the models, the online store are there
    assert not (store / "mlflow.db").exists()
    assert not (store / "mlruns").exists()


def artefact_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_run_registers_on_the_server(
    trained: dict[str, Any], server: Server, project: Path
) -> None:
    assert trained["model_name"] == MODEL and trained["model_version"] == 1
    mlflow = client(server)
    run = mlflow.get_run(trained["run_id"])
    local = Path(trained["artefact_path"])
    assert run.info.status == "FINISHED"
    assert mlflow.get_experiment(run.info.experiment_id).name == "flights"
    assert run.data.tags["mlprod.content_hash"] == read_manifest(local)["content_hash"]
    assert run.data.metrics["test_auc"] == pytest.approx(trained["test_auc"], abs=1e-5)
    version = mlflow.get_model_version(MODEL, "1")
    assert version.run_id == trained["run_id"] and version.status == "READY"
    # The artefact itself is in the server's artifact store, byte for byte.
    on_server = [p.parent for p in server.artifacts.rglob("manifest.json")]
    assert len(on_server) == 1
    assert artefact_files(on_server[0]) == artefact_files(local)
    # ... and its records in the server's PostgreSQL database.
    import psycopg

    with psycopg.connect(dbname=server.database, host="127.0.0.1", user="postgres") as conn:
        rows = conn.execute("SELECT name, version, run_id FROM model_versions").fetchall()
    assert rows == [(MODEL, 1, trained["run_id"])]
    assert_no_local_registry(project)


def test_promote_moves_the_alias_on_the_server(champion: dict[str, Any], server: Server) -> None:
    assert champion == {"name": MODEL, "alias": "champion", "version": 1, "previous": None}
    assert client(server).get_registered_model(MODEL).aliases == {"champion": "1"}


def test_batch_scoring_reads_the_champion_from_the_cache(
    champion: dict[str, Any], trained: dict[str, Any], project: Path, cache: Path, tmp_path: Path
) -> None:
    requests = _requests(project, tmp_path)
    out = tmp_path / "scores.parquet"
    summary = mlprod(
        "score", "-i", requests, "-o", out, "--model", f"{MODEL}@champion", "--at", SCORE_AT,
        "--project", project,
    )  # fmt: skip
    scores = pq.read_table(out)
    assert summary["rows"] == scores.num_rows == 20
    assert set(scores["model_version"].to_pylist()) == {"1"}
    assert all(0 < s < 1 for s in scores["score"].to_pylist())
    # The artefact scored is a copy of the trained one, named by its content hash.
    content_hash = read_manifest(Path(trained["artefact_path"]))["content_hash"]
    assert [p.name for p in cache.iterdir()] == [content_hash]
    assert artefact_files(cache / content_hash) == artefact_files(Path(trained["artefact_path"]))


def test_the_downloaded_copy_is_checked_against_its_hashes(
    champion: dict[str, Any], trained: dict[str, Any], project: Path, cache: Path
) -> None:
    content_hash = read_manifest(Path(trained["artefact_path"]))["content_hash"]
    project_api = Project.load(project)
    entry = project_api.deployment(f"{MODEL}@champion").located.path
    assert entry == cache / content_hash
    pickled = entry / "pipeline.pkl"
    original = pickled.read_bytes()
    pickled.write_bytes(original + b"\0")
    with raises(
        ArtefactError,
        f"artefact {entry}: pipeline.pkl was modified after the artefact was saved (its content "
        "hash no longer matches the manifest); refusing to load it",
    ):
        project_api.deployment(f"{MODEL}@champion")
    # A damaged entry removed is downloaded again, whole, on the next use.
    for path in entry.iterdir():
        path.unlink()
    entry.rmdir()
    again = project_api.deployment(f"{MODEL}@champion")
    assert again.located.path == entry and pickled.read_bytes() == original
    assert [p.name for p in cache.iterdir()] == [content_hash]  # no scratch folder left behind


def test_an_artefact_replaced_on_the_server_is_refused(
    champion: dict[str, Any], trained: dict[str, Any], server: Server, project: Path, cache: Path
) -> None:
    """The copy downloaded must be the artefact the version was registered with (its tag)."""
    content_hash = read_manifest(Path(trained["artefact_path"]))["content_hash"]
    (manifest,) = server.artifacts.rglob("manifest.json")
    original = manifest.read_text()
    replaced = {**json.loads(original), "content_hash": "0" * 64}
    shutil.rmtree(cache / content_hash, ignore_errors=True)
    manifest.write_text(json.dumps(replaced))
    try:
        with raises(
            RegistryError,
            f"the artefact of model '{MODEL}' version 1 at {server.uri} is not the one "
            f"registered: its content hash is 000000000000..., the version's tag says "
            f"{content_hash[:12]}...; it was replaced on the artifact store after registration",
        ):
            Project.load(project).deployment(f"{MODEL}@champion")
        assert list(cache.iterdir()) == []  # neither the copy nor its scratch folder is kept
    finally:
        manifest.write_text(original)
    assert Project.load(project).deployment(f"{MODEL}@champion").located.path == (
        cache / content_hash
    )


def test_serve_loads_the_champion_from_the_server(
    champion: dict[str, Any], project: Path, cache: Path, tmp_path: Path
) -> None:
    mlprod("materialize", "--model", f"{MODEL}@champion", "--project", project)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as errors:
        serve = subprocess.Popen(
            [sys.executable, "-m", "mlprod.cli", "serve", "--project", str(project),
             "--port", str(port), "--model", f"{MODEL}@champion"],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=os.environ.copy(),  # the module's artefact cache
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_answers(serve, f"{base}/ready", log, 120, "mlprod serve")
        answer = httpx.post(f"{base}/predict", params={"at": AT}, json=RECORD, timeout=30)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert (prediction["model_name"], prediction["model_version"]) == (MODEL, "1")
        assert 0 < prediction["score"] < 1
    finally:
        serve.terminate()
        serve.wait(30)
    assert_no_local_registry(project)


def _requests(project: Path, folder: Path) -> Path:
    """Twenty request rows (the fields the champion asks for) of the project's flights."""
    fields = [f.name for f in Project.load(project).deployment(f"{MODEL}@champion").request_fields]
    with duckdb.connect(str(project / "data" / "nycflights13.duckdb"), read_only=True) as con:
        rows = con.sql(
            f"SELECT {', '.join(fields)} FROM flights WHERE month = 12 ORDER BY flight_id LIMIT 20"
        ).to_arrow_table()
    path = folder / "requests.parquet"
    pq.write_table(rows, path)
    return path
