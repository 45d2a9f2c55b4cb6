"""A jump in a column's null rate since the last accepted build stops the next build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mlprod import ContractError, Project


def _project_with_own_data(
    make_project: Callable[[dict[str, Any]], Project], config: dict[str, Any], flights_db: Path
) -> Project:
    project = make_project(config)
    link = project.folder / "data" / "nycflights13.duckdb"
    link.unlink()
    with duckdb.connect(str(link)) as con:
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(flights_db)])
        for table in ("flights", "weather", "planes", "airports"):
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table}")
    return project


def test_null_rate_jump_since_last_build_stops_the_run(
    make_project: Callable[[dict[str, Any]], Project],
    flights_config: dict[str, Any],
    flights_db: Path,
) -> None:
    project = _project_with_own_data(make_project, flights_config, flights_db)
    names = ["plane_year", "sched_hour"]
    summary = project.write_features(features=names)
    assert summary.rows == 336_776
    with duckdb.connect(str(project.folder / "data" / "nycflights13.duckdb")) as con:
        before = con.sql("SELECT avg((year IS NULL)::INT) FROM planes").fetchall()[0][0]
        con.execute("UPDATE planes SET year = NULL WHERE seats > 150")
        after = con.sql("SELECT avg((year IS NULL)::INT) FROM planes").fetchall()[0][0]
    with pytest.raises(ContractError) as caught:
        project.build_matrix(features=names)
    baseline = project.store / "sources" / "planes.json"
    assert str(caught.value) == (
        f"source 'planes': column 'year' jumped from {before:.2%} to {after:.2%} null since "
        "the last accepted build (more than null_rate_jump 10.00%); fix the upstream data, "
        f"or delete {baseline} to accept it"
    )
    baseline.unlink()
    assert project.build_matrix(features=names).table.num_rows == 336_776
