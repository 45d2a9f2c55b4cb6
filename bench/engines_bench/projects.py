"""The flights project at one scale, set up for each engine.

One DuckDB file per scale (``flights.data.prepare_project``, in this benchmark's own folder,
so that ``bench/features.py`` running meanwhile cannot rewrite it); per engine a project
folder whose mlprod.yaml differs only in ``engine`` (and, for PostgreSQL, in where the
sources are), its data a link to that file. PostgreSQL gets the four tables once per scale,
in a schema of their own; loading them is not timed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import yaml
from flights.data import prepare_project
from flights.settings import DATA_FILE, OUT, ROOT

HERE = OUT / "engines"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("flights", "weather", "planes", "airports")
ENGINES = ("duckdb", "spark", "postgres")
SPARK_MASTER = "local[2]"


def data_folder(scale: int, fresh: bool = False) -> Path:
    """The scale's project folder with its DuckDB file, written unless it is there already."""
    folder = HERE / f"flights-x{scale}"
    if fresh or not (folder / DATA_FILE).exists():
        prepare_project(scale, HERE)
    return folder


def schema_name(scale: int) -> str:
    return f"mlprod_bench_engines_x{scale}"


def application(method: str) -> str:
    """The ``application_name`` a method's PostgreSQL connections carry (to find them)."""
    return f"mlprod-bench-{method}"


def url_for(method: str) -> str:
    return f"{POSTGRES_URL}?application_name={application(method)}"


def engine_project(scale: int, engine: str, memory_limit: str | None = None) -> Path:
    """A project folder for ``engine`` over the scale's data (DuckDB: with ``memory_limit``
    if given, which the hand SQL then uses too)."""
    base = data_folder(scale)
    folder = (
        HERE / f"x{scale}-{engine}"
        if memory_limit is None
        else HERE / (f"x{scale}-{engine}-{memory_limit}")
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    link = folder / DATA_FILE
    if not link.exists():
        link.symlink_to((base / DATA_FILE).resolve())
    config: dict[str, Any] = yaml.safe_load((base / "mlprod.yaml").read_text())
    config.pop("example_data", None)
    if engine == "duckdb" and memory_limit is not None:
        config["engine"] = {"memory_limit": memory_limit}
    if engine == "spark":
        config["engine"] = {"kind": "spark", "master": SPARK_MASTER}
        if memory_limit is not None:
            config["engine"]["conf"] = {"spark.driver.memory": memory_limit}
    elif engine == "postgres":
        config["engine"] = {"kind": "postgres"}
        for source in config["sources"].values():
            source["from"] = {
                "kind": "postgres",
                "url": url_for("mlprod"),
                "schema": schema_name(scale),
                "table": source["from"]["table"],
            }
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def spark_conf_of(folder: Path) -> dict[str, str]:
    """The project's ``engine.conf`` (Spark settings on top of mlprod's defaults)."""
    config: dict[str, Any] = yaml.safe_load((folder / "mlprod.yaml").read_text())
    return {str(k): str(v) for k, v in ((config.get("engine") or {}).get("conf") or {}).items()}


def memory_limit_of(folder: Path) -> str | None:
    """The project's DuckDB ``engine.memory_limit``, if it sets one."""
    config: dict[str, Any] = yaml.safe_load((folder / "mlprod.yaml").read_text())
    limit = (config.get("engine") or {}).get("memory_limit")
    return str(limit) if limit is not None else None


def load_postgres(scale: int) -> float:
    """Load the scale's four tables into their schema (replaced); seconds it took."""
    import adbc_driver_postgresql.dbapi as pg

    from mlprod.data.postgres import write_table

    started = time.perf_counter()
    schema = schema_name(scale)
    with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cursor.execute(f'CREATE SCHEMA "{schema}"')
        conn.commit()
    with duckdb.connect(str(data_folder(scale) / DATA_FILE), read_only=True) as con:
        for table in TABLES:
            write_table(POSTGRES_URL, schema, table, con.table(table).to_arrow_table())
    with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f'ANALYZE "{schema}"."{table}"')
        conn.commit()
    return time.perf_counter() - started


def postgres_loaded(scale: int) -> bool:
    """Whether the schema holds as many flights as the DuckDB file."""
    import adbc_driver_postgresql.dbapi as pg

    with duckdb.connect(str(data_folder(scale) / DATA_FILE), read_only=True) as con:
        want = con.execute("SELECT count(*) FROM flights").fetchall()[0][0]
    with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            parameters=(schema_name(scale),),
        )
        if cursor.fetchall()[0][0] < len(TABLES):
            return False
        cursor.execute(f'SELECT count(*) FROM "{schema_name(scale)}".flights')
        return bool(cursor.fetchall()[0][0] == want)


def revision() -> str:
    """The commit measured, marked when mlprod/ has uncommitted changes."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "mlprod"], capture_output=True, text=True
    ).stdout.strip()
    return (commit or "?") + ("+changes" if dirty else "")
