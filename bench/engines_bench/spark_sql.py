"""Hand-written Spark SQL for the 35 flights features: what an expert writes for Spark.

Times are epoch microseconds (``unix_micros``), so windows are integer RANGE frames. The
strict point-in-time rule (a source row is visible only if it became available strictly
before the prediction time) is kept three ways:

* windowed aggregates: spine rows and source rows in one stream per key,
  ``RANGE BETWEEN w PRECEDING AND 1 PRECEDING`` over the microseconds, evaluated at the spine
  rows (a source row available at the prediction time itself is outside the frame);
  count-distinct is ``size(collect_set(...))`` over the frame;
* the latest value and the weather: the same stream with spine rows first among equal
  times, ``last(..., true)`` over ``ROWS UNBOUNDED PRECEDING`` (the weather as one struct,
  so a NULL measurement in the latest observation stays NULL, as an as-of join has it);
* lookups: LEFT JOINs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from flights.settings import DATA_FILE

TABLES = ("flights", "weather", "planes", "airports")
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

HAND_SPARK_SQL = f"""
WITH base AS (
    SELECT *,
           unix_micros(CAST(time_hour AS TIMESTAMP_LTZ)) + minute * 60000000 AS sched_us,
           unix_micros(CAST(time_hour AS TIMESTAMP_LTZ))
             + (minute + CAST(coalesce(dep_delay, 0) AS BIGINT)) * 60000000 AS avail_us
    FROM flights
),
spine AS (
    SELECT flight_id, year, month, day, hour, minute, distance, carrier, origin, dest, tailnum,
           flight, sched_us - 2 * {HOUR_US} AS t, avail_us AS label_at,
           dep_delay IS NULL OR dep_delay >= 15 AS label
    FROM base
    WHERE avail_us < unix_micros(TIMESTAMP_LTZ '2100-01-01 00:00:00')
),
-- departures with a delay, as they enter a 7-day window and as they leave it
enter_leave_7d AS (
    SELECT carrier, origin, dest, avail_us AS at, 1 AS sign, dep_delay
    FROM base WHERE dep_delay IS NOT NULL
    UNION ALL
    SELECT carrier, origin, dest, avail_us + {7 * DAY_US}, -1, dep_delay
    FROM base WHERE dep_delay IS NOT NULL
),
-- carrier and origin, 7 days: mean and standard deviation. Each departure enters the stream
-- at its availability time (+) and leaves it 7 days later (-); a running sum read at the
-- spine rows is the window's total. Probes sort before the source rows at equal times:
-- a row available at t is not yet visible, one leaving at t still is.
co AS (
    SELECT flight_id,
           CASE WHEN n > 0 THEN s / n END AS mean_7d,
           CASE WHEN n > 1 THEN sqrt(greatest((q - s * s / n) / (n - 1), 0)) END AS std_7d
    FROM (
        SELECT flight_id,
               sum(dn) OVER w AS n, sum(ds) OVER w AS s, sum(dq) OVER w AS q
        FROM (
            SELECT flight_id, carrier, origin, t AS ts, 0 AS side,
                   0 AS dn, 0D AS ds, 0D AS dq
            FROM spine
            UNION ALL
            SELECT CAST(NULL AS BIGINT), carrier, origin, at, 1, sign, sign * dep_delay,
                   sign * dep_delay * dep_delay
            FROM enter_leave_7d
        ) AS stream
        WINDOW w AS (PARTITION BY carrier, origin ORDER BY ts, side ROWS UNBOUNDED PRECEDING)
    ) AS running
    WHERE flight_id IS NOT NULL
),
-- origin, 3 hours (small frames, so RANGE frames): counts, maximum, distinct delayed carriers
o AS (
    SELECT flight_id,
           count(CASE WHEN v >= 15 THEN 1 END) OVER w3 AS delayed_3h,
           count(v) OVER w3 AS departures_3h,
           max(v) OVER w3 AS max_delay_3h,
           size(collect_set(CASE WHEN v >= 15 THEN carrier END) OVER w3) AS carriers_3h
    FROM (
        SELECT flight_id, origin, carrier, t AS ts, CAST(NULL AS DOUBLE) AS v FROM spine
        UNION ALL
        SELECT CAST(NULL AS BIGINT), origin, carrier, avail_us, dep_delay FROM base
    ) AS stream
    WINDOW w3 AS (PARTITION BY origin ORDER BY ts
                  RANGE BETWEEN {3 * HOUR_US} PRECEDING AND 1 PRECEDING)
),
-- origin, 1 day: cancellations, entering and leaving as above
oc AS (
    SELECT flight_id, cancelled_1d
    FROM (
        SELECT flight_id, sum(dn) OVER w AS cancelled_1d
        FROM (
            SELECT flight_id, origin, t AS ts, 0 AS side, 0 AS dn FROM spine
            UNION ALL
            SELECT CAST(NULL AS BIGINT), origin, avail_us, 1, 1
            FROM base WHERE dep_delay IS NULL
            UNION ALL
            SELECT CAST(NULL AS BIGINT), origin, avail_us + {DAY_US}, 1, -1
            FROM base WHERE dep_delay IS NULL
        ) AS stream
        WINDOW w AS (PARTITION BY origin ORDER BY ts, side ROWS UNBOUNDED PRECEDING)
    ) AS running
    WHERE flight_id IS NOT NULL
),
-- destination, 7 days: mean, entering and leaving as above
d AS (
    SELECT flight_id, CASE WHEN n > 0 THEN s / n END AS mean_7d
    FROM (
        SELECT flight_id, sum(dn) OVER w AS n, sum(ds) OVER w AS s
        FROM (
            SELECT flight_id, dest, t AS ts, 0 AS side, 0 AS dn, 0D AS ds FROM spine
            UNION ALL
            SELECT CAST(NULL AS BIGINT), dest, at, 1, sign, sign * dep_delay
            FROM enter_leave_7d
        ) AS stream
        WINDOW w AS (PARTITION BY dest ORDER BY ts, side ROWS UNBOUNDED PRECEDING)
    ) AS running
    WHERE flight_id IS NOT NULL
),
-- the plane, 1 day: mean (a flight without a tail number sees nothing)
pl AS (
    SELECT flight_id, avg(v) OVER w AS mean_1d
    FROM (
        SELECT flight_id, tailnum, t AS ts, CAST(NULL AS DOUBLE) AS v
        FROM spine WHERE tailnum IS NOT NULL
        UNION ALL
        SELECT CAST(NULL AS BIGINT), tailnum, avail_us, dep_delay
        FROM base WHERE tailnum IS NOT NULL
    ) AS stream
    WINDOW w AS (PARTITION BY tailnum ORDER BY ts
                 RANGE BETWEEN {DAY_US} PRECEDING AND 1 PRECEDING)
),
-- this flight number's latest delay before t, kept if within 7 days; among rows available
-- at the same time the largest delay comes last
fl AS (
    SELECT flight_id,
           CASE WHEN last_at >= ts - {7 * DAY_US} THEN last_v END AS last_delay_7d
    FROM (
        SELECT flight_id, ts,
               last(v, true) OVER w AS last_v,
               last(CASE WHEN side = 1 THEN ts END, true) OVER w AS last_at
        FROM (
            SELECT flight_id, carrier, flight, t AS ts, 0 AS side, CAST(NULL AS DOUBLE) AS v
            FROM spine
            UNION ALL
            SELECT CAST(NULL AS BIGINT), carrier, flight, avail_us, 1, dep_delay
            FROM base WHERE dep_delay IS NOT NULL
        ) AS stream
        WINDOW w AS (PARTITION BY carrier, flight ORDER BY ts, side, v
                     ROWS UNBOUNDED PRECEDING)
    ) AS latest
),
-- the latest weather observation before t at the origin, kept if at most 3 hours old
wx AS (
    SELECT flight_id, ts, obs
    FROM (
        SELECT flight_id, ts, side,
               last(obs, true) OVER (PARTITION BY origin ORDER BY ts, side
                                     ROWS UNBOUNDED PRECEDING) AS obs
        FROM (
            SELECT flight_id, origin, t AS ts, 0 AS side,
                   CAST(NULL AS STRUCT<at: BIGINT, temp: DOUBLE, dewp: DOUBLE, humid: DOUBLE,
                        wind_speed: DOUBLE, wind_gust: DOUBLE, precip: DOUBLE,
                        pressure: DOUBLE, visib: DOUBLE>) AS obs
            FROM spine
            UNION ALL
            SELECT CAST(NULL AS BIGINT), origin, unix_micros(CAST(time_hour AS TIMESTAMP_LTZ)), 1,
                   named_struct('at', unix_micros(CAST(time_hour AS TIMESTAMP_LTZ)),
                                'temp', temp, 'dewp', dewp, 'humid', humid,
                                'wind_speed', wind_speed, 'wind_gust', wind_gust,
                                'precip', precip, 'pressure', pressure, 'visib', visib)
            FROM weather
        ) AS stream
    ) AS matched
    WHERE side = 0
),
wx_fresh AS (
    SELECT flight_id, CASE WHEN obs.at >= ts - {3 * HOUR_US} THEN obs END AS obs FROM wx
)
SELECT
    s.flight_id,
    CAST(timestamp_micros(s.t) AS TIMESTAMP_NTZ) AS prediction_time,
    s.label,
    CAST(timestamp_micros(s.label_at) AS TIMESTAMP_NTZ) AS label_available_at,
    s.hour AS sched_hour,
    s.hour * 60 + s.minute AS sched_minute_of_day,
    dayofweek(make_date(s.year, s.month, s.day)) - 1 AS day_of_week,
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
    wx_fresh.obs.temp AS origin_temp,
    wx_fresh.obs.dewp AS origin_dewpoint,
    wx_fresh.obs.humid AS origin_humidity,
    wx_fresh.obs.wind_speed AS origin_wind_speed,
    wx_fresh.obs.wind_gust AS origin_wind_gust,
    wx_fresh.obs.precip AS origin_precip,
    wx_fresh.obs.pressure AS origin_pressure,
    wx_fresh.obs.visib AS origin_visibility,
    co.mean_7d AS carrier_origin_mean_delay_7d,
    co.std_7d AS carrier_origin_std_delay_7d,
    o.delayed_3h AS origin_delayed_3h,
    o.departures_3h AS origin_departures_3h,
    o.max_delay_3h AS origin_max_delay_3h,
    oc.cancelled_1d AS origin_cancelled_1d,
    d.mean_7d AS dest_mean_delay_7d,
    pl.mean_1d AS plane_mean_delay_1d,
    fl.last_delay_7d AS flight_last_delay_7d,
    o.carriers_3h AS origin_delayed_carriers_3h
FROM spine AS s
JOIN co ON co.flight_id = s.flight_id
JOIN o ON o.flight_id = s.flight_id
JOIN oc ON oc.flight_id = s.flight_id
JOIN d ON d.flight_id = s.flight_id
LEFT JOIN pl ON pl.flight_id = s.flight_id
JOIN fl ON fl.flight_id = s.flight_id
JOIN wx_fresh ON wx_fresh.flight_id = s.flight_id
LEFT JOIN planes AS pn ON pn.tailnum = s.tailnum
LEFT JOIN airports AS ap ON ap.faa = s.dest
ORDER BY s.t, s.flight_id
"""


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None) -> Any:
    """A session with mlprod's own Spark settings (``mlprod.features.spark.DEFAULTS``), and
    ``conf`` on top, as mlprod applies a project's ``engine.conf``."""
    import os

    from pyspark.sql import SparkSession

    from mlprod.features.spark import DEFAULTS

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName("hand-sql")
    for key, value in {**DEFAULTS, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_spark_sql(folder: Path, output: Path, timings: dict[str, float]) -> pa.Table:
    """Hand the tables over from the DuckDB file through Arrow (as mlprod does), run the
    query, write the matrix as Parquet with Spark; return it as read back (not timed by the
    caller's clock for the read-back: see ``timings``)."""
    import shutil

    spark = spark_session()
    started = time.perf_counter()
    with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
        for name in TABLES:
            spark.createDataFrame(con.table(name).to_arrow_table()).createOrReplaceTempView(name)
    timings["sources to Spark"] = time.perf_counter() - started
    started = time.perf_counter()
    if output.exists():
        shutil.rmtree(output)
    spark.sql(HAND_SPARK_SQL).write.parquet(str(output))
    timings["query + write Parquet"] = time.perf_counter() - started
    return read_parquet_dir(output)


def read_parquet_dir(output: Path) -> pa.Table:
    """Spark's part files in name order (its sort spans them in that order), times naive."""
    parts = sorted(output.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = table.column(index).cast(pa.timestamp(field.type.unit))
            table = table.set_column(index, field.name, naive)
    return table
