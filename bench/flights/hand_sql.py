"""Method 2, hand-written DuckDB SQL: the speed limit mlprod is measured against.

Holds the query an expert would write by hand for the same features, on the same DuckDB file
(also run under the profiler by ``query_profile``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from .settings import DATA_FILE

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
