"""The compiled SQL of representative features, kept readable in golden files: DuckDB's
in golden/, Spark's and PostgreSQL's in golden/spark/ and golden/postgres/.

A change to the compiler shows up here as a diff a reviewer can read. To accept new output:
``MLPROD_UPDATE_GOLDEN=1 pytest tests/test_golden_sql.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlprod import Project
from mlprod.features.dialects import ENGINES, Engine

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flights"


@pytest.mark.parametrize(
    "feature",
    [
        "plane_age",
        "origin_temp",
        "origin_delayed_3h",
        "origin_max_delay_3h",
        "flight_last_delay_7d",
        "origin_delayed_carriers_3h",
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_sql_matches_golden_file(feature: str, engine: Engine) -> None:
    sql = Project.load(EXAMPLE).feature_sql(feature, engine=engine) + "\n"
    folder = GOLDEN if engine == "duckdb" else GOLDEN / engine
    path = folder / f"{feature}.sql"
    if os.environ.get("MLPROD_UPDATE_GOLDEN"):
        folder.mkdir(exist_ok=True)
        path.write_text(sql)
    assert path.exists(), f"no golden file {path.name}; run with MLPROD_UPDATE_GOLDEN=1"
    assert sql == path.read_text()


def test_features_sql_prints_an_engines_sql() -> None:
    """``mlprod features sql NAME --engine KIND`` prints that engine's SQL."""
    from typer.testing import CliRunner

    from mlprod.cli import app

    args = ["features", "sql", "origin_temp", "--project", str(EXAMPLE), "--engine", "spark"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "spark" / "origin_temp.sql").read_text()
    refused = CliRunner().invoke(app, [*args[:-1], "oracle"])
    assert refused.exit_code != 0
    assert "oracle" in refused.output and "spark" in " ".join(refused.output.split())
