"""`mlprod init` (issue 10, point 1): any table to a first model in two commands.

The first test is the whole first hour, through the installed command as a user types it: a
CSV with no time and no id, a Yes/No label, a short text column and empty cells, then
`mlprod init` and `mlprod run` with no hand edits, to a registered model. The others check
what init infers (contract, split, what it leaves out) and how it refuses what would not run.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from mlprod.cli import app
from mlprod.project.loading import load_config

ROOT = Path(__file__).resolve().parent.parent
MLPROD = Path(sys.executable).with_name("mlprod")
runner = CliRunner()


def churn_csv(path: Path, rows: int = 400) -> Path:
    """Customers: tenure, a plan (3 values), a monthly charge with empty cells, a region (2
    values, some empty), support calls, and whether they churned ('Yes'/'No')."""
    rng = random.Random(7)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tenure", "plan", "monthly", "support_calls", "region", "churned"])
        for _ in range(rows):
            plan = rng.choice(["basic", "plus", "pro"])
            tenure, calls = rng.randint(1, 72), rng.randint(0, 8)
            monthly = "" if rng.random() < 0.05 else f"{rng.uniform(10, 100):.2f}"
            region = rng.choice(["north", "south", ""])
            p = 0.1 + 0.08 * calls - 0.003 * tenure + (0.1 if plan == "basic" else 0.0)
            writer.writerow(
                [tenure, plan, monthly, calls, region, "Yes" if rng.random() < p else "No"]
            )
    return path


def mlprod(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLPROD), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_init_then_run_is_the_whole_first_hour(tmp_path: Path) -> None:
    churn_csv(tmp_path / "customers.csv")
    made = mlprod(
        "init", "churn", "--from", "customers.csv", "--label", "churned = 'Yes'", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    assert "Traceback" not in made.stdout + made.stderr
    assert made.stdout.splitlines()[0].startswith(
        "wrote churn/mlprod.yaml: 400 rows, 5 features from 6 columns, label true on "
    )
    assert made.stdout.splitlines()[-1] == "next: mlprod run --project churn"

    config = yaml.safe_load((tmp_path / "churn" / "mlprod.yaml").read_text())
    columns = config["sources"]["customers"]["columns"]
    assert columns["churned"] == {"type": "string", "nullable": False, "categories": ["No", "Yes"]}
    assert columns["plan"] == {
        "type": "string",
        "nullable": False,
        "categories": ["basic", "plus", "pro"],
    }
    assert columns["region"] == {"type": "string", "categories": ["north", "south"]}
    assert columns["monthly"] == {"type": "float"}
    assert columns["tenure"] == {"type": "int", "nullable": False}
    assert config["sources"]["customers"]["from"] == {"kind": "csv", "path": "../customers.csv"}
    assert "time" not in config["spine"] and "keys" not in config["spine"]
    assert config["train"]["split"]["method"] == "random"

    ran = mlprod("run", "--project", "churn", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["model_name"] == "churn" and summary["model_version"] == 1
    assert summary["features"]["rows"] == 400
    assert 0.6 < summary["test_auc"] <= 1.0
    assert any("no spine.keys" in w for w in summary["warnings"])
    listed = mlprod("models", "list", "--project", "churn", "--json", cwd=tmp_path)
    assert [(m["name"], m["latest_version"]) for m in json.loads(listed.stdout)] == [("churn", 1)]


def test_init_with_time_and_key_writes_an_out_of_time_split(tmp_path: Path, small_db: Path) -> None:
    data = tmp_path / "departures.parquet"
    with duckdb.connect(str(small_db), read_only=True) as con:
        con.sql(
            "SELECT flight_id, time_hour, carrier, origin, distance, dep_delay, "
            "dep_delay >= 15 AS late FROM flights WHERE dep_delay IS NOT NULL"
        ).write_parquet(str(data))
    result = runner.invoke(
        app,
        [
            "init",
            str(tmp_path / "p"),
            "--from",
            str(data),
            "--label",
            "late",
            "--time",
            "time_hour",
            "--key",
            "flight_id",
        ],
    )
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "p")
    assert config.spine.keys == ["flight_id"] and config.spine.time == "time_hour"
    assert config.train is not None and config.train.split.method == "out_of_time"
    split = config.train.split
    with duckdb.connect() as con:
        first, last = con.execute(
            "SELECT min(time_hour), max(time_hour) FROM read_parquet(?)", [str(data)]
        ).fetchall()[0]
    assert first < split.train_end < split.valid_end <= last  # type: ignore[union-attr]
    features = [f.name for f in config.feature_definitions]
    # The label reads dep_delay? No: it reads `late`, so dep_delay stays a feature here; the
    # key and the time are never features.
    assert features == ["carrier", "origin", "distance", "dep_delay"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--label", "churned"],
            "mlprod init: --label 'churned' gives values such as 'No', 'Yes', not true/false "
            "or 0/1; compare it, e.g. --label \"churned = 'Yes'\"",
        ),
        (
            ["--label", "churnd = 'Yes'"],
            "mlprod init: --label reads 'churnd', which 'customers.csv' does not have (did you "
            "mean 'churned'?)",
        ),
        (
            ["--label", "tenure > 0"],
            "mlprod init: --label 'tenure > 0' is true on every row with a value; a model "
            "needs both outcomes",
        ),
        (
            ["--label", "churned = 'Yes'", "--time", "tenure"],
            "mlprod init: --time 'tenure' holds int values, not times; name a timestamp or date "
            "column, or leave --time out for a random split",
        ),
        (
            ["--label", "churned = 'Yes'", "--key", "plan"],
            "mlprod init: --key 'plan' is not unique: 397 rows repeat a value (e.g. 'basic'); a "
            "key names one row",
        ),
        (
            ["--label", "churned = 'Yes'", "--key", "regoin"],
            "mlprod init: --key 'regoin': no such column (did you mean 'region'?)",
        ),
    ],
    ids=["text-label", "misspelt-label", "one-class", "time-not-time", "key-repeats", "key-typo"],
)
def test_init_refuses_what_would_not_run(tmp_path: Path, args: list[str], message: str) -> None:
    churn_csv(tmp_path / "customers.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = runner.invoke(app, ["init", "p", "--from", "customers.csv", *args])
    assert result.exit_code == 2
    assert result.output.strip().replace("\n", " ") == f"error: {message}"
    assert not (tmp_path / "p" / "mlprod.yaml").exists()


def test_init_keeps_an_existing_project_unless_forced(tmp_path: Path) -> None:
    churn_csv(tmp_path / "customers.csv")
    args = [
        "init",
        str(tmp_path / "p"),
        "--from",
        str(tmp_path / "customers.csv"),
        "--label",
        "churned = 'Yes'",
    ]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert f"{tmp_path / 'p' / 'mlprod.yaml'} already exists; pass --force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_the_breast_cancer_example_runs(tmp_path: Path) -> None:
    """The second example: a table without time, from data scikit-learn ships."""
    project = tmp_path / "breast_cancer"
    shutil.copytree(
        ROOT / "examples" / "breast_cancer",
        project,
        ignore=shutil.ignore_patterns(".mlprod", "data"),
    )
    ran = mlprod("run", "--project", str(project), "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["model_version"] == 1 and summary["features"]["rows"] == 569
    assert summary["test_auc"] > 0.95
    assert (project / "data" / "breast_cancer.csv").exists()
