"""No silent partial state: leftovers of killed writers are removed, a build of some features
never replaces the training matrix, and a build with no rows stops and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlprod import Project
from mlprod.cli import app

runner = CliRunner()
AS_OF = datetime(2014, 6, 1)


@pytest.fixture
def project(
    make_project: Callable[[dict[str, Any]], Project], flights_config: dict[str, Any]
) -> Project:
    """The flights example with its expression features only: a build of seconds."""
    features = flights_config["features"]
    flights_config["features"] = [f for f in features if f["kind"] == "expr"][:10]
    return make_project(flights_config)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The id of another process that runs until the test ends."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield process.pid
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_build_removes_what_killed_writers_left(project: Project, live_pid: int) -> None:
    folder = project.matrix_path.parent
    folder.mkdir(parents=True)
    dead = _dead_pid()
    killed = [folder / f".training.parquet.{dead}.tmp", folder / f".training.json.{dead}.tmp"]
    running = folder / f".training.parquet.{live_pid}.tmp"  # a concurrent build's
    for path in [*killed, running]:
        path.write_bytes(b"PAR1 half a file")
    project.write_features(AS_OF)
    assert sorted(p.name for p in folder.iterdir()) == [
        running.name,
        "training.json",
        "training.parquet",
    ]


def test_a_subset_build_leaves_the_training_matrix(project: Project) -> None:
    built = project.write_features(AS_OF)
    training = Path(built.path).read_bytes()
    folder = str(project.folder)
    build = ["features", "build", "-p", folder, "--as-of", "2014-06-01", "-f", "origin"]
    shown = runner.invoke(app, build)
    assert shown.exit_code == 0, shown.output
    assert "feature subset of 'flights' (the training matrix is left as it is)" in shown.stdout
    result = runner.invoke(app, [*build, "--json"])
    assert result.exit_code == 0, result.output
    subset = project.matrix_path.with_name("subset.parquet")
    assert json.loads(result.stdout)["path"] == str(subset)
    assert pq.read_table(subset).column_names[4:] == ["origin"]
    assert subset.with_suffix(".json").is_file()
    assert Path(built.path).read_bytes() == training


def test_a_build_with_no_rows_stops_and_writes_nothing(project: Project) -> None:
    result = runner.invoke(
        app, ["features", "build", "-p", str(project.folder), "--as-of", "2012-01-01"]
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "error: the training matrix is empty: none of the 336,776 events of spine source "
        "'flights' has a label known as of 2012-01-01 00:00:00 (label not yet known: 336,776; "
        "label is null: 0; no prediction time: 0); build as of a later time (--as-of)\n"
    )
    assert not project.matrix_path.parent.exists()
    assert not (project.store / "sources").exists()  # no baseline from a build not accepted
