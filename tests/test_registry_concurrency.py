"""The registry under concurrency and kills, through real ``mlprod`` processes.

One project (the flights example's mlprod.yaml, no data needed) holds a SQLite registry with
versions 1-3 of ``flights``, each a small artefact logged by ``log_training_run``. Three
``mlprod models promote`` processes started at once must leave an exact champion history; a
process killed right after registering a version must not leave its run RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, copy_example
from typer.testing import CliRunner

from mlprod import Project
from mlprod.cli import app
from mlprod.registry import log_training_run, promote, show_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
MLPROD = ROOT / ".venv" / "bin" / "mlprod"
MODEL = "flights"


def write_artefact(folder: Path, name: str) -> Path:
    """The smallest directory the registry logs: a manifest and one file."""
    folder.mkdir(parents=True)
    content = name.encode()
    (folder / "model.txt").write_bytes(content)
    manifest = {"name": name, "content_hash": hashlib.sha256(content).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    folder = copy_example(tmp_path_factory.mktemp("concurrency"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        loaded = Project.load(folder)
        uri = loaded.tracking_uri()
    for number in (1, 2, 3):
        artefact = write_artefact(folder / "artefacts" / str(number), f"flights-{number}")
        record = log_training_run(uri, MODEL, {}, {"test_auc": 0.6}, {}, artefact, None, MODEL)
        assert record.model_version == number
    return loaded


@pytest.fixture
def uri(project: Project) -> str:
    """The project's registry with version 1 as champion and no history yet."""
    uri = project.tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.delete_registered_model_tag(MODEL, "mlprod.champion_history")
    client.set_registered_model_alias(MODEL, "champion", "1")
    return uri


def mlprod(project: Project, *args: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen(
        [str(MLPROD), *args, "--project", str(project.folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


PROMOTED = re.compile(r"^flights@champion -> version (\d) \(was version (\d)\)$")

# Runs `.venv/bin/mlprod ARGS` once a go-file exists. The slow imports come first, so that the
# processes reach the registry within milliseconds of each other, not seconds apart.
AT_THE_SIGNAL = """
import runpy, sys, time
from pathlib import Path
import mlprod.cli, mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store
go, sys.argv = Path(sys.argv[1]), sys.argv[2:]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def promote_at_once(project: Project, versions: list[int], go: Path) -> list[str]:
    """Run ``mlprod models promote`` for each version in its own process, all at once."""
    commands = [
        [str(MLPROD), "models", "promote", MODEL, str(version), "--project", str(project.folder)]
        for version in versions
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", AT_THE_SIGNAL, str(go), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )
        for command in commands
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", process.communicate()
    go.touch()
    said = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        said.append(out.strip())
    return said


def test_concurrent_promotes_leave_an_exact_history(
    project: Project, uri: str, tmp_path: Path
) -> None:
    # Three processes at once move the champion from 1 to 1, 2 and 3.
    said = {}
    for line in promote_at_once(project, [1, 2, 3], tmp_path / "go"):
        match = PROMOTED.match(line)
        if match is None:  # version 1, which already held the alias, if it went first
            assert line == "flights@champion -> version 1 (it was champion already)"
            continue
        said[int(match[1])] = int(match[2])
    shown = show_model(uri, MODEL)
    moves = [*shown["champion_history"], shown["aliases"]["champion"]]
    # Each move that changed the champion appended the champion it replaced, once, and said
    # so: the moves form one chain from version 1.
    assert moves[0] == 1
    assert len(moves) == len(said) + 1
    assert said == {new: old for old, new in pairwise(moves)}


def test_promote_names_the_previous_champion(project: Project, uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.delete_registered_model_alias(MODEL, "champion")
    runner = CliRunner()
    folder = str(project.folder)
    first = runner.invoke(app, ["models", "promote", MODEL, "2", "-p", folder])
    assert first.stdout == "flights@champion -> version 2 (no version was champion before)\n"
    second = runner.invoke(app, ["models", "promote", MODEL, "3", "-p", folder])
    assert second.stdout == "flights@champion -> version 3 (was version 2)\n"
    again = runner.invoke(app, ["models", "promote", MODEL, "3", "-p", folder])
    assert again.stdout == "flights@champion -> version 3 (it was champion already)\n"
    assert promote(uri, MODEL, 1)["previous"] == 3


# Registers a version, then is killed before MLflow can end the run (SIGKILL cannot be
# caught): the moment a kill leaves a registered version with a run that never ends.
KILLED_AFTER_REGISTERING = """
import os, signal, sys
from pathlib import Path
from mlflow import MlflowClient
from mlprod.registry import log_training_run

register = MlflowClient.create_model_version

def register_then_die(self, *args, **kwargs):
    version = register(self, *args, **kwargs)
    print(version.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

MlflowClient.create_model_version = register_then_die
log_training_run(sys.argv[1], "flights", {}, {}, {}, Path(sys.argv[2]), None, "flights")
"""


def test_a_run_whose_process_was_killed_is_ended_by_the_next_command(
    project: Project, uri: str, tmp_path: Path
) -> None:
    artefact = write_artefact(tmp_path / "artefact", "flights-killed")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_REGISTERING, uri, str(artefact)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = killed.stdout.strip()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    registered = client.search_model_versions(f"run_id = '{run_id}'")
    assert [v.name for v in registered] == [MODEL]
    # A run whose process is alive (this one) is left running.
    mine = {"mlprod.host": socket.gethostname(), "mlprod.pid": str(os.getpid())}
    alive = client.create_run(client.get_run(run_id).info.experiment_id, tags=mine)

    listed = mlprod(project, "models", "list", "--json")
    _, err = listed.communicate(timeout=180)
    assert listed.returncode == 0, err

    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None
    assert run.data.tags["mlprod.ended_by"].endswith("a later mlprod command marked it KILLED")
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    client.set_terminated(alive.info.run_id)
