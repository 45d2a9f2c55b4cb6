"""The prediction log keeps every acknowledged prediction and label, on SQLite and PostgreSQL.

Every test runs against both backends for real: a SQLite file in a temporary project, and a
fresh schema in the test PostgreSQL, dropped at the end. Durability is tested by SIGKILLing a
child process that appends.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mlprod.errors import InputError
from mlprod.serve.predlog import (
    PREDICTIONS_SCHEMA,
    Feedback,
    FeedbackResult,
    LogSpec,
    PredictionLog,
    PredictionLogError,
    PredictionRecord,
    feature_table,
    open_prediction_log,
)

T0 = datetime(2026, 3, 1, 12, 0, 0)


@dataclass
class Backend:
    spec: LogSpec
    project_dir: Path

    def open(self) -> PredictionLog:
        return open_prediction_log(self.spec, self.project_dir)

    def spec_json(self) -> str:
        return self.spec.model_dump_json(by_alias=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend(LogSpec(), tmp_path)
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"mlprod_test_{uuid.uuid4().hex[:12]}"
    try:
        yield Backend(LogSpec(kind="postgres", url=url, schema=schema), tmp_path)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def log(backend: Backend) -> Iterator[PredictionLog]:
    opened = backend.open()
    yield opened
    opened.close()


def record(
    n: int,
    *,
    keys: dict[str, Any] | None = None,
    prediction_time: datetime | None = None,
    model_name: str = "flights",
    **fields: Any,
) -> PredictionRecord:
    values: dict[str, Any] = {
        "prediction_id": uuid.uuid4().hex,
        "predicted_at": T0 + timedelta(seconds=n),
        "prediction_time": prediction_time or T0 + timedelta(seconds=n),
        "model_name": model_name,
        "model_version": "3",
        "keys": keys if keys is not None else {"flight_id": n},
        "request": {"flight_id": n},
        "features": {"distance": 100.0 + n},
        "score": 0.25,
        "decision": False,
        **fields,
    }
    return PredictionRecord(**values)


def rows_by_id(log: PredictionLog) -> dict[str, dict[str, Any]]:
    return {row["prediction_id"]: row for row in log.predictions().to_pylist()}


# --- 1. append and read back ------------------------------------------------------------------


def test_append_reads_back_every_field_and_json_value(log: PredictionLog) -> None:
    scored_at = datetime(2026, 3, 1, 12, 0, 0, 123456)
    first = record(
        1,
        predicted_at=scored_at,
        prediction_time=datetime(2026, 3, 1, 11, 0),
        keys={"flight_id": 123, "carrier": "UA"},
        request={
            "flight_id": 123,
            "carrier": "UA",
            "dep_time": datetime(2026, 3, 1, 11, 0, 0, 5),
            "note": None,
            "ratio": 0.1,
            "tiny": 1e-300,
            "big": 12345678901234567,
            "negative": -2.5,
            "tags": ["a", 1, None],
            "nested": {"ok": True},
        },
        features={"distance": 1400.5, "n_flights": 7, "origin": "JFK", "missing": None},
        score=0.8125,
        decision=True,
        source="batch",
    )
    second = record(2, model_name="other")
    log.append([first, second])

    table = log.predictions()
    assert table.schema == PREDICTIONS_SCHEMA
    assert log.count() == table.num_rows == 2
    row = rows_by_id(log)[first.prediction_id]
    decoded = {name: json.loads(row.pop(name)) for name in ("keys", "request", "features")}
    assert decoded == {
        "keys": {"flight_id": 123, "carrier": "UA"},
        "request": {
            "flight_id": 123,
            "carrier": "UA",
            "dep_time": "2026-03-01T11:00:00.000005",
            "note": None,
            "ratio": 0.1,
            "tiny": 1e-300,
            "big": 12345678901234567,
            "negative": -2.5,
            "tags": ["a", 1, None],
            "nested": {"ok": True},
        },
        "features": {"distance": 1400.5, "n_flights": 7, "origin": "JFK", "missing": None},
    }
    assert row == {
        "prediction_id": first.prediction_id,
        "predicted_at": scored_at,
        "prediction_time": datetime(2026, 3, 1, 11, 0),
        "model_name": "flights",
        "model_version": "3",
        "score": 0.8125,
        "decision": True,
        "source": "batch",
        "label": None,
        "labelled_at": None,
        "label_source": None,
        "experiment": None,
        "variant": None,
        "assignment": None,
        "served": True,
        "latency_ms": None,
    }
    features = feature_table(log.predictions(model_name="flights"))  # jsonb reorders keys
    assert features.select(["distance", "n_flights", "origin", "missing"]).to_pylist() == [
        {"distance": 1400.5, "n_flights": 7, "origin": "JFK", "missing": None}
    ]


def test_nan_becomes_null_and_aware_times_become_naive_utc(log: PredictionLog) -> None:
    plus_two = timezone(timedelta(hours=2))
    item = record(
        1,
        predicted_at=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two),
        features={"x": math.nan, "y": [math.inf, 1.5]},
    )
    log.append([item])
    row = log.predictions().to_pylist()[0]
    assert row["predicted_at"] == datetime(2026, 3, 1, 12, 0)
    assert json.loads(row["features"]) == {"x": None, "y": [None, 1.5]}


def test_a_value_that_is_not_json_is_refused_with_its_place(log: PredictionLog) -> None:
    item = record(1, features={"distance": {1, 2}})
    with pytest.raises(PredictionLogError) as caught:
        log.append([item])
    assert str(caught.value) == (
        f"cannot store prediction {item.prediction_id} features.distance in the prediction log: "
        "expected a JSON value (number, string, bool, null, datetime, list or mapping), "
        "found set {1, 2}"
    )


def test_filters_and_limit_keep_the_latest_in_time_order(log: PredictionLog) -> None:
    log.append([record(n, model_name="a" if n % 2 else "b") for n in range(10)])
    log.append([record(10, model_name="a")])
    assert log.count() == 11

    latest = log.predictions(limit=3).to_pylist()
    assert [r["predicted_at"] for r in latest] == [T0 + timedelta(seconds=n) for n in (8, 9, 10)]
    of_a = log.predictions(model_name="a", since=T0 + timedelta(seconds=5)).to_pylist()
    assert [json.loads(r["keys"])["flight_id"] for r in of_a] == [5, 7, 9, 10]
    assert log.predictions(model_name="none").num_rows == 0
    assert log.predictions(model_name="none").schema == PREDICTIONS_SCHEMA


def test_a_batch_with_a_known_id_stores_nothing(log: PredictionLog, backend: Backend) -> None:
    kept = record(1)
    log.append([kept])
    with pytest.raises(PredictionLogError) as caught:
        log.append([record(2), kept])
    where = (
        str(backend.project_dir / ".mlprod" / "predictions.sqlite")
        if backend.spec.kind == "sqlite"
        else f"{backend.spec.url} (schema '{backend.spec.schema_}')"
    )
    assert str(caught.value) == (
        f"a prediction id in this batch is already in the prediction log at {where}, so "
        "nothing of the batch was stored; give every prediction a new id (uuid4 hex)"
    )
    assert log.count() == 1
    log.append([record(3)])  # the connection is still usable
    assert log.count() == 2


def test_appends_from_many_threads_all_land(log: PredictionLog) -> None:
    def work(offset: int) -> None:
        for n in range(25):
            log.append([record(offset + n)])

    threads = [threading.Thread(target=work, args=(100 * t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.count() == 200


# --- 2. feedback -----------------------------------------------------------------------------


def test_feedback_by_id_by_keys_duplicates_replacement_and_unmatched(log: PredictionLog) -> None:
    one_a = record(1, keys={"flight_id": 1, "carrier": "UA"}, prediction_time=T0)
    one_b = record(2, keys={"carrier": "UA", "flight_id": 1}, prediction_time=T0, model_name="b")
    two = record(3, keys={"flight_id": 2}, prediction_time=T0)
    log.append([one_a, one_b, two])
    seen_1 = datetime(2026, 3, 2)
    seen_2 = datetime(2026, 3, 3)

    by_id = Feedback(label=True, prediction_id=two.prediction_id, observed_at=seen_1)
    assert log.add_feedback([by_id]) == FeedbackResult(applied=1, duplicates=0, unmatched=[])
    # Keys in another order match both predictions with those keys and that prediction_time.
    by_keys = Feedback(
        label=False, keys={"carrier": "UA", "flight_id": 1}, prediction_time=T0, observed_at=seen_1
    )
    assert log.add_feedback([by_keys]) == FeedbackResult(applied=2, duplicates=0, unmatched=[])

    # The same feedback again, or the same label observed at another time: nothing changes.
    again = Feedback(label=True, prediction_id=two.prediction_id)
    assert log.add_feedback([by_keys, by_id, again]) == FeedbackResult(0, 4, [])

    # Items that match nothing are reported by their place; the others are still stored.
    result = log.add_feedback(
        [
            Feedback(label=True, prediction_id="no-such-id"),
            Feedback(label=False, prediction_id=two.prediction_id, observed_at=seen_2),
            Feedback(
                label=True,
                keys={"flight_id": 1, "carrier": "UA"},
                prediction_time=T0 + timedelta(microseconds=1),
            ),
            Feedback(label=True, keys={"flight_id": 99}, prediction_time=T0),
        ]
    )
    assert result == FeedbackResult(applied=1, duplicates=0, unmatched=[0, 2, 3])

    rows = rows_by_id(log)
    labels = {pid: (r["label"], r["labelled_at"], r["label_source"]) for pid, r in rows.items()}
    assert labels == {
        one_a.prediction_id: (False, seen_1, "feedback"),
        one_b.prediction_id: (False, seen_1, "feedback"),
        two.prediction_id: (False, seen_2, "feedback"),  # the later label replaced True
    }


def test_the_latest_observation_wins_whatever_the_arrival_order(log: PredictionLog) -> None:
    item = record(1)
    log.append([item])
    early, late = datetime(2026, 3, 2), datetime(2026, 3, 3)
    pid = item.prediction_id

    late_false = Feedback(label=False, prediction_id=pid, observed_at=late, source="outcomes")
    assert log.add_feedback([late_false]) == FeedbackResult(1, 0, [])
    # An older, different label is kept in the history but does not replace the later one.
    assert log.add_feedback([Feedback(label=True, prediction_id=pid, observed_at=early)]) == (
        FeedbackResult(1, 0, [])
    )
    assert rows_by_id(log)[pid]["label"] is False
    # Two labels in one call: the second, received later with the same time, wins.
    assert log.add_feedback(
        [Feedback(label=True, prediction_id=pid), Feedback(label=False, prediction_id=pid)]
    ) == FeedbackResult(2, 0, [])
    row = rows_by_id(log)[pid]
    assert (row["label"], row["label_source"]) == (False, "feedback")
    assert row["labelled_at"] > late


def test_feedback_must_name_a_prediction() -> None:
    with pytest.raises(InputError) as caught:
        Feedback(label=True, keys={"flight_id": 1})
    assert str(caught.value) == (
        "feedback must name either a prediction_id, or keys together with prediction_time; "
        "got prediction_id=None, keys={'flight_id': 1}, prediction_time=None"
    )
    with pytest.raises(InputError):
        Feedback(label=True, prediction_id="x", keys={"flight_id": 1}, prediction_time=T0)
    with pytest.raises(InputError):
        Feedback(label=True)


# --- 3. readers in other processes ------------------------------------------------------------

READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlprod.serve.predlog import LogSpec, open_prediction_log

    log = open_prediction_log(LogSpec.model_validate_json(sys.argv[1]), Path(sys.argv[2]))
    print("ready", flush=True)
    first = last = log.count()
    print(first, flush=True)
    end = time.monotonic() + 30
    while last < first + 50 and time.monotonic() < end:  # until it saw 50 appends land
        count = log.count()
        log.predictions(limit=5)
        if count != last:
            print(count, flush=True)
            last = count
    log.close()
    """
)


def test_another_process_reads_while_this_one_appends(tmp_path: Path) -> None:
    backend = Backend(LogSpec(), tmp_path)
    log = backend.open()
    log.append([record(0)])
    script = tmp_path / "reader.py"
    script.write_text(READER)
    with subprocess.Popen(
        [sys.executable, str(script), backend.spec_json(), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            assert child.stdout.readline() == "ready\n"
            n, end = 1, time.monotonic() + 60
            while child.poll() is None and time.monotonic() < end:
                log.append([record(n)])
                n += 1
            child.wait(timeout=60)
            out, err = child.stdout.read(), child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
    counts = [int(line) for line in out.split()]
    assert child.returncode == 0, err
    assert err == ""
    assert counts == sorted(counts)
    assert counts[-1] >= counts[0] + 50, "the reader should have seen the log grow"
    assert counts[-1] <= log.count() == n
    log.close()


# --- 4. durability under SIGKILL --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, uuid
    from datetime import datetime
    from pathlib import Path
    from mlprod.serve.predlog import LogSpec, PredictionRecord, open_prediction_log

    log = open_prediction_log(LogSpec.model_validate_json(sys.argv[1]), Path(sys.argv[2]))
    n = 0
    while True:
        n += 1
        now = datetime(2026, 3, 1)
        item = PredictionRecord(
            uuid.uuid4().hex, now, now, "flights", "1", {"flight_id": n},
            {"flight_id": n}, {"x": n / 3}, 0.5, True,
        )
        log.append([item])
        print(item.prediction_id, flush=True)
    """
)


def test_acknowledged_predictions_survive_sigkill(backend: Backend, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    acknowledged: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(script), backend.spec_json(), str(backend.project_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            while len(acknowledged) < 200:
                line = child.stdout.readline()
                assert line, f"the writer stopped early: {child.stderr.read()}"
                acknowledged.append(line.strip())
        finally:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        acknowledged += child.stdout.read().split()  # printed before the kill landed
    assert child.returncode == -signal.SIGKILL

    reopened = backend.open()
    try:
        stored = set(reopened.predictions().column("prediction_id").to_pylist())
        assert set(acknowledged) <= stored
        assert len(stored) - len(acknowledged) <= 1  # at most the one in flight
    finally:
        reopened.close()


# --- 5. errors people see ---------------------------------------------------------------------


def test_unreachable_postgres_names_the_redacted_url(tmp_path: Path) -> None:
    spec = LogSpec(kind="postgres", url="postgresql://mlprod:secret@127.0.0.1:1/test")
    with pytest.raises(PredictionLogError) as caught:
        open_prediction_log(spec, tmp_path)
    assert str(caught.value) == (
        "cannot reach the prediction log in PostgreSQL at postgresql://mlprod@127.0.0.1:1/test: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused; check that '
        "the server is running and that log.url is right"
    )
    assert "secret" not in str(caught.value)


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(postgres_url: str, tmp_path: Path) -> None:
    """As after a PostgreSQL restart: reads and the next write go through on a new connection."""
    schema = f"mlprod_test_{uuid.uuid4().hex[:12]}"
    log = open_prediction_log(LogSpec(kind="postgres", url=postgres_url, schema=schema), tmp_path)
    try:
        for operation in (log.ping, log.count, lambda: log.append([record(1)])):
            log.count()  # its last query names the schema, which finds its connection
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'mlprod' AND position(%s in query) > 0",
                    (schema,),
                ).fetchone()
            assert killed == (1,)
            operation()
        assert log.count() == 1
    finally:
        log.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_ping_answers_and_a_closed_log_says_so(log: PredictionLog) -> None:
    log.ping()
    log.close()
    with pytest.raises(PredictionLogError) as caught:
        log.ping()
    assert str(caught.value) == "the prediction log is closed"


def test_a_log_from_a_newer_mlprod_is_refused(tmp_path: Path) -> None:
    open_prediction_log(LogSpec(), tmp_path).close()
    path = tmp_path / ".mlprod" / "predictions.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(PredictionLogError) as caught:
        open_prediction_log(LogSpec(), tmp_path)
    assert str(caught.value) == (
        f"the prediction log at {path} has schema version 3, but this mlprod knows versions "
        "up to 2; upgrade mlprod"
    )


def test_observed_at_defaults_to_now_in_utc(log: PredictionLog) -> None:
    item = record(1)
    log.append([item])
    before = datetime.now(UTC).replace(tzinfo=None)
    log.add_feedback([Feedback(label=True, prediction_id=item.prediction_id)])
    after = datetime.now(UTC).replace(tzinfo=None)
    labelled_at = rows_by_id(log)[item.prediction_id]["labelled_at"]
    assert before <= labelled_at <= after
