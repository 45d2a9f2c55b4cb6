"""Sources in the real PostgreSQL: the same matrix as from DuckDB, and clear errors.

The nycflights13 tables are loaded once into a schema of their own, dropped at the end.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import numpy as np
import pyarrow as pa
import pytest
import yaml

from mlprod import Project
from mlprod.data.examples import nycflights13_tables
from mlprod.data.postgres import redact, write_table
from mlprod.data.sources import connect, open_source
from mlprod.errors import ContractError, SourceError

pytestmark = pytest.mark.postgres

AS_OF = datetime(2014, 6, 1)
URL_SETTING = "${MLPROD_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"


def execute(url: str, *statements: str) -> None:
    with pg.connect(url) as conn, conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
        conn.commit()


@pytest.fixture(scope="module")
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema with the nycflights13 tables, and ``flights_small`` (two days)."""
    schema = f"mlprod_test_{uuid.uuid4().hex[:12]}"
    execute(postgres_url, f'CREATE SCHEMA "{schema}"')
    try:
        for name, table in nycflights13_tables().items():
            write_table(postgres_url, schema, name, table)
        execute(
            postgres_url,
            f'CREATE TABLE "{schema}".flights_small AS SELECT * FROM "{schema}".flights '
            "WHERE month = 1 AND day <= 2",
        )
        yield schema
    finally:
        execute(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


def postgres_config(
    config: dict[str, Any], schema: str, url: str = URL_SETTING, **tables: str
) -> dict[str, Any]:
    """The flights config with every source read from PostgreSQL (``tables`` renames some)."""
    config.pop("example_data", None)
    for name, source in config["sources"].items():
        source["from"] = {
            "kind": "postgres",
            "url": url,
            "table": tables.get(name, source["from"]["table"]),
            "schema": schema,
        }
    return config


def write_project(folder: Path, config: dict[str, Any]) -> Project:
    folder.mkdir(parents=True)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Project.load(folder)


def test_matrix_from_postgres_equals_matrix_from_duckdb(
    flights_project: Project, flights_config: dict[str, Any], pg_schema: str, tmp_path: Path
) -> None:
    from_duckdb = flights_project.build_matrix(AS_OF).table
    project = write_project(tmp_path / "pg", postgres_config(flights_config, pg_schema))
    from_postgres = project.build_matrix(AS_OF).table

    assert from_postgres.column_names == from_duckdb.column_names
    # PostgreSQL's bigint, double precision, text and timestamp come back as DuckDB's own
    # int64, double, string and timestamp: the types are the same, not just compatible.
    assert from_postgres.schema == from_duckdb.schema
    assert from_postgres.num_rows == from_duckdb.num_rows == 336_776
    keys = [("flight_id", "ascending")]
    expected, found = from_duckdb.sort_by(keys), from_postgres.sort_by(keys)
    # A standard deviation's last bits depend on the order DuckDB's parallel window combines
    # partial states in, so two builds from the same DuckDB file differ there by ~1e-14 too.
    # Every other value must be identical (sums and means of whole minutes are exact).
    unstable = {
        f["name"]
        for f in flights_config["features"]
        if f["kind"] == "aggregate" and f["function"] == "std"
    }
    assert unstable
    different = [
        name
        for name in expected.column_names
        if name not in unstable and not found.column(name).equals(expected.column(name))
    ]
    assert different == []
    for name in sorted(unstable):
        want, got = expected.column(name), found.column(name)
        assert got.is_null().equals(want.is_null()), name
        np.testing.assert_allclose(
            got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=0, equal_nan=True, err_msg=name
        )


def test_missing_table(
    flights_config: dict[str, Any], pg_schema: str, postgres_url: str, tmp_path: Path
) -> None:
    config = postgres_config(flights_config, pg_schema, flights="flights_small", planes="plane")
    project = write_project(tmp_path / "pg", config)
    with pytest.raises(SourceError) as info:
        project.build_matrix(AS_OF, ["plane_year"])
    assert type(info.value) is SourceError
    assert str(info.value) == (
        f"source 'planes': PostgreSQL at {redact(postgres_url)} has no table "
        f"'{pg_schema}.plane' (did you mean 'planes'?)"
    )


def test_missing_schema(flights_config: dict[str, Any], postgres_url: str, tmp_path: Path) -> None:
    schema = f"mlprod_missing_{uuid.uuid4().hex[:12]}"
    project = write_project(tmp_path / "pg", postgres_config(flights_config, schema))
    with pytest.raises(SourceError) as info:
        project.build_matrix(AS_OF, ["sched_hour"])
    assert str(info.value) == (
        f"source 'flights': PostgreSQL at {redact(postgres_url)} has no table "
        f"'{schema}.flights' (there is no schema '{schema}')"
    )


def test_renamed_column(
    flights_config: dict[str, Any], pg_schema: str, postgres_url: str, tmp_path: Path
) -> None:
    execute(
        postgres_url,
        f'CREATE TABLE "{pg_schema}".flights_renamed AS TABLE "{pg_schema}".flights_small',
        f'ALTER TABLE "{pg_schema}".flights_renamed RENAME COLUMN dep_delay TO departure_delay',
    )
    config = postgres_config(flights_config, pg_schema, flights="flights_renamed")
    project = write_project(tmp_path / "pg", config)
    with pytest.raises(ContractError) as info:
        project.build_matrix(AS_OF, ["sched_hour"])
    assert str(info.value) == (
        "source 'flights': column 'dep_delay' is declared in the contract but missing from the "
        "data (renamed to 'departure_delay'?)"
    )


def test_changed_type(
    flights_config: dict[str, Any], pg_schema: str, postgres_url: str, tmp_path: Path
) -> None:
    execute(
        postgres_url,
        f'CREATE TABLE "{pg_schema}".planes_text AS TABLE "{pg_schema}".planes',
        f'ALTER TABLE "{pg_schema}".planes_text ALTER COLUMN year TYPE text',
    )
    config = postgres_config(
        flights_config, pg_schema, flights="flights_small", planes="planes_text"
    )
    project = write_project(tmp_path / "pg", config)
    with pytest.raises(ContractError) as info:
        project.build_matrix(AS_OF, ["plane_year"])
    assert str(info.value) == (
        "source 'planes': column 'year' changed type: the contract says float "
        "(sources.planes.columns.year.type), the data has VARCHAR (string); correct the "
        "declared type if the data is right"
    )


def test_numeric_declared_float_is_read_as_float(
    flights_config: dict[str, Any], pg_schema: str, postgres_url: str, tmp_path: Path
) -> None:
    """The driver hands numeric over as text; declared float, it is read as the nearest double."""
    execute(
        postgres_url,
        f'CREATE TABLE "{pg_schema}".planes_numeric AS TABLE "{pg_schema}".planes',
        f'ALTER TABLE "{pg_schema}".planes_numeric ALTER COLUMN year TYPE numeric(10,2)',
        f'UPDATE "{pg_schema}".planes_numeric SET year = year + 0.37 WHERE seats > 100',
    )
    with pg.connect(postgres_url) as conn, conn.cursor() as cursor:
        cursor.execute(f'SELECT tailnum, year::text FROM "{pg_schema}".planes_numeric')
        expected = {t: None if y is None else float(Decimal(y)) for t, y in cursor.fetchall()}
    assert any(y is not None and y != int(y) for y in expected.values())
    assert None in expected.values()
    config = postgres_config(
        flights_config, pg_schema, flights="flights_small", planes="planes_numeric"
    )
    project = write_project(tmp_path / "pg", config)

    con = connect()
    profile = open_source(con, project.folder, project.config, "planes")
    assert profile.types["year"] == "DOUBLE"
    assert dict(con.sql("SELECT tailnum, year FROM planes").fetchall()) == expected
    matrix = project.build_matrix(AS_OF, ["plane_year"]).table
    assert matrix.schema.field("plane_year").type == pa.float64()
    assert matrix.column("plane_year").drop_null().to_pylist()


def test_numeric_declared_int_names_the_postgres_type(
    flights_config: dict[str, Any], pg_schema: str, postgres_url: str, tmp_path: Path
) -> None:
    execute(
        postgres_url,
        f'CREATE TABLE "{pg_schema}".planes_seats AS TABLE "{pg_schema}".planes',
        f'ALTER TABLE "{pg_schema}".planes_seats ALTER COLUMN seats TYPE numeric(10,2)',
    )
    config = postgres_config(
        flights_config, pg_schema, flights="flights_small", planes="planes_seats"
    )
    project = write_project(tmp_path / "pg", config)
    with pytest.raises(ContractError) as info:
        open_source(connect(), project.folder, project.config, "planes")
    assert str(info.value) == (
        "source 'planes': column 'seats' changed type: the contract says int, the data has "
        "PostgreSQL numeric; declare it float, or cast it in a view"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:s3cret-pw@127.0.0.1:{port}/test",
            "postgresql://postgres@127.0.0.1:{port}/test",
        ),
        (
            "postgresql://postgres@127.0.0.1:{port}/test?password=s3cret-pw&connect_timeout=5",
            "postgresql://postgres@127.0.0.1:{port}/test?password=***&connect_timeout=5",
        ),
    ],
    ids=["password in userinfo", "password parameter"],
)
def test_wrong_port_hides_the_password(
    flights_config: dict[str, Any], tmp_path: Path, url: str, shown: str
) -> None:
    port = _free_port()  # nothing listens there
    config = postgres_config(flights_config, "public", url=url.format(port=port))
    project = write_project(tmp_path / "pg", config)
    with pytest.raises(SourceError) as info:
        project.build_matrix(AS_OF, ["sched_hour"])
    message = str(info.value)
    assert "s3cret" not in message
    assert message == (
        f"source 'flights': cannot connect to PostgreSQL at {shown.format(port=port)}: "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )


def test_redact_keeps_everything_but_the_password() -> None:
    assert redact("postgresql://ann:p%40ss@db.example:5433/prod?sslmode=require") == (
        "postgresql://ann@db.example:5433/prod?sslmode=require"
    )
    assert redact("host=db user=ann password=hunter2 dbname=prod") == (
        "host=db user=ann password=*** dbname=prod"
    )
    assert redact("postgresql://ann@db/prod") == "postgresql://ann@db/prod"
