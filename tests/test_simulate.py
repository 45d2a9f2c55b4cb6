"""`mlprod simulate` for real: three days of December 2013 replayed against uvicorn on
loopback, with the deployed flights model, online features in Redis and the prediction log in
PostgreSQL, the store materialized as of the first day.

One prediction per replayed flight at its spine time, with the features the batch engine
computes; events advance the store's freshness; labels known before the end join back;
a shift of one carrier's delays shows in its logged features and labels, and nowhere else;
refusals are counted and shown; malformed shifts are explained.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE
from live_server import start_server
from typer.testing import CliRunner

from mlprod import Project
from mlprod.errors import SimulationError
from mlprod.loop.shift import parse_shift
from mlprod.loop.simulate import SimulationSummary, simulate
from mlprod.serve.app import create_app
from mlprod.serve.batch import computed_features
from mlprod.serve.parity import same

START, END = datetime(2013, 12, 2), datetime(2013, 12, 4)
SHIFT_FROM = datetime(2013, 12, 3)
SHIFT = "dep_delay+60 where carrier='UA'"
FEATURE = "carrier_origin_mean_delay_7d"
SPINE_TIME = "time_hour + to_minutes(minute) - INTERVAL 2 HOUR"
LABEL_AT = "time_hour + to_minutes(minute + CAST(coalesce({d}, 0) AS BIGINT))"


@pytest.fixture(scope="module")
def project(
    deployed: Project, tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[Project]:
    """The deployed model on a Redis store of its own, materialized as of START, and a
    PostgreSQL log of its own."""
    folder = tmp_path_factory.mktemp("simulated")
    (folder / "data").symlink_to(deployed.folder / "data")
    (folder / ".mlprod").symlink_to(deployed.folder / ".mlprod")
    config = yaml.safe_load((deployed.folder / "mlprod.yaml").read_text())
    tag = uuid.uuid4().hex[:8]
    config["online"] = {"kind": "redis", "url": redis_url, "namespace": f"mlprod_sim_{tag}"}
    config["log"] = {"kind": "postgres", "url": postgres_url, "schema": f"mlprod_sim_{tag}"}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = Project.load(folder)
    loaded.materialize(as_of=START)
    yield loaded
    store = loaded.online_store()
    store.clear()
    store.close()
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "mlprod_sim_{tag}" CASCADE')


@pytest.fixture(scope="module")
def url(project: Project) -> Iterator[str]:
    service = project.service()
    server, thread, base = start_server(create_app(service))
    yield base
    server.should_exit = True
    thread.join(10)
    service.close()


@dataclass
class Replayed:
    summary: SimulationSummary
    days: list[date]
    seconds: float
    logged: list[dict[str, Any]]
    freshness: dict[str, str | None]


@pytest.fixture(scope="module")
def replayed(project: Project, url: str) -> Replayed:
    days: list[date] = []
    started = time.perf_counter()
    summary = simulate(
        project, url=url, start=START, end=END, shift=SHIFT, shift_from=SHIFT_FROM,
        on_day=days.append,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"\nsimulate: {summary.to_dict()}")
    log = project.prediction_log()
    try:
        logged = log.predictions().to_pylist()
    finally:
        log.close()
    freshness = httpx.get(f"{url}/ready").json()["freshness"]
    return Replayed(summary, days, seconds, logged, freshness)


def _flights(project: Project, select: str, where: str = "") -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(project.folder / "data" / "nycflights13.duckdb"), read_only=True)
    try:
        return con.sql(f"SELECT {select} FROM flights {where}").fetchall()
    finally:
        con.close()


def _in_range(start: datetime = START, end: datetime = END) -> str:
    return f"WHERE {SPINE_TIME} >= '{start}' AND {SPINE_TIME} < '{end}'"


def test_one_prediction_per_flight_at_its_spine_time(project: Project, replayed: Replayed) -> None:
    expected = dict(_flights(project, f"flight_id, {SPINE_TIME}", _in_range()))
    logged = {json.loads(r["keys"])["flight_id"]: r for r in replayed.logged}
    assert len(replayed.logged) == len(expected) > 1900
    assert {k: r["prediction_time"] for k, r in logged.items()} == expected
    summary = replayed.summary
    assert summary.predictions == len(expected)
    assert summary.refused == {} and summary.refusals == []
    assert replayed.days == [date(2013, 12, 2), date(2013, 12, 3)]
    assert summary.days == 2
    # Only the request fields were sent: the served model's inputs, never a late column.
    fields = {f.name for f in project.deployment().request_fields}
    assert all(set(json.loads(r["request"])) == fields for r in replayed.logged)
    assert "dep_delay" not in fields


def test_events_advance_the_online_store(project: Project, replayed: Replayed) -> None:
    """Every flight and weather row available in the window was pushed and applied, and the
    store is fresh up to the last of them (the shifted flights leave later)."""
    shifted = f"CASE WHEN carrier = 'UA' AND time_hour + to_minutes(minute) >= '{SHIFT_FROM}' " \
        "THEN dep_delay + 60 ELSE dep_delay END"  # fmt: skip
    available = LABEL_AT.format(d=shifted)
    window = f"WHERE {available} >= '{START}' AND {available} < '{END}'"
    flights, latest_flight = _flights(project, f"count(*), max({available})", window)[0]
    con = duckdb.connect(str(project.folder / "data" / "nycflights13.duckdb"), read_only=True)
    try:
        weather = con.execute(
            "SELECT count(*) FROM weather WHERE time_hour >= ? AND time_hour < ?", [START, END]
        ).fetchone()
    finally:
        con.close()
    assert replayed.summary.events["flights"] == flights
    assert weather is not None and replayed.summary.events["weather"] == weather[0] > 140
    assert replayed.summary.events_applied > flights  # rows of several online tables
    assert datetime.fromisoformat(str(replayed.freshness["flights"])) == latest_flight
    assert replayed.freshness["weather"] == "2013-12-03T23:00:00"


def test_outcomes_known_before_the_end_join_back(project: Project, replayed: Replayed) -> None:
    delay = "CASE WHEN carrier = 'UA' AND time_hour + to_minutes(minute) >= " \
        f"'{SHIFT_FROM}' THEN dep_delay + 60 ELSE dep_delay END"  # fmt: skip
    rows = _flights(
        project,
        f"flight_id, {delay} IS NULL OR {delay} >= 15, {LABEL_AT.format(d=delay)} < '{END}'",
        _in_range(),
    )
    logged = {json.loads(r["keys"])["flight_id"]: r for r in replayed.logged}
    known = {fid: label for fid, label, before_end in rows if before_end}
    assert {fid: logged[fid]["label"] for fid in known} == known
    assert all(logged[fid]["label"] is None for fid, _, before_end in rows if not before_end)
    assert all(logged[fid]["label_source"] == "feedback" for fid in known)
    assert replayed.summary.outcomes == len(known)
    assert replayed.summary.outcomes_pending == len(rows) - len(known) > 0


def test_features_are_the_batch_features_until_the_shift_then_only_its_carrier_moves(
    project: Project, replayed: Replayed, tmp_path: Path
) -> None:
    deployment = project.deployment()
    fields = [f.name for f in deployment.request_fields]
    requests = [
        {**json.loads(r["request"]), "prediction_time": r["prediction_time"]}
        for r in replayed.logged
    ]
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.Table.from_pylist(requests).select([*fields, "prediction_time"]), path)
    batch = {
        (row["flight_id"], row["prediction_time"]): row
        for row in computed_features(deployment, str(path)).to_pylist()
    }
    before_shift: list[bool] = []
    ua_live, ua_batch = [], []
    for record in replayed.logged:
        request, features = json.loads(record["request"]), json.loads(record["features"])
        expected = batch[(request["flight_id"], record["prediction_time"])]
        if record["prediction_time"] < SHIFT_FROM - timedelta(hours=1):
            # (A flight of the 3rd that left early was known before the 3rd; shifted, later.)
            before_shift += [same(expected[n], features[n]) for n in deployment.features]
        elif request["carrier"] != "UA":
            assert same(expected[FEATURE], features[FEATURE]), request["flight_id"]
        elif features[FEATURE] is not None and expected[FEATURE] is not None:
            ua_live.append(features[FEATURE])
            ua_batch.append(expected[FEATURE])
    assert len(before_shift) > 500 * len(deployment.features) and all(before_shift)
    assert len(ua_live) > 100
    # An hour more of delay from the 3rd: the week's mean the model saw rises over the real one.
    assert sum(ua_live) / len(ua_live) > 1.2 * sum(ua_batch) / len(ua_batch)


def test_a_store_already_holding_the_replayed_events_is_refused(
    project: Project, url: str, replayed: Replayed
) -> None:
    with pytest.raises(SimulationError) as error:
        simulate(project, url=url, start=datetime(2013, 12, 3), end=END)
    assert str(error.value).startswith(
        "the server's online store already holds events from the simulation's start "
        "(2013-12-03 00:00:00) on: 'flights' up to 2013-12-0"
    )
    assert "`mlprod materialize --as-of 2013-12-03T00:00:00`" in str(error.value)


def test_refusals_are_counted_and_shown(project: Project, replayed: Replayed) -> None:
    """A server that takes two records a request refuses bigger batches: each refusal is
    counted by endpoint and status with its message, here and on the command line."""
    import mlprod.cli_simulate  # noqa: F401  (registers the command)
    from mlprod.cli import app

    service = project.service()
    server, thread, base = start_server(create_app(service, max_records=2))
    try:
        summary = simulate(
            project, url=base, start=datetime(2013, 12, 5, 8), end=datetime(2013, 12, 5, 10)
        )
        result = CliRunner().invoke(
            app,
            ["simulate", "--project", str(project.folder), "--url", base,
             "--from", "2013-12-05T10:00", "--to", "2013-12-05T11:00"],
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(10)
        service.close()
    early = _in_range(datetime(2013, 12, 5, 8), datetime(2013, 12, 5, 10))
    assert (
        summary.predictions + summary.refused["POST /predict 422"]
        == _flights(project, "count(*)", early)[0][0]
    )
    assert summary.refused["POST /predict 422"] > 0 and summary.predictions > 0
    assert summary.refused["POST /events/weather 422"] == 6  # two hours at three airports
    assert summary.refusals[0].startswith("POST /")
    assert any("at most 2 are accepted per request" in r for r in summary.refusals)
    assert result.exit_code == 1, result.output
    assert "refused: 3 x POST /events/weather 422" in result.output
    assert "refused: 21 x POST /events/flights 422" in result.output
    assert (
        "POST /events/flights 422: the request holds 21 records; at most 2 are accepted per "
        "request" in result.output
    )
    assert "predictions in" in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dep_dela*2",
         "shift: source 'flights' has no column 'dep_dela' (did you mean 'dep_delay'?)"),
        ("tmp+5", "shift: source 'flights' has no column 'tmp' (did you mean 'weather.temp'?)"),
        ("flight.dep_delay*2", "shift: unknown source 'flight' (did you mean 'flights'?); "
         "the simulation replays 'flights', 'weather'"),
        ("dep_delay x 2", "shift: expected an operation (*, +, -, =) after 'dep_delay' in "
         "'dep_delay x 2', got 'x'"),
        ("dep_delay*2 where carrier='XX'", "shift: 'XX' is not a category of flights.carrier; "
         "it is one of '9E', 'AA', 'AS', 'B6', 'DL', 'EV', 'F9', 'FL', 'HA', 'MQ', 'OO', 'UA' "
         "(and 4 more)"),
        ("dep_delay*2 where carier=UA", "shift: source 'flights' has no column 'carier' "
         "(did you mean 'carrier'?)"),
        ("carrier*2", "shift: flights.carrier is a string column; only '=' can set it (got '*')"),
        ("dep_delay*'a'", "shift: flights.dep_delay is a number column, got 'a'"),
        ("flight_id+1", "shift: flight_id is a key of the spine; changing it would make other "
         "events rather than change these"),
        ("time_hour=1", "shift: flights.time_hour is a timestamp column; a shift changes numbers, "
         "text and booleans (shift what the times are computed from instead, e.g. a delay)"),
        ("origin=", "shift: cannot read 'origin='; expected COLUMN OP VALUE [where COLUMN=VALUE "
         "[and ...]] with OP one of *, +, -, =, e.g. dep_delay*2 where carrier='UA'"),
        ("dep_delay*2 if carrier=UA", "shift: expected 'where' after the change in "
         "'dep_delay*2 if carrier=UA', got 'if'"),
        ("distance=null", "shift: flights.distance may not be null (its contract says "
         "nullable: false)"),
        ("origin='JFK' where weather.temp=1", "shift: the condition reads 'weather.temp', but "
         "the change is to source 'flights'; a condition can only read the changed row"),
    ],
)  # fmt: skip
def test_malformed_shifts_are_explained(spec: str, message: str) -> None:
    config = Project.load(FLIGHTS_EXAMPLE).config
    with pytest.raises(SimulationError) as error:
        parse_shift(spec, config, ["flights", "weather"])
    assert str(error.value) == message


def test_shifts_that_parse() -> None:
    config = Project.load(FLIGHTS_EXAMPLE).config
    sources = ["flights", "weather"]
    assert parse_shift(SHIFT, config, sources).describe() == (
        "flights.dep_delay+60 where carrier='UA'"
    )
    assert parse_shift("visib=0 where origin=EWR and time_hour!=null", config, sources,
                       datetime(2013, 12, 3)).describe() == (
        "weather.visib=0 where origin='EWR' and time_hour!=null from 2013-12-03 00:00:00"
    )  # fmt: skip
