"""The REST server, for real: uvicorn on loopback, the deployed flights model, online features
from Redis and the prediction log in PostgreSQL.

The same record gets the same score through /predict, MLflow's /invocations (all four
shapes), the Open Inference Protocol v2 (JSON and binary tensors) and batch scoring, as of
the same time; every prediction is in the log before its answer; feedback joins back.
"""

from __future__ import annotations

import calendar
import json
import struct
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from live_server import start_server
from prometheus_client.parser import text_string_to_metric_families

from mlprod import Project
from mlprod.serve.app import create_app

AT = "2013-07-15T17:00:00"


@pytest.fixture(scope="module")
def production(
    deployed: Project,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    postgres_url: str,
) -> Iterator[Project]:
    """The deployed project pointed at Redis and PostgreSQL (same registry and data)."""
    folder = tmp_path_factory.mktemp("production")
    (folder / "data").symlink_to(deployed.folder / "data")
    (folder / ".mlprod").symlink_to(deployed.folder / ".mlprod")
    config = yaml.safe_load((deployed.folder / "mlprod.yaml").read_text())
    tag = uuid.uuid4().hex[:8]
    config["online"] = {"kind": "redis", "url": redis_url, "namespace": f"mlprod_test_{tag}"}
    config["log"] = {"kind": "postgres", "url": postgres_url, "schema": f"mlprod_log_{tag}"}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    project = Project.load(folder)
    project.materialize()
    yield project
    store = project.online_store()
    store.clear()
    store.close()
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "mlprod_log_{tag}" CASCADE')


@pytest.fixture(scope="module")
def live(production: Project) -> Iterator[httpx.Client]:
    service = production.service()
    server, thread, url = start_server(create_app(service))
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def records(production: Project) -> list[dict[str, Any]]:
    fields = [f.name for f in production.deployment().request_fields]
    con = duckdb.connect(str(production.folder / "data" / "nycflights13.duckdb"), read_only=True)
    rows = con.sql(
        f"SELECT {', '.join(fields)} FROM flights WHERE month = 7 AND day = 15 AND hour = 19 "
        "ORDER BY flight_id LIMIT 5"
    ).to_arrow_table()
    con.close()
    return rows.to_pylist()


def _scores(answer: httpx.Response) -> list[float]:
    assert answer.status_code == 200, answer.text
    return [p["score"] for p in answer.json()["predictions"]]


def test_the_same_score_through_every_protocol_and_batch(
    live: httpx.Client, production: Project, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    by_predict = _scores(live.post("/predict", params={"at": AT}, json=records))
    assert len(by_predict) == 5 and len(set(by_predict)) > 1
    assert [_scores(live.post("/predict", params={"at": AT}, json=r))[0] for r in records] == (
        by_predict
    )
    columns = list(records[0])
    shapes = [
        {"dataframe_split": {"columns": columns, "data": [list(r.values()) for r in records]}},
        {"dataframe_records": records},
        {"inputs": {c: [r[c] for r in records] for c in columns}},
        {"instances": records},
    ]
    for body in shapes:
        answer = live.post("/invocations", params={"at": AT}, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == by_predict, next(iter(body))
    v2 = live.post(
        "/v2/models/flights/infer",
        params={"at": AT},
        json={"inputs": [_v2_input(c, [r[c] for r in records]) for c in columns]},
    )
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["score"]["data"] == by_predict
    assert _v2_binary(live, columns, records) == by_predict
    # Batch scoring of the same rows at the same time.
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    out = tmp_path / "scores.parquet"
    production.score(None, str(path), str(out), at=datetime.fromisoformat(AT))
    assert pq.read_table(out).column("score").to_pylist() == by_predict


def _v2_input(name: str, values: list[Any]) -> dict[str, Any]:
    kind = "BYTES" if isinstance(values[0], str) or values[0] is None else "INT64"
    return {"name": name, "shape": [len(values)], "datatype": kind, "data": values}


def _v2_binary(
    live: httpx.Client, columns: list[str], records: list[dict[str, Any]]
) -> list[float]:
    """What tritonclient sends by default: a JSON header, then raw little-endian tensors."""
    inputs, blobs = [], []
    for name in columns:
        values = [r[name] for r in records]
        if isinstance(values[0], str):
            blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            kind = "BYTES"
        else:
            blob = struct.pack(f"<{len(values)}q", *values)
            kind = "INT64"
        inputs.append(
            {"name": name, "shape": [len(values)], "datatype": kind,
             "parameters": {"binary_data_size": len(blob)}}
        )  # fmt: skip
        blobs.append(blob)
    header = json.dumps({"inputs": inputs}).encode()
    answer = live.post(
        "/v2/models/flights/infer",
        params={"at": AT},
        content=header + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    return list(outputs["score"]["data"])


def test_every_prediction_is_logged_and_feedback_joins(
    live: httpx.Client, production: Project, records: list[dict[str, Any]]
) -> None:
    answer = live.post("/predict", params={"at": AT}, json=records[0]).json()
    prediction = answer["predictions"][0]
    log = production.prediction_log()
    try:
        logged = {r["prediction_id"]: r for r in log.predictions().to_pylist()}
        row = logged[prediction["prediction_id"]]
        assert row["score"] == prediction["score"]
        assert json.loads(row["keys"]) == {"flight_id": records[0]["flight_id"]}
        assert json.loads(row["request"])["origin"] == records[0]["origin"]
        assert set(json.loads(row["features"])) == set(production.deployment().features)
        feedback = {"prediction_id": prediction["prediction_id"], "label": True}
        assert live.post("/feedback", json=feedback).json()["applied"] == 1
        assert live.post("/feedback", json=feedback).json()["duplicates"] == 1
        by_keys = {"keys": {"flight_id": records[0]["flight_id"]}, "prediction_time": AT,
                   "label": False}  # fmt: skip
        assert live.post("/feedback", json=by_keys).json()["applied"] >= 1
        labelled = {r["prediction_id"]: r for r in log.predictions().to_pylist()}
        assert labelled[prediction["prediction_id"]]["label"] is False
    finally:
        log.close()


def test_requests_are_checked_field_by_field(
    live: httpx.Client, records: list[dict[str, Any]]
) -> None:
    bad = {**records[0], "hour": "five", "origni": "JFK"}
    del bad["dest"]
    answer = live.post("/predict", json=bad)
    assert answer.status_code == 422
    problems = answer.json()["error"]["problems"]
    assert [(p["field"], p["message"]) for p in problems] == [
        ("origni", "unknown field (did you mean 'origin'?)"),
        ("hour", "expected an integer, got the string 'five'"),
        ("dest", "missing field: expected a string"),
    ]
    assert live.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    ).status_code in (400, 422)


def test_health_ready_docs_and_metrics(live: httpx.Client, records: list[dict[str, Any]]) -> None:
    assert live.get("/health").json() == {"status": "ok"}
    ready = live.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["freshness"]["weather"] == "2013-12-30T23:00:00"
    assert live.get("/docs").status_code == 200
    spec = live.get("/openapi.json").json()
    assert {"/predict", "/invocations", "/v2/models/{name}/infer", "/feedback"} <= set(
        spec["paths"]
    )
    assert live.get("/v2/health/ready").status_code == 200
    meta = live.get("/v2/models/flights").json()
    assert [i["name"] for i in meta["inputs"]][:3] == ["flight_id", "hour", "minute"]
    assert live.get("/v2/models/nope").status_code == 404
    live.post("/predict", params={"at": AT}, json=records[0])
    families = {f.name: f for f in text_string_to_metric_families(live.get("/metrics").text)}
    requests = families["mlprod_http_requests"]
    assert any(
        s.labels.get("endpoint") == "/predict" and s.labels.get("status") == "200" and s.value >= 1
        for s in requests.samples
    )
    assert "mlprod_score" in families
    assert "mlprod_model_info" in families
    freshness = families["mlprod_online_latest_event_timestamp_seconds"]
    weather = [s.value for s in freshness.samples if s.labels.get("source") == "weather"]
    assert weather == [calendar.timegm(datetime(2013, 12, 30, 23, 0).timetuple())]


def test_events_pushed_over_http_are_applied_once(live: httpx.Client) -> None:
    event = {
        "origin": "JFK", "time_hour": "2013-12-31T05:00:00", "temp": 30.2, "dewp": 10.0,
        "humid": 42.0, "wind_speed": 8.0, "wind_gust": None, "precip": 0.0,
        "pressure": 1020.0, "visib": 10.0,
    }  # fmt: skip
    assert live.post("/events/weather", json=event).json() == {"applied": 1, "received": 1}
    assert live.post("/events/weather", json=[event]).json() == {"applied": 0, "received": 1}
    assert live.get("/ready").json()["freshness"]["weather"] == "2013-12-31T05:00:00"
    record = {"origin": "JFK"}
    answer = live.post("/events/wether", json=record)
    assert answer.status_code == 404
    assert "did you mean 'weather'" in answer.json()["error"]["message"]


def test_a_tampered_artefact_is_refused_at_start(production: Project) -> None:
    from typer.testing import CliRunner

    from mlprod.cli import app

    path = production.deployment().located.path / "pipeline.pkl"
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\0")
        result = CliRunner().invoke(app, ["serve", "--project", str(production.folder)])
    finally:
        path.write_bytes(original)
    assert result.exit_code == 2
    assert "pipeline.pkl was modified after the artefact was saved" in result.output
    assert "Traceback" not in result.output


def test_outcomes_label_logged_predictions_from_the_spine(
    live: httpx.Client, production: Project, records: list[dict[str, Any]]
) -> None:
    """`mlprod outcomes` labels predictions with the spine's own label once it is known."""
    ids = [
        live.post("/predict", params={"at": AT}, json=r).json()["predictions"][0]["prediction_id"]
        for r in records
    ]
    summary = production.outcomes()
    assert summary.labelled >= len(ids)
    again = production.outcomes()
    assert again.labelled == 0  # idempotent: nothing left to label
    con = duckdb.connect(str(production.folder / "data" / "nycflights13.duckdb"), read_only=True)
    late = dict(
        con.execute(
            "SELECT flight_id, dep_delay IS NULL OR dep_delay >= 15 FROM flights "
            "WHERE list_contains($ids, flight_id)",
            {"ids": [r["flight_id"] for r in records]},
        ).fetchall()
    )
    con.close()
    log = production.prediction_log()
    try:
        logged = {r["prediction_id"]: r for r in log.predictions().to_pylist()}
    finally:
        log.close()
    for pid, record in zip(ids, records, strict=True):
        assert logged[pid]["label"] is late[record["flight_id"]]
        assert logged[pid]["label_source"] == "outcomes"
