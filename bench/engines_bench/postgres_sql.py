"""Hand-written PostgreSQL for the 35 flights features: what an expert writes for PostgreSQL.

The tables sit in one schema of the database (loaded once per scale, not timed). An expert
uses what PostgreSQL does well:

* windowed count, mean and standard deviation: spine rows and source rows in one stream per
  key, ``RANGE BETWEEN '<w>' PRECEDING AND '1 microsecond' PRECEDING`` over the timestamps,
  with the delays as ``numeric``: PostgreSQL then runs these aggregates in moving mode (it
  subtracts the rows that leave the frame, exactly), linear in the rows; the 3-hour maximum
  over the same small frames;
* the weather, the latest delay and the distinct delayed carriers: ``LATERAL`` subqueries
  that read a B-tree index (``ORDER BY time DESC LIMIT 1``, a 3-hour index range). The
  indexes are created by the hand path itself, on a temporary table of the departures with
  their availability time and on the weather table inside the transaction, and their
  creation is timed with it; the transaction is rolled back, so nothing stays behind;
* lookups: LEFT JOINs.

Strict point in time: a source row is visible only if available strictly before ``t``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pyarrow as pa

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _schema(schema: str) -> str:
    if not IDENTIFIER.match(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return f'"{schema}"'


def prepare_statements(schema: str) -> list[tuple[str, str]]:
    """(what, statement): the temporary table, its indexes, statistics."""
    s = _schema(schema)
    return [
        (
            "departures table",
            f"""
CREATE TEMPORARY TABLE ev AS
SELECT carrier, origin, dest, tailnum, flight, dep_delay,
       time_hour + (minute + coalesce(dep_delay, 0)::bigint) * interval '1 minute' AS at
FROM {s}.flights""",
        ),
        (
            "indexes",
            "CREATE INDEX ev_delayed ON ev (origin, at) INCLUDE (carrier) WHERE dep_delay >= 15",
        ),
        (
            "indexes",
            "CREATE INDEX ev_flight ON ev (carrier, flight, at DESC, dep_delay DESC) "
            "WHERE dep_delay IS NOT NULL",
        ),
        ("indexes", f"CREATE INDEX weather_origin_time ON {s}.weather (origin, time_hour)"),
        ("indexes", "ANALYZE ev"),
    ]


def hand_query(schema: str) -> str:
    s = _schema(schema)
    return f"""
WITH spine AS MATERIALIZED (
    SELECT flight_id, year, month, day, hour, minute, distance, carrier, origin, dest, tailnum,
           flight,
           time_hour + minute * interval '1 minute' - interval '2 hours' AS t,
           dep_delay IS NULL OR dep_delay >= 15 AS label,
           time_hour + (minute + coalesce(dep_delay, 0)::bigint) * interval '1 minute'
               AS label_at
    FROM {s}.flights
    WHERE time_hour + (minute + coalesce(dep_delay, 0)::bigint) * interval '1 minute'
          < timestamp '2100-01-01'
),
-- carrier and origin, 7 days: mean and standard deviation (numeric: exact moving sums)
co AS (
    SELECT flight_id, avg(v) OVER w AS mean_7d, stddev_samp(v) OVER w AS std_7d
    FROM (
        SELECT flight_id, carrier, origin, t AS ts, NULL::numeric AS v FROM spine
        UNION ALL
        SELECT NULL, carrier, origin, at, dep_delay::numeric FROM ev
    ) AS stream
    WINDOW w AS (PARTITION BY carrier, origin ORDER BY ts
                 RANGE BETWEEN interval '7 days' PRECEDING AND interval '1 microsecond' PRECEDING)
),
-- origin, 3 hours and 1 day: counts and the maximum
o AS (
    SELECT flight_id,
           count(*) FILTER (WHERE v >= 15) OVER w3 AS delayed_3h,
           count(v) OVER w3 AS departures_3h,
           max(v) OVER w3 AS max_delay_3h,
           count(*) FILTER (WHERE is_source AND v IS NULL) OVER w1 AS cancelled_1d
    FROM (
        SELECT flight_id, origin, t AS ts, NULL::double precision AS v, false AS is_source
        FROM spine
        UNION ALL
        SELECT NULL, origin, at, dep_delay, true FROM ev
    ) AS stream
    WINDOW w3 AS (PARTITION BY origin ORDER BY ts
                  RANGE BETWEEN interval '3 hours' PRECEDING
                            AND interval '1 microsecond' PRECEDING),
           w1 AS (PARTITION BY origin ORDER BY ts
                  RANGE BETWEEN interval '1 day' PRECEDING
                            AND interval '1 microsecond' PRECEDING)
),
-- destination, 7 days: mean
d AS (
    SELECT flight_id, avg(v) OVER w AS mean_7d
    FROM (
        SELECT flight_id, dest, t AS ts, NULL::numeric AS v FROM spine
        UNION ALL
        SELECT NULL, dest, at, dep_delay::numeric FROM ev
    ) AS stream
    WINDOW w AS (PARTITION BY dest ORDER BY ts
                 RANGE BETWEEN interval '7 days' PRECEDING AND interval '1 microsecond' PRECEDING)
),
-- the plane, 1 day: mean (a flight without a tail number sees nothing)
pl AS (
    SELECT flight_id, avg(v) OVER w AS mean_1d
    FROM (
        SELECT flight_id, tailnum, t AS ts, NULL::numeric AS v
        FROM spine WHERE tailnum IS NOT NULL
        UNION ALL
        SELECT NULL, tailnum, at, dep_delay::numeric FROM ev WHERE tailnum IS NOT NULL
    ) AS stream
    WINDOW w AS (PARTITION BY tailnum ORDER BY ts
                 RANGE BETWEEN interval '1 day' PRECEDING AND interval '1 microsecond' PRECEDING)
)
SELECT
    sp.flight_id,
    sp.t AS prediction_time,
    sp.label,
    sp.label_at AS label_available_at,
    sp.hour AS sched_hour,
    sp.hour * 60 + sp.minute AS sched_minute_of_day,
    extract(dow FROM make_date(sp.year::int, sp.month::int, sp.day::int))::bigint
        AS day_of_week,
    extract(doy FROM make_date(sp.year::int, sp.month::int, sp.day::int))::bigint
        AS day_of_year,
    sp.month AS month_of_year,
    sp.distance AS distance_miles,
    CASE WHEN sp.distance < 500 THEN 'short' WHEN sp.distance < 1500 THEN 'medium'
         ELSE 'long' END AS distance_band,
    sp.carrier,
    sp.origin,
    sp.dest,
    pn.year AS plane_year,
    pn.seats AS plane_seats,
    pn.engines AS plane_engines,
    pn.manufacturer AS plane_manufacturer,
    sp.year - pn.year AS plane_age,
    ap.alt AS dest_altitude,
    ap.lon AS dest_longitude,
    wx.temp AS origin_temp,
    wx.dewp AS origin_dewpoint,
    wx.humid AS origin_humidity,
    wx.wind_speed AS origin_wind_speed,
    wx.wind_gust AS origin_wind_gust,
    wx.precip AS origin_precip,
    wx.pressure AS origin_pressure,
    wx.visib AS origin_visibility,
    co.mean_7d::double precision AS carrier_origin_mean_delay_7d,
    co.std_7d::double precision AS carrier_origin_std_delay_7d,
    o.delayed_3h AS origin_delayed_3h,
    o.departures_3h AS origin_departures_3h,
    o.max_delay_3h AS origin_max_delay_3h,
    o.cancelled_1d AS origin_cancelled_1d,
    d.mean_7d::double precision AS dest_mean_delay_7d,
    pl.mean_1d::double precision AS plane_mean_delay_1d,
    fl.dep_delay AS flight_last_delay_7d,
    cd.carriers AS origin_delayed_carriers_3h
FROM spine AS sp
JOIN co ON co.flight_id = sp.flight_id
JOIN o ON o.flight_id = sp.flight_id
JOIN d ON d.flight_id = sp.flight_id
LEFT JOIN pl ON pl.flight_id = sp.flight_id
-- the latest weather before t, if at most 3 hours old
LEFT JOIN LATERAL (
    SELECT w.* FROM {s}.weather AS w
    WHERE w.origin = sp.origin AND w.time_hour < sp.t
    ORDER BY w.time_hour DESC LIMIT 1
) AS wx0 ON true
LEFT JOIN LATERAL (SELECT wx0.* WHERE wx0.time_hour >= sp.t - interval '3 hours') AS wx ON true
-- this flight number's latest delay before t (the largest among ties), if within 7 days
LEFT JOIN LATERAL (
    SELECT e.dep_delay FROM (
        SELECT ev.at, ev.dep_delay FROM ev
        WHERE ev.carrier = sp.carrier AND ev.flight = sp.flight AND ev.at < sp.t
              AND ev.dep_delay IS NOT NULL
        ORDER BY ev.at DESC, ev.dep_delay DESC LIMIT 1
    ) AS e
    WHERE e.at >= sp.t - interval '7 days'
) AS fl ON true
-- distinct carriers with a departure 15+ minutes late in the last 3 hours
CROSS JOIN LATERAL (
    SELECT count(DISTINCT ev.carrier) AS carriers FROM ev
    WHERE ev.origin = sp.origin AND ev.dep_delay >= 15
          AND ev.at >= sp.t - interval '3 hours' AND ev.at < sp.t
) AS cd
LEFT JOIN {s}.planes AS pn ON pn.tailnum = sp.tailnum
LEFT JOIN {s}.airports AS ap ON ap.faa = sp.dest
ORDER BY sp.t, sp.flight_id
"""


def run_postgres_sql(url: str, schema: str, timings: dict[str, float]) -> pa.Table:
    """Index, query, fetch the matrix; roll back so the database is left as it was."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url) as conn, conn.cursor() as cursor:
        try:
            started = time.perf_counter()
            for what, statement in prepare_statements(schema):
                cursor.execute(statement)
                now = time.perf_counter()
                timings[what] = timings.get(what, 0.0) + now - started
                started = now
            cursor.execute(hand_query(schema))
            table: pa.Table = cursor.fetch_arrow_table()
            timings["query + fetch"] = time.perf_counter() - started
        finally:
            conn.rollback()
    return table


def backend_pids(cursor: Any, application: str) -> list[int]:
    """Server processes (client backends and their parallel workers) of ``application``."""
    cursor.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        parameters=(application,),
    )
    return [int(row[0]) for row in cursor.fetchall()]
