"""``mlprod reproduce``: rebuild a registered model from its recorded inputs, on the flights data.

One model is trained for the whole module; each test reproduces it, some after changing the
configuration (retrained with ``--current-config``, to name the change) or the project's own
copy of the data (and putting it back afterwards). Reproducing from the recorded
configuration is tested in test_reproduce_recorded.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE
from typer.testing import CliRunner

from mlprod import Project
from mlprod.artefact import read_manifest
from mlprod.cli import app
from mlprod.errors import TrainError
from mlprod.train.trainer import config_hash

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
WINDOW_FEATURE = "carrier_origin_mean_delay_7d"
WINDOW_FEATURES = {WINDOW_FEATURE, "carrier_origin_std_delay_7d", "origin_delayed_3h"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> Iterator[Project]:
    """The flights example made small and trained once: version 1.

    Every model is rebuilt from scratch, so each reproduction costs a training run: LightGBM
    only, a two-trial search, a month each of training, validation and test rows, and three
    of the window aggregates (two of them float sums: mean and std). The project has its
    own copy of the data, so a test can change it. Everything runs in the project folder,
    outside any git repository, so a commit made meanwhile does not count as a code change.
    """
    folder = tmp_path_factory.mktemp("reproduce")
    (folder / "data").mkdir()
    shutil.copyfile(flights_db, folder / "data" / "nycflights13.duckdb")
    config: dict[str, Any] = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
    config["features"] = [
        f for f in config["features"] if f["kind"] != "aggregate" or f["name"] in WINDOW_FEATURES
    ]
    train = config["train"]
    train["split"].update(train_start="2013-08-01", valid_end="2013-10-01", test_end="2013-11-01")
    train["models"] = train["models"][:1]
    # One thread: a busy machine slows LightGBM's two spinning threads far more than one.
    train["models"][0]["params"].update(n_estimators=100, num_threads=1)
    train["tuning"]["trials"] = 2
    train.pop("ensemble", None)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        project = Project.load(folder)
        assert project.train().model_version == 1
        yield project


def recorded_lineage(project: Project) -> dict[str, Any]:
    models = project.store / "models" / "flights"
    (artefact,) = [p for p in models.iterdir() if not p.name.startswith(".")]
    lineage: dict[str, Any] = read_manifest(artefact)["lineage"]
    return lineage


@contextmanager
def changed_config(project: Project, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Edit the project's mlprod.yaml for the duration of a block."""
    path = project.folder / "mlprod.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


@contextmanager
def changed_data(project: Project, statement: str) -> Iterator[None]:
    """Run a statement on the project's DuckDB file for the duration of a block."""
    database = project.folder / "data" / "nycflights13.duckdb"
    backup = database.with_name("backup.duckdb")
    shutil.copyfile(database, backup)
    try:
        with duckdb.connect(str(database)) as con:
            con.execute(statement)
        yield
    finally:
        os.replace(backup, database)


def test_an_unchanged_project_reproduces_its_model_exactly(trained: Project) -> None:
    models = sorted((trained.store / "models" / "flights").iterdir())
    result = trained.reproduce("1")
    assert result["reproduced"] is True, result
    assert result["max_abs_difference"] <= 1e-9
    assert result["rows"] == recorded_lineage(trained)["splits"]["test"]["rows"] > 20_000
    assert result["rows_different"] == 0
    assert result["differences"] == []
    assert {"version": "1", "model_name": "flights"}.items() <= result.items()
    # The rebuilt model was trained in a scratch store: no new model, no new version.
    assert sorted((trained.store / "models" / "flights").iterdir()) == models
    assert [v["version"] for v in _versions(trained)] == [1]


def _versions(project: Project) -> list[dict[str, Any]]:
    from mlprod.registry.models import show_model

    versions: list[dict[str, Any]] = show_model(project.tracking_uri(), "flights")["versions"]
    return versions


def test_a_changed_feature_window_is_named_and_fails_the_command(trained: Project) -> None:
    recorded = recorded_lineage(trained)

    def shorten(config: dict[str, Any]) -> None:
        (feature,) = [f for f in config["features"] if f["name"] == WINDOW_FEATURE]
        feature["window"] = "6d"

    with changed_config(trained, shorten):
        now = config_hash(Project.load(trained.folder).config)
        result = CliRunner().invoke(
            app, ["reproduce", "1", "--project", str(trained.folder), "--current-config"]
        )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("not reproduced model 'flights' version 1: predictions differ on ")
    assert lines[1:5] == [
        f"trained with today's mlprod.yaml (config hash {now}; the version was trained with "
        f"{recorded['config_hash']})",
        "what differs from the recording:",
        f"  config hash: recorded {recorded['config_hash']}, now {now}",
        f"  config features[{WINDOW_FEATURE}].window: recorded 1w, now 6d",
    ]
    assert lines[5].startswith(
        f"  data training matrix fingerprint: recorded {recorded['data_fingerprint']}, now "
    )
    assert len(lines) == 6


def test_changed_data_and_train_settings_are_named(trained: Project) -> None:
    recorded = recorded_lineage(trained)
    # Ten flights of 15 August (training rows) become two hours late.
    chosen = (
        "SELECT flight_id FROM flights WHERE month = 8 AND day = 15 ORDER BY flight_id LIMIT 10"
    )
    with duckdb.connect(str(trained.folder / "data" / "nycflights13.duckdb")) as con:
        found = con.execute(
            f"SELECT count(*) FROM flights WHERE flight_id IN ({chosen}) AND dep_delay < 15"
        ).fetchone()
    assert found is not None
    (now_late,) = found
    assert now_late > 0

    def faster(config: dict[str, Any]) -> None:
        config["train"]["models"][0]["params"]["learning_rate"] = 0.1

    update = f"UPDATE flights SET dep_delay = 120 WHERE flight_id IN ({chosen})"
    with changed_config(trained, faster), changed_data(trained, update):
        result = CliRunner().invoke(
            app, ["reproduce", "1", "-p", str(trained.folder), "--json", "--current-config"]
        )
    reproduction = json.loads(result.stdout)
    assert result.exit_code == (0 if reproduction["reproduced"] else 1), result.output
    differences = reproduction["differences"]
    # The train section is recorded, so its change is named setting by setting.
    assert differences[:2] == [
        {
            "what": "config",
            "name": "hash",
            "recorded": recorded["config_hash"],
            "now": differences[0]["now"],
        },
        {
            "what": "config",
            "name": "train.models[0].params.learning_rate",
            "recorded": 0.05,
            "now": 0.1,
        },
    ]
    assert differences[2] == {
        "what": "data",
        "name": "training matrix fingerprint",
        "recorded": recorded["data_fingerprint"],
        "now": differences[2]["now"],
    }
    assert differences[2]["now"] != recorded["data_fingerprint"]
    assert differences[3] == {
        "what": "data",
        "name": "source flights",
        "recorded": "336,776 rows",
        "now": "336,776 rows",
        "note": "values differ in column 'dep_delay'",
        "columns": ["dep_delay"],
    }
    positives = recorded["splits"]["train"]["positives"]
    assert {
        "what": "data",
        "name": "splits.train.positives",
        "recorded": positives,
        "now": positives + now_late,
    } in differences
    assert {d["what"] for d in differences} == {"config", "data"}


def test_a_model_whose_feature_is_gone_cannot_be_compared(trained: Project) -> None:
    def drop(config: dict[str, Any]) -> None:
        config["features"] = [f for f in config["features"] if f["name"] != WINDOW_FEATURE]

    with changed_config(trained, drop):
        project = Project.load(trained.folder)
        with pytest.raises(TrainError) as raised:
            project.reproduce("1", current_config=True)
    message = str(raised.value)
    assert message.startswith(
        "the recorded model uses features the configuration no longer defines: "
        f"'{WINDOW_FEATURE}'; restore their definitions to reproduce it; what differs from the "
        "recording: config hash: recorded "
    )
    fingerprint = recorded_lineage(trained)["data_fingerprint"]
    assert f"; config features[{WINDOW_FEATURE}]: recorded {{" in message
    assert f", now (absent); data training matrix fingerprint: recorded {fingerprint}, now " in (
        message
    )


def test_reproducing_with_the_current_config_needs_a_train_section(trained: Project) -> None:
    with changed_config(trained, lambda config: config.pop("train")):
        project = Project.load(trained.folder)
        with pytest.raises(TrainError) as raised:
            project.reproduce("1", current_config=True)
    assert str(raised.value) == (
        "mlprod.yaml has no 'train' section; reproducing a model trains it again, so add the "
        "train section it was trained with"
    )


def test_an_unknown_version_is_one_error_line(trained: Project) -> None:
    # With --json: without it, the progress display leaves a blank line in a non-terminal.
    result = CliRunner().invoke(app, ["reproduce", "7", "-p", str(trained.folder), "--json"])
    assert result.exit_code == 2
    assert result.stderr == "error: model 'flights' has no version 7; its versions are 1\n"
