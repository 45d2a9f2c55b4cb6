"""``mlprod reproduce`` retrains from what the version recorded, not from today's mlprod.yaml.

One small model of the flights example is trained for the module (version 1). A later edit
of the features or the training settings must not stop it from reproducing; with
``--current-config`` the edit is retrained and named. Changed data names the sources (and
columns) whose fingerprint differs. A version recorded before the training settings and the
source fingerprints were (its manifest without them) is still reproduced.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
from mlprod.registry.models import resolve
from mlprod.train.trainer import config_hash

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
WINDOW_FEATURE = "carrier_origin_mean_delay_7d"
# A few features that read all four sources: schedule, a plane, an airport, the weather.
FEATURES = {
    "sched_hour",
    "distance_miles",
    "carrier",
    "plane_year",
    "dest_altitude",
    "origin_temp",
    "origin_precip",
    WINDOW_FEATURE,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> Iterator[Project]:
    """The flights example made small (eight features, one of them a window aggregate;
    LightGBM of 50 trees, one trial; a month each of training, validation and test) with its
    own copy of the data, trained once outside any git repository: version 1."""
    folder = tmp_path_factory.mktemp("reproduce-recorded")
    (folder / "data").mkdir()
    shutil.copyfile(flights_db, folder / "data" / "nycflights13.duckdb")
    config: dict[str, Any] = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
    config["features"] = [f for f in config["features"] if f["name"] in FEATURES]
    train = config["train"]
    train["split"].update(train_start="2013-08-01", valid_end="2013-10-01", test_end="2013-11-01")
    train["models"] = train["models"][:1]
    train["models"][0]["params"].update(n_estimators=50, num_threads=1)
    train["tuning"]["trials"] = 1
    train.pop("ensemble", None)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        project = Project.load(folder)
        assert project.train().model_version == 1
        yield project


def lineage(project: Project) -> dict[str, Any]:
    recorded: dict[str, Any] = read_manifest(registered(project))["lineage"]
    return recorded


def registered(project: Project) -> Path:
    """Version 1's artefact as the registry keeps it (what reproduce reads)."""
    return resolve(project.tracking_uri(), "flights", 1)


@contextmanager
def edited(path: Path, change: Callable[[dict[str, Any]], None], dump: Any) -> Iterator[None]:
    """Change a YAML or JSON file for the duration of a block."""
    original = path.read_text()
    content = yaml.safe_load(original)
    change(content)
    path.write_text(dump(content))
    try:
        yield
    finally:
        path.write_text(original)


def edited_config(
    project: Project, change: Callable[[dict[str, Any]], None]
) -> AbstractContextManager[None]:
    return edited(project.folder / "mlprod.yaml", change, _yaml)


def _yaml(content: Any) -> str:
    return yaml.safe_dump(content, sort_keys=False)


@contextmanager
def changed_data(project: Project, *statements: str) -> Iterator[None]:
    """Run statements on the project's DuckDB file for the duration of a block."""
    database = project.folder / "data" / "nycflights13.duckdb"
    backup = database.with_name("backup.duckdb")
    shutil.copyfile(database, backup)
    try:
        with duckdb.connect(str(database)) as con:
            for statement in statements:
                con.execute(statement)
        yield
    finally:
        os.replace(backup, database)


def shorter_window_faster_learning(config: dict[str, Any]) -> None:
    (feature,) = [f for f in config["features"] if f["name"] == WINDOW_FEATURE]
    feature["window"] = "6d"
    config["train"]["models"][0]["params"]["learning_rate"] = 0.1


def test_the_lineage_records_training_settings_and_source_fingerprints(
    trained: Project,
) -> None:
    recorded = lineage(trained)
    train = trained.config.train
    assert train is not None
    assert recorded["train"] == train.model_dump(mode="json", by_alias=True)
    assert sorted(recorded["sources"]) == ["airports", "flights", "planes", "weather"]
    flights = recorded["sources"]["flights"]
    assert flights["rows"] == 336_776
    assert sorted(flights["columns"]) == sorted(["*", *trained.config.sources["flights"].columns])


def test_a_config_edit_does_not_stop_reproduction(trained: Project) -> None:
    recorded = lineage(trained)
    folder = str(trained.folder)
    with edited_config(trained, shorter_window_faster_learning):
        today = config_hash(Project.load(trained.folder).config)
        default = CliRunner().invoke(app, ["reproduce", "1", "-p", folder])
        current = CliRunner().invoke(app, ["reproduce", "1", "-p", folder, "--current-config"])
    assert today != recorded["config_hash"]

    assert default.exit_code == 0, default.output
    lines = default.stdout.splitlines()
    assert lines[0].startswith("reproduced model 'flights' version 1: identical predictions on ")
    assert lines[1:] == [
        "trained with the recorded definitions and training settings "
        f"(config hash {recorded['config_hash']})",
        f"mlprod.yaml has changed since (config hash {today}); --current-config retrains with it",
        "every recorded input is the same",
    ]

    assert current.exit_code == 1, current.output
    lines = current.stdout.splitlines()
    assert lines[0].startswith("not reproduced model 'flights' version 1: predictions differ on ")
    assert lines[1:6] == [
        f"trained with today's mlprod.yaml (config hash {today}; the version was trained with "
        f"{recorded['config_hash']})",
        "what differs from the recording:",
        f"  config hash: recorded {recorded['config_hash']}, now {today}",
        f"  config features[{WINDOW_FEATURE}].window: recorded 1w, now 6d",
        "  config train.models[0].params.learning_rate: recorded 0.05, now 0.1",
    ]
    assert lines[6].startswith(
        f"  data training matrix fingerprint: recorded {recorded['data_fingerprint']}, now "
    )
    # The data did not change: no source is named.
    assert not any("data source" in line for line in lines)


def test_changed_data_names_the_sources_and_columns(trained: Project) -> None:
    recorded = lineage(trained)
    chosen = "SELECT flight_id FROM flights WHERE month = 8 AND day = 15 LIMIT 10"
    early = "FROM weather WHERE month = 8 AND day = 15 AND hour < 6"
    with duckdb.connect(str(trained.folder / "data" / "nycflights13.duckdb")) as con:
        found = con.execute(f"SELECT count(*) {early}").fetchone()
    assert found is not None
    (deleted,) = found
    assert deleted > 0
    with changed_data(
        trained,
        f"UPDATE flights SET dep_delay = 120 WHERE flight_id IN ({chosen})",
        f"DELETE {early}",
    ):
        result = CliRunner().invoke(app, ["reproduce", "1", "-p", str(trained.folder), "--json"])
    reproduction = json.loads(result.stdout)
    assert result.exit_code == (0 if reproduction["reproduced"] else 1), result.output
    assert reproduction["config"] == {
        "used": "recorded",
        "train": "recorded",
        "hash": recorded["config_hash"],
        "recorded_hash": recorded["config_hash"],
        "today_hash": recorded["config_hash"],
    }
    data = [d for d in reproduction["differences"] if d["name"].startswith("source ")]
    weather = recorded["sources"]["weather"]["rows"]
    columns = sorted(trained.config.sources["weather"].columns)
    assert data == [
        {
            "what": "data",
            "name": "source flights",
            "recorded": "336,776 rows",
            "now": "336,776 rows",
            "note": "values differ in column 'dep_delay'",
            "columns": ["dep_delay"],
        },
        {
            "what": "data",
            "name": "source weather",
            "recorded": f"{weather:,} rows",
            "now": f"{weather - deleted:,} rows",
            "note": "values differ in columns " + ", ".join(f"'{c}'" for c in columns),
            "columns": columns,
        },
    ]
    assert reproduction["differences"][0]["name"] == "training matrix fingerprint"


def test_a_version_recorded_before_settings_and_fingerprints_still_reproduces(
    trained: Project,
) -> None:
    """Older artefacts record neither: today's train section stands in for the recorded one
    (the config hash shows it is the same), and changed data is named by the matrix alone."""
    recorded = lineage(trained)

    def older(manifest: dict[str, Any]) -> None:
        del manifest["lineage"]["train"], manifest["lineage"]["sources"]

    manifest = registered(trained) / "manifest.json"
    update = "UPDATE flights SET dep_delay = dep_delay + 60 WHERE month = 8 AND day = 15"
    with edited(manifest, older, json.dumps), changed_data(trained, update):
        result = trained.reproduce("1")
    assert result["config"] == {
        "used": "recorded",
        "train": "current",
        "hash": recorded["config_hash"],
        "recorded_hash": recorded["config_hash"],
        "today_hash": recorded["config_hash"],
    }
    assert result["differences"][0] == {
        "what": "data",
        "name": "training matrix fingerprint",
        "recorded": recorded["data_fingerprint"],
        "now": result["differences"][0]["now"],
        "note": "this version records no fingerprint per source",
    }
    assert not any(d["name"].startswith("source ") for d in result["differences"])
