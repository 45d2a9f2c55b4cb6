"""The same flights project on DuckDB, Spark (local) and inside PostgreSQL: the same matrix.

One month of flights (with the full weather, planes and airports tables) is built three
ways: DuckDB from the example's DuckDB file; Spark with only ``engine: {kind: spark}`` added
(the DuckDB file handed over through Arrow) and again from Parquet files Spark reads itself;
PostgreSQL with the tables loaded into a schema of the real server and the features computed
inside it. Every column must match DuckDB's: floats to 1e-9 relative, NULLs in the same places.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import copy_flights

from mlprod import Project
from mlprod.data.postgres import write_table
from mlprod.data.sources import connect, open_source
from mlprod.errors import FeatureError, SourceError

AS_OF = datetime(2013, 2, 1)
TABLES = ("flights", "weather", "planes", "airports")


@pytest.fixture(scope="module")
def january_db(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("january") / "nycflights13.duckdb"
    return copy_flights(flights_db, path, "month = 1")


@pytest.fixture(scope="module")
def january_schema(january_db: Path, postgres_url: str) -> Iterator[str]:
    """The January tables in a fresh schema of the real PostgreSQL, dropped at the end."""
    schema = f"mlprod_engines_{uuid.uuid4().hex[:10]}"
    _execute(postgres_url, f'CREATE SCHEMA "{schema}"')
    try:
        with duckdb.connect(str(january_db), read_only=True) as con:
            for table in TABLES:
                write_table(postgres_url, schema, table, con.table(table).to_arrow_table())
        yield schema
    finally:
        _execute(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


def _execute(url: str, statement: str) -> None:
    with pg.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(statement)
        conn.commit()


@pytest.fixture(scope="module")
def project_at(
    january_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, Callable[[dict[str, Any]], None]], Project]:
    """A project named ``name`` over the January data, its config changed by ``edit``."""
    from conftest import FLIGHTS_EXAMPLE

    def make(name: str, edit: Callable[[dict[str, Any]], None]) -> Project:
        config: dict[str, Any] = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
        config.pop("example_data")
        edit(config)
        folder = tmp_path_factory.mktemp(name)
        (folder / "data").mkdir()
        (folder / "data" / "nycflights13.duckdb").symlink_to(january_db)
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return Project.load(folder)

    return make


@pytest.fixture(scope="module")
def duckdb_matrix(project_at: Callable[..., Project]) -> pa.Table:
    return project_at("duckdb", lambda config: None).build_features(AS_OF)


def _spark(config: dict[str, Any]) -> None:
    config["engine"] = {"kind": "spark", "master": "local[2]"}


def assert_same_matrix(got: pa.Table, want: pa.Table) -> None:
    """Same columns, types, rows and order; NULLs in the same places; floats to 1e-9."""
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows > 20_000
    for name in want.column_names:
        a, b = got.column(name), want.column(name)
        assert a.type == b.type, f"column {name}: {a.type}, DuckDB has {b.type}"
        nulls = np.asarray(a.is_null()), np.asarray(b.is_null())
        assert (nulls[0] == nulls[1]).all(), f"column {name}: NULLs in other places"
        if pa.types.is_floating(b.type):
            x = a.to_numpy(zero_copy_only=False)
            y = b.to_numpy(zero_copy_only=False)
            kept = ~nulls[1]
            np.testing.assert_allclose(x[kept], y[kept], rtol=1e-9, atol=0, err_msg=name)
        else:
            assert a.equals(b), f"column {name} differs"


@pytest.mark.spark
def test_spark_builds_the_same_matrix_from_the_duckdb_file(
    project_at: Callable[..., Project], duckdb_matrix: pa.Table
) -> None:
    """The example unchanged but for the engine line: its DuckDB file goes over Arrow."""
    project = project_at("spark", _spark)
    matrix = project.build_matrix(AS_OF)
    assert_same_matrix(matrix.table, duckdb_matrix)
    written = project.store / "spark" / "matrix.parquet"
    assert sorted(p.name for p in written.glob("*.parquet"))  # written by Spark itself


@pytest.mark.spark
def test_spark_reads_parquet_catalog_tables_and_readers_itself(
    project_at: Callable[..., Project], january_db: Path, duckdb_matrix: pa.Table
) -> None:
    """Sources Spark reads itself, their contracts checked by Spark: flights and weather as
    Parquet files, planes as a catalog table, airports through a reader (format and path).
    A broken contract is refused as DuckDB would refuse it; DuckDB-side commands refuse a
    Spark-only source by name."""
    from mlprod.errors import ContractError
    from mlprod.features.spark import session
    from mlprod.project.engine import EngineConfig

    folder = january_db.parent
    with duckdb.connect(str(january_db), read_only=True) as con:
        for table in TABLES:
            pq.write_table(con.table(table).to_arrow_table(), folder / f"{table}.parquet")
        planes = con.table("planes").to_arrow_table()
    spark = session(EngineConfig(kind="spark", master="local[2]"))
    spark.createDataFrame(planes).createOrReplaceTempView("registry_planes")

    def spark_sources(config: dict[str, Any]) -> None:
        _spark(config)
        sources = config["sources"]
        for name in ("flights", "weather"):
            sources[name]["from"] = {"kind": "parquet", "path": str(folder / f"{name}.parquet")}
        sources["planes"]["from"] = {"kind": "spark", "table": "registry_planes"}
        airports = {"kind": "spark", "format": "parquet", "path": str(folder / "airports.parquet")}
        sources["airports"]["from"] = airports

    try:
        project = project_at("spark-sources", spark_sources)
        assert_same_matrix(project.build_features(AS_OF), duckdb_matrix)

        def broken(config: dict[str, Any]) -> None:
            spark_sources(config)
            config["sources"]["planes"]["columns"]["year"]["nullable"] = False

        with pytest.raises(ContractError, match="source 'planes': column 'year' has 70 null"):
            project_at("spark-broken", broken).build_features(AS_OF)
        with pytest.raises(SourceError, match="source 'planes' is read by Spark"):
            open_source(connect(), project.folder, project.config, "planes")  # as serving does
    finally:
        spark.catalog.dropTempView("registry_planes")


@pytest.mark.postgres
def test_postgres_computes_the_same_matrix_inside_the_database(
    project_at: Callable[..., Project],
    january_schema: str,
    postgres_url: str,
    duckdb_matrix: pa.Table,
) -> None:
    project = project_at("postgres", lambda c: _in_postgres(c, postgres_url, january_schema))
    assert_same_matrix(project.build_features(AS_OF), duckdb_matrix)


@pytest.mark.postgres
def test_postgres_scores_where_the_data_lives(
    project_at: Callable[..., Project], january_schema: str, postgres_url: str
) -> None:
    """Read from the database, score, write back: a model trained with the features computed
    in PostgreSQL scores the source's rows there, and writes its scores into the same
    database; DuckDB, reading the same tables, gives the same scores."""
    from typer.testing import CliRunner

    from mlprod.cli import app

    def small(config: dict[str, Any]) -> None:
        _in_postgres(config, postgres_url, january_schema)
        train = config["train"]
        train["split"] = {
            "method": "out_of_time",
            "train_end": "2013-01-18",
            "valid_end": "2013-01-25",
            "gap": "1d",
        }
        params = {"n_estimators": 60, "num_threads": 1}
        train["models"] = [{"kind": "lightgbm", "params": params}]
        train["tuning"] = {"trials": 1}
        train.pop("ensemble")

    project = project_at("postgres-scores", small)
    result = CliRunner().invoke(
        app, ["run", "--project", str(project.folder), "--as-of", "2013-02-01"]
    )
    assert result.exit_code == 0, result.output
    scores = f"{january_schema}.scores"
    summary = project.score("flights/1", "flights", f"{postgres_url}#{scores}", run_id="pg")
    assert summary.rows == 27_004
    with pg.connect(postgres_url) as conn, conn.cursor() as cursor:
        cursor.execute(f'SELECT flight_id, score FROM "{january_schema}".scores ORDER BY flight_id')
        in_database = cursor.fetch_arrow_table()
    config = yaml.safe_load((project.folder / "mlprod.yaml").read_text())
    config.pop("engine")
    (project.folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    output = project.folder / "duckdb-scores.parquet"
    Project.load(project.folder).score("flights/1", "flights", str(output), run_id="duckdb")
    by_duckdb = pq.read_table(output).sort_by("flight_id")
    assert in_database.column("flight_id").equals(by_duckdb.column("flight_id"))
    np.testing.assert_allclose(
        in_database.column("score").to_numpy(), by_duckdb.column("score").to_numpy(), rtol=1e-12
    )


def _in_postgres(config: dict[str, Any], url: str, schema: str) -> None:
    config["engine"] = {"kind": "postgres"}
    for source in config["sources"].values():
        table = source["from"]["table"]
        source["from"] = {"kind": "postgres", "url": url, "schema": schema, "table": table}


def test_postgres_engine_needs_every_source_in_postgres(
    project_at: Callable[..., Project],
) -> None:
    project = project_at(
        "postgres-mixed", lambda config: config.update(engine={"kind": "postgres"})
    )
    with pytest.raises(FeatureError, match="source 'flights' is duckdb, not a PostgreSQL table"):
        project.build_features(AS_OF)


def test_spark_settings_need_the_spark_engine(
    project_at: Callable[..., Project],
) -> None:
    from mlprod.errors import ConfigError

    with pytest.raises(ConfigError, match="master, conf and frame_rows are Spark settings"):
        project_at("bad", lambda config: config.update(engine={"master": "local[2]"}))


def test_spark_without_java_says_what_it_needs(tmp_path: Path) -> None:
    """No Java: a clear error naming what Spark needs, not the gateway's traceback."""
    import os
    import subprocess
    import sys

    script = (
        "from mlprod.features.spark import session\n"
        "from mlprod.project.engine import EngineConfig\n"
        "from mlprod.errors import FeatureError\n"
        "try:\n"
        "    session(EngineConfig(kind='spark', master='local[1]'))\n"
        "except FeatureError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "PATH": "/usr/bin/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Spark needs Java 17 or later" in done.stdout, done.stderr


def test_spark_slides_frames_only_where_windows_hold_few_rows(
    project_at: Callable[..., Project],
) -> None:
    """A plane's flights in a day are few (frames); a destination's week is not (blocks)."""
    from functools import partial

    from mlprod.features.compiler import MatrixCompiler
    from mlprod.features.matrix import duckdb_fetch, framed_groups

    def frames(rows: int | None) -> Callable[[dict[str, Any]], None]:
        def edit(config: dict[str, Any]) -> None:
            config["engine"] = {"kind": "spark", "master": "local[2]"}
            if rows is not None:
                config["engine"]["frame_rows"] = rows

        return edit

    chosen = {}
    for rows in (None, 0, 100_000):
        project = project_at(f"frames-{rows}", frames(rows))
        names = list(project.graph.nodes)
        with duckdb.connect(
            str(project.folder / "data" / "nycflights13.duckdb"), read_only=True
        ) as con:
            fetch = partial(duckdb_fetch, con)
            chosen[rows] = framed_groups(fetch, project.graph, names)
            densities = {
                prefix: fetch(query)[1][0][0]
                for prefix, query in MatrixCompiler(project.graph).window_densities(names).items()
            }
    assert len(densities) == 3  # carrier-origin 7 days, destination 7 days, plane 1 day
    assert chosen[None] == {p for p, d in densities.items() if d <= 32}
    assert len(chosen[None]) == 1 and min(densities.values()) < 2 < 100 < max(densities.values())
    assert chosen[0] == frozenset()
    assert chosen[100_000] == set(densities)
