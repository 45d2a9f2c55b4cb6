"""Method 3, plain pandas: the matrix as users write it today, without mlprod.

``merge`` for lookups, ``merge_asof`` for the weather and the latest value, and
``groupby().rolling(window, on=..., closed="left")`` over the union of prediction rows and
source rows for the windowed aggregates.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from .settings import AS_OF, DATA_FILE


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
