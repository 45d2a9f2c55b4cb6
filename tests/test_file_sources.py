"""CSV and Parquet sources give the same training matrix as the DuckDB tables they came from."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from mlprod import Project

TABLES = ("flights", "weather", "planes", "airports")


@pytest.fixture(scope="module")
def duckdb_matrix(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    folder = tmp_path_factory.mktemp("duckdb_project")
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    example = Path(__file__).resolve().parent.parent / "examples" / "flights" / "mlprod.yaml"
    shutil.copy(example, folder / "mlprod.yaml")
    return Project.load(folder).build_features()


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_file_sources_build_the_same_matrix(
    kind: str,
    flights_db: Path,
    flights_config: dict[str, Any],
    make_project: Callable[[dict[str, Any]], Project],
    duckdb_matrix: pa.Table,
) -> None:
    config = dict(flights_config)
    config.pop("example_data")
    project = make_project(config)
    with duckdb.connect(str(flights_db), read_only=True) as con:
        for table in TABLES:
            path = project.folder / "data" / f"{table}.{kind}"
            options = "FORMAT parquet" if kind == "parquet" else "FORMAT csv, HEADER true"
            con.execute(f"COPY {table} TO '{path}' ({options})")
            config["sources"][table]["from"] = {"kind": kind, "path": f"data/{table}.{kind}"}
    project = make_project(config)
    matrix = project.build_features()
    assert matrix.column_names == duckdb_matrix.column_names
    assert matrix.num_rows == duckdb_matrix.num_rows == 336_776
    for name in matrix.column_names:
        ours, theirs = matrix.column(name), duckdb_matrix.column(name)
        if ours.type != theirs.type:  # CSV infers its own integer and float widths
            ours = ours.cast(theirs.type)
        if pa.types.is_floating(theirs.type):
            # Window sums add in scan order, which differs between formats: compare to 1e-9.
            assert ours.is_null().equals(theirs.is_null()), f"{kind}: nulls of {name} differ"
            np.testing.assert_allclose(
                ours.to_numpy(zero_copy_only=False),
                theirs.to_numpy(zero_copy_only=False),
                rtol=1e-9,
            )
        else:
            assert ours.equals(theirs), f"{kind}: column {name} differs"
