"""The REST server's protocols, errors and metrics, against a small deterministic service.

``ToyService`` follows the ScoringService contract (it validates a 4-field request schema and
scores with a formula), so these tests pin the HTTP side only; end-to-end tests with the real
service live elsewhere. Most tests go through an in-process ASGI client; one drives a real
uvicorn server on a random local port.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import socket
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import StarletteDeprecationWarning

from mlprod.errors import InputError
from mlprod.features.requests import RequestField
from mlprod.serve.app import create_app
from mlprod.serve.contract import (
    FeedbackItem,
    FieldProblem,
    Prediction,
    Readiness,
    RequestRejected,
)
from mlprod.serve.v2_protocol import parse_infer

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

NOW = datetime(2013, 6, 1, 12, 0, tzinfo=UTC)
FIELDS = ["departs", "distance", "flight", "origin"]


class ToyService:
    """A ScoringService with a 4-field request schema and a closed-form score."""

    model_name = "delays"
    model_version = "3"
    run_id = "run-abc"
    sources = ["weather"]  # noqa: RUF012

    def __init__(self) -> None:
        self.request_fields = [
            RequestField("flight", "int", nullable=False, key=True),
            RequestField("origin", "string", nullable=False),
            RequestField("distance", "float", nullable=True),
            RequestField("departs", "timestamp", nullable=False),
        ]
        self.ids = itertools.count()
        self.issued: dict[str, Prediction] = {}
        self.events: set[str] = set()
        self.latest: datetime | None = None
        self.labels: set[str] = set()
        self.ready = True
        self.calls: list[tuple[str, Any]] = []

    def predict(
        self, records: Sequence[Mapping[str, Any]], at: datetime | None = None
    ) -> list[Prediction]:
        self.calls.append(("predict", at))
        problems = [p for i, r in enumerate(records) for p in _check(i, r)]
        if problems:
            raise RequestRejected(problems)
        if any(r["origin"] == "BOOM" for r in records):
            raise RuntimeError("secret internals: password=hunter2")
        if any(r["origin"] == "OLD" for r in records):
            raise InputError("feature 'temp' is missing from the online store; push weather")
        out = []
        for r in records:
            score = score_of(r)
            p = Prediction(
                f"p{next(self.ids)}",
                score,
                score >= 0.5,
                self.model_name,
                self.model_version,
                at or NOW,
                {"flight": r["flight"]},
            )
            self.issued[p.prediction_id] = p
            out.append(p)
        return out

    def push(self, source: str, records: Sequence[Mapping[str, Any]]) -> int:
        problems = [
            FieldProblem(i, "time", "missing") for i, r in enumerate(records) if "time" not in r
        ]
        if problems:
            raise RequestRejected(problems)
        new = {json.dumps(r, sort_keys=True) for r in records} - self.events
        self.events |= new
        for r in records:
            t = datetime.fromisoformat(r["time"])
            self.latest = t if self.latest is None else max(self.latest, t)
        return len(new)

    def feedback(self, items: Sequence[FeedbackItem]) -> dict[str, Any]:
        applied = duplicates = 0
        unmatched = []
        for i, item in enumerate(items):
            matched = item.prediction_id in self.issued or (
                item.keys is not None
                and any(
                    p.keys == item.keys and p.prediction_time == item.prediction_time
                    for p in self.issued.values()
                )
            )
            key = f"{item.prediction_id}|{item.keys}|{item.prediction_time}|{item.label}"
            if not matched:
                unmatched.append(i)
            elif key in self.labels:
                duplicates += 1
            else:
                self.labels.add(key)
                applied += 1
        return {"applied": applied, "duplicates": duplicates, "unmatched": unmatched}

    def readiness(self) -> Readiness:
        checks = {
            "model": "ok",
            "online store": "ok" if self.ready else "redis: connection refused",
        }
        return Readiness(self.ready, checks, {"weather": self.latest})


_KINDS = {"int": "an integer", "float": "a number", "string": "a string", "timestamp": "a time"}


def _check(i: int, record: Mapping[str, Any]) -> list[FieldProblem]:
    problems = [
        FieldProblem(i, k, f"unknown field; expected one of {', '.join(FIELDS)}")
        for k in sorted(record)
        if k not in FIELDS
    ]
    types = {"flight": "int", "origin": "string", "distance": "float", "departs": "timestamp"}
    for name in FIELDS:
        kind = types[name]
        if name not in record:
            problems.append(FieldProblem(i, name, "missing"))
            continue
        value = record[name]
        if value is None:
            if name != "distance":
                problems.append(FieldProblem(i, name, "must not be null"))
            continue
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "string": isinstance(value, str),
            "timestamp": isinstance(value, str) and _is_time(value),
        }[kind]
        if not ok:
            problems.append(FieldProblem(i, name, f"expected {_KINDS[kind]}, got {value!r}"))
    return problems


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def score_of(r: Mapping[str, Any]) -> float:
    hour = datetime.fromisoformat(r["departs"]).hour
    z = (r["distance"] or 500) / 1000 - 1 + (0.4 if r["origin"] == "JFK" else 0) + hour / 24
    z = max(-30.0, min(30.0, z + (r["flight"] % 10) / 20))
    return 1 / (1 + math.exp(-z))


ROWS = [
    {"flight": 1545, "origin": "EWR", "distance": 1400.0, "departs": "2013-01-01T05:15:00"},
    {"flight": 714, "origin": "JFK", "distance": None, "departs": "2013-01-01T17:40:00"},
    {"flight": 33, "origin": "LGA", "distance": 187.5, "departs": "2013-01-02T09:00:00+00:00"},
]
SCORES = [score_of(r) for r in ROWS]


@pytest.fixture
def service() -> ToyService:
    return ToyService()


@pytest.fixture
def client(service: ToyService) -> Iterator[TestClient]:
    with TestClient(create_app(service, max_records=5, max_body_bytes=4000)) as c:
        yield c


def error(status: int, message: str, problems: list[dict[str, Any]] | None = None) -> Any:
    return {"error": {"status": status, "message": message, "problems": problems or []}}


# --- the same record scores the same through every protocol -------------------------------


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


MLFLOW_BODIES = {
    "dataframe_split": {
        "dataframe_split": {
            "columns": list(ROWS[0]),
            "data": [list(r.values()) for r in ROWS],
            "index": [10, 11, 12],
        },
        "params": {"ignored": True},
    },
    "dataframe_records": {"dataframe_records": ROWS},
    "inputs columns": {"inputs": columns(ROWS)},
    "inputs records": {"inputs": ROWS},
    "instances records": {"instances": ROWS},
    "instances columns": {"instances": columns(ROWS)},
}


def v2_json_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    types = {"flight": "INT64", "origin": "BYTES", "distance": "FP64", "departs": "BYTES"}
    return {
        "id": "req-1",
        "inputs": [
            {
                "name": "flight",
                "datatype": "INT64",
                "shape": [len(rows)],
                "data": [r["flight"] for r in rows],
            },
            {
                "name": "origin",
                "datatype": types["origin"],
                "shape": [len(rows), 1],
                "data": [[r["origin"]] for r in rows],
            },
            {
                "name": "distance",
                "datatype": "FP64",
                "shape": [len(rows)],
                "data": [r["distance"] for r in rows],
            },
            {
                "name": "departs",
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [r["departs"] for r in rows],
            },
        ],
    }


def v2_binary_body(rows: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """A request as tritonclient sends it: JSON header, then little-endian tensors; no
    Content-Type. ``distance`` goes as JSON (a tensor cannot hold the null of row 1)."""

    def strings(values: list[str]) -> bytes:
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)

    n = len(rows)
    tensors = [
        ("flight", "INT64", struct.pack(f"<{n}q", *(r["flight"] for r in rows))),
        ("origin", "BYTES", strings([r["origin"] for r in rows])),
        ("departs", "BYTES", strings([r["departs"] for r in rows])),
    ]
    header = {
        "inputs": [
            {
                "name": name,
                "datatype": t,
                "shape": [n],
                "parameters": {"binary_data_size": len(raw)},
            }
            for name, t, raw in tensors
        ]
        + [
            {
                "name": "distance",
                "datatype": "FP64",
                "shape": [n],
                "data": [r["distance"] for r in rows],
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    body = head + b"".join(raw for _, _, raw in tensors)
    return body, {"Inference-Header-Content-Length": str(len(head))}


def read_binary_answer(response: httpx.Response) -> dict[str, list[Any]]:
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    rest = response.content[length:]
    out: dict[str, list[Any]] = {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw, rest = rest[:size], rest[size:]
        n = output["shape"][0]
        code = {"FP64": "d", "BOOL": "?"}[output["datatype"]]
        out[output["name"]] = list(struct.unpack(f"<{n}{code}", raw))
    assert rest == b""
    return out


def csv_body(rows: list[dict[str, Any]]) -> bytes:
    lines = [",".join(rows[0])]
    lines += [",".join("" if v is None else str(v) for v in r.values()) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def scores_everywhere(c: TestClient | httpx.Client) -> dict[str, list[float]]:
    """The scores of ROWS through every protocol and shape."""
    got: dict[str, list[float]] = {}
    answer = c.post("/predict", json=ROWS)
    assert answer.status_code == 200, answer.text
    got["/predict"] = [p["score"] for p in answer.json()["predictions"]]
    one = c.post("/predict", json=ROWS[0]).json()["predictions"]
    got["/predict one"] = [p["score"] for p in one] + SCORES[1:]
    for name, body in MLFLOW_BODIES.items():
        answer = c.post("/invocations", json=body)
        assert answer.status_code == 200, (name, answer.text)
        got[name] = answer.json()["predictions"]
    answer = c.post("/invocations", content=csv_body(ROWS), headers={"Content-Type": "text/csv"})
    got["csv"] = answer.json()["predictions"]
    answer = c.post(
        "/invocations", content=b"flight,gate\n1,2\n", headers={"Content-Type": "text/csv"}
    )
    assert answer.json()["error"]["message"] == (
        "the CSV header row has unknown field 'gate'; expected the request fields "
        "'flight', 'origin', 'distance', 'departs'"
    )
    answer = c.post("/v2/models/delays/infer", json=v2_json_body(ROWS))
    assert answer.json()["id"] == "req-1"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["decision"] == {
        "name": "decision",
        "datatype": "BOOL",
        "shape": [3],
        "data": [s >= 0.5 for s in SCORES],
    }
    got["v2 json"] = outputs["score"]["data"]
    body, headers = v2_binary_body(ROWS)
    answer = c.post("/v2/models/delays/versions/3/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    binary = read_binary_answer(answer)
    assert binary["decision"] == [s >= 0.5 for s in SCORES]
    got["v2 binary"] = binary["score"]
    return got


def test_the_same_record_gets_the_same_score_through_every_protocol(client: TestClient) -> None:
    for name, scores in scores_everywhere(client).items():
        assert scores == SCORES, name


def test_predict_answers_full_predictions_as_of_at(client: TestClient, service: ToyService) -> None:
    answer = client.post("/predict?at=2013-01-01T06:00:00Z", json=ROWS[0])
    assert answer.status_code == 200
    assert answer.json() == {
        "predictions": [
            {
                "prediction_id": "p0",
                "score": SCORES[0],
                "decision": SCORES[0] >= 0.5,
                "model_name": "delays",
                "model_version": "3",
                "prediction_time": "2013-01-01T06:00:00+00:00",
                "keys": {"flight": 1545},
            }
        ]
    }
    assert service.calls == [("predict", datetime(2013, 1, 1, 6, tzinfo=UTC))]
    assert client.post("/predict", json=[]).json() == {"predictions": []}
    assert service.calls == [("predict", datetime(2013, 1, 1, 6, tzinfo=UTC))]  # not called
    assert client.post("/predict?at=yesterday", json=ROWS[0]).json() == error(
        422,
        "'at': expected an ISO 8601 time such as 2013-01-01T05:00:00Z, got 'yesterday'",
        [
            {
                "record": None,
                "field": "at",
                "message": (
                    "expected an ISO 8601 time such as 2013-01-01T05:00:00Z, got 'yesterday'"
                ),
            }
        ],
    )


# --- validation: one problem per field -------------------------------------------------------


BAD = [
    {"flight": "abc", "origin": "JFK", "departs": "2013-01-01T05:00:00", "gate": 7},
    ROWS[0],
    {"flight": 1, "origin": None, "distance": True, "departs": "soon"},
]
BAD_PROBLEMS = [
    {
        "record": 0,
        "field": "gate",
        "message": "unknown field; expected one of departs, distance, flight, origin",
    },
    {"record": 0, "field": "distance", "message": "missing"},
    {"record": 0, "field": "flight", "message": "expected an integer, got 'abc'"},
    {"record": 2, "field": "departs", "message": "expected a time, got 'soon'"},
    {"record": 2, "field": "distance", "message": "expected a number, got True"},
    {"record": 2, "field": "origin", "message": "must not be null"},
]


def test_records_that_break_the_schema_get_one_problem_per_field(client: TestClient) -> None:
    message = (
        "record 0, field 'gate': unknown field; expected one of departs, distance, flight, origin "
        "(and 5 more)"
    )
    answer = client.post("/predict", json=BAD)
    assert answer.status_code == 422
    assert answer.json() == error(422, message, BAD_PROBLEMS)
    answer = client.post("/invocations", json={"dataframe_records": BAD})
    assert answer.json() == error(422, message, BAD_PROBLEMS)
    answer = client.post("/invocations", json={"inputs": {"flight": ["abc"], "origin": ["x"]}})
    assert answer.json()["error"]["problems"] == [
        {"record": 0, "field": "departs", "message": "missing"},
        {"record": 0, "field": "distance", "message": "missing"},
        {"record": 0, "field": "flight", "message": "expected an integer, got 'abc'"},
    ]
    body = v2_json_body(ROWS[:1])
    body["inputs"][0]["data"] = ["abc"]
    body["inputs"][0]["datatype"] = "BYTES"
    answer = client.post("/v2/models/delays/infer", json=body)
    assert answer.status_code == 400
    assert answer.json() == {"error": "record 0, field 'flight': expected an integer, got 'abc'"}


def test_bodies_of_the_wrong_shape_are_refused_in_the_error_shape(client: TestClient) -> None:
    cases: list[tuple[str, Any, int, str]] = [
        ("/predict", 5, 422, "expected a record (a JSON object) or a list of records, got 5"),
        ("/predict", [ROWS[0], "x"], 422, "record 1: expected a record (a JSON object), got 'x'"),
        (
            "/invocations",
            [ROWS[0]],
            422,
            (
                "expected a JSON object with one of 'dataframe_split', 'dataframe_records', "
                "'inputs', 'instances' (MLflow's scoring protocol), got a list"
            ),
        ),
        (
            "/invocations",
            {"records": ROWS},
            422,
            (
                "expected exactly one of 'dataframe_split', 'dataframe_records', 'inputs', "
                "'instances' and optionally 'params', got 'records'"
            ),
        ),
        (
            "/invocations",
            {"inputs": ROWS, "instances": ROWS},
            422,
            (
                "expected exactly one of 'dataframe_split', 'dataframe_records', 'inputs', "
                "'instances' and optionally 'params', got 'inputs', 'instances'"
            ),
        ),
        (
            "/invocations",
            {"dataframe_split": {"data": [[1]]}},
            422,
            "'dataframe_split' must have 'columns' and 'data' (and optionally 'index'), got 'data'",
        ),
        (
            "/invocations",
            {"dataframe_split": {"columns": ["flight", "origin"], "data": [[1]]}},
            422,
            "record 0: expected a row of 2 values in 'dataframe_split.data', got 1",
        ),
        (
            "/invocations",
            {"inputs": ROWS, "params": [1]},
            422,
            "'params' must be an object, got a list",
        ),
        (
            "/invocations",
            {"dataframe_records": {"flight": [1]}},
            422,
            "'dataframe_records' must hold a list of records, got an object",
        ),
        (
            "/invocations",
            {"inputs": {"flight": [1, 2], "origin": ["x"]}},
            422,
            "the columns of 'inputs' have different lengths: 'flight' has 2, 'origin' has 1",
        ),
        (
            "/invocations",
            {"instances": {"flight": [1], "origin": "x"}},
            422,
            "'instances' must map every column to a list of values, but 'origin' holds 'x'",
        ),
        (
            "/events/weather",
            [{"time": "2013-01-01T00:00:00"}, 3],
            422,
            "record 1: expected a record (a JSON object), got 3",
        ),
    ]
    for path, body, status, message in cases:
        answer = client.post(path, json=body)
        assert (answer.status_code, answer.json()["error"]["message"]) == (status, message), body


def test_malformed_json_empty_bodies_and_nan_are_400(client: TestClient) -> None:
    cases = [
        (
            b'{"flight": 1,}',
            (
                "the request body is not valid JSON: Expecting property name enclosed in double "
                "quotes (line 1, column 14)"
            ),
        ),
        (b"", "the request body is empty; expected JSON"),
        (
            b'{"distance": NaN}',
            (
                "the request body is not valid JSON: NaN is not a JSON value; send null for a "
                "missing number"
            ),
        ),
        (b'{"origin": "\xff"}', "the request body is not valid UTF-8 text"),
    ]
    for path in ("/predict", "/invocations", "/feedback", "/events/weather"):
        for body, message in cases:
            answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.json() == error(400, message), (path, body)
    answer = client.post("/v2/models/delays/infer", content=b"[1, 2")
    assert answer.json() == {
        "error": "the request body is not valid JSON: Expecting ',' delimiter (line 1, column 6)"
    }


def test_a_wrong_content_type_is_415(client: TestClient) -> None:
    answer = client.post("/predict", content=b"flight=1", headers={"Content-Type": "text/plain"})
    assert answer.json() == error(415, "expected Content-Type application/json, got 'text/plain'")
    answer = client.post(
        "/invocations", content=b"<a/>", headers={"Content-Type": "application/xml"}
    )
    assert answer.json() == error(
        415, "expected Content-Type application/json or text/csv, got 'application/xml'"
    )
    answer = client.post(
        "/predict",
        content=json.dumps(ROWS[0]).encode("utf-16"),
        headers={"Content-Type": "application/json; charset=utf-16"},
    )
    assert answer.json() == error(415, "expected a UTF-8 body, got charset 'utf-16'")


def test_too_many_records_are_422_and_too_many_bytes_413(client: TestClient) -> None:
    six = [ROWS[0]] * 6
    too_many = (
        "the request holds 6 records; at most 5 are accepted per request (send smaller batches)"
    )
    assert client.post("/predict", json=six).json() == error(422, too_many)
    assert client.post("/invocations", json={"instances": six}).json() == error(422, too_many)
    assert client.post("/invocations", json={"inputs": columns(six)}).json() == error(422, too_many)
    assert client.post("/events/weather", json=six).json() == error(422, too_many)
    assert client.post("/feedback", json=[{"prediction_id": "p", "label": True}] * 6).json() == (
        error(422, too_many)
    )
    answer = client.post("/v2/models/delays/infer", json=v2_json_body(six))
    assert (answer.status_code, answer.json()) == (400, {"error": too_many})
    big = json.dumps([{"origin": "x" * 1000}] * 4).encode()
    answer = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert answer.json() == error(
        413,
        f"the request body has {len(big)} bytes; at most 4000 are accepted (send smaller batches)",
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b"["
        for _ in range(60):
            yield json.dumps(ROWS[0]).encode() + b","
        yield b"{}]"

    answer = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["message"].startswith("the request body has at least ")


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: TestClient) -> None:
    assert client.get("/predictions").json() == error(
        404, "no route GET /predictions; the routes are listed at /docs"
    )
    answer = client.get("/predict")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json() == error(405, "method GET is not allowed on /predict; use POST")
    assert client.post("/predict/", json=ROWS[0]).status_code == 404  # no redirects
    assert client.get("/v2/nothing").json() == {
        "error": "no route GET /v2/nothing; the routes are listed at /docs"
    }


def test_bugs_are_a_generic_500_and_the_traceback_stays_in_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mlprod.serve"):
        answer = client.post("/predict", json={**ROWS[0], "origin": "BOOM"})
    assert answer.status_code == 500
    message = answer.json()["error"]["message"]
    assert message.startswith("internal server error (incident ")
    assert message.endswith("); the server log has the details")
    assert "hunter2" not in answer.text
    [record] = caplog.records
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    answer = client.post(
        "/v2/models/delays/infer", json=v2_json_body([{**ROWS[0], "origin": "BOOM"}])
    )
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("internal server error (incident ")


def test_mlprod_errors_are_4xx_with_their_message(client: TestClient) -> None:
    answer = client.post("/predict", json={**ROWS[0], "origin": "OLD"})
    assert answer.json() == error(
        422, "feature 'temp' is missing from the online store; push weather"
    )


# --- Open Inference Protocol v2 ---------------------------------------------------------------


def test_v2_metadata_health_and_unknown_models(client: TestClient, service: ToyService) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json() == {
        "name": "mlprod",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    metadata = {
        "name": "delays",
        "versions": ["3"],
        "platform": "mlprod",
        "inputs": [
            {"name": "flight", "datatype": "INT64", "shape": [-1]},
            {"name": "origin", "datatype": "BYTES", "shape": [-1]},
            {"name": "distance", "datatype": "FP64", "shape": [-1]},
            {"name": "departs", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "score", "datatype": "FP64", "shape": [-1]},
            {"name": "decision", "datatype": "BOOL", "shape": [-1]},
        ],
    }
    assert client.get("/v2/models/delays").json() == metadata
    assert client.get("/v2/models/delays/versions/3").json() == metadata
    assert client.get("/v2/models/delays/ready").json() == {"name": "delays", "ready": True}
    answer = client.get("/v2/models/flights")
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "unknown model 'flights'; this server serves 'delays'"},
    )
    answer = client.post("/v2/models/delays/versions/2/infer", json=v2_json_body(ROWS))
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "model 'delays' has no version '2'; this server serves version '3'"},
    )
    service.ready = False
    answer = client.get("/v2/health/ready")
    assert (answer.status_code, answer.json()) == (503, {"ready": False})


def test_v2_requests_that_do_not_fit_are_400(client: TestClient) -> None:
    def infer(body: Any, **kw: Any) -> Any:
        answer = client.post("/v2/models/delays/infer", json=body, **kw)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]

    good = v2_json_body(ROWS)
    assert (
        infer({"inputs": []})
        == "'inputs' must be a non-empty list of tensors, one per request field, got a list"
    )
    assert (
        infer(
            {
                **good,
                "inputs": [
                    *good["inputs"][:1],
                    {**good["inputs"][1], "shape": [2], "data": ["a", "b"]},
                ],
            }
        )
        == "all inputs must have one value per record, but 'flight' has 3, 'origin' has 2"
    )
    assert (
        infer({"inputs": [{**good["inputs"][0], "shape": [3, 2]}]})
        == "input 'flight' has shape [3, 2]; expected [n] or [n, 1]: one value per record"
    )
    assert (
        infer({"inputs": [{**good["inputs"][0], "datatype": "INT128"}]})
        == "input 'flight' has datatype 'INT128'; expected one of BOOL, INT8, INT16, INT32, "
        "INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES"
    )
    assert (
        infer({"inputs": [{**good["inputs"][0], "data": [1, 2]}]})
        == "input 'flight' has 2 values for shape [3]"
    )
    assert (
        infer({**good, "outputs": [{"name": "proba"}]})
        == "unknown output 'proba'; this model answers 'decision', 'score'"
    )
    body, headers = v2_binary_body(ROWS)
    answer = client.post("/v2/models/delays/infer", content=body[:-3], headers=headers)
    assert answer.json() == {
        "error": (
            "input 'departs' declares 75 bytes of binary data, but only 72 are left in the body"
        )
    }
    answer = client.post("/v2/models/delays/infer", content=body + b"xx", headers=headers)
    assert answer.json() == {"error": "2 bytes of binary data follow the inputs unread"}


def test_v2_binary_tensors_of_every_fixed_datatype_decode() -> None:
    tensors = [
        ("b", "BOOL", bytes([1, 0, 1])),
        ("i", "INT32", struct.pack("<3i", -1, 0, 7)),
        ("u", "UINT8", bytes([255, 0, 3])),
        ("h", "FP16", struct.pack("<3e", 0.5, -2.0, 1.0)),
        ("f", "FP32", struct.pack("<3f", 0.25, 1.5, -3.0)),
    ]
    header = {
        "inputs": [
            {"name": n, "datatype": t, "shape": [3, 1], "parameters": {"binary_data_size": len(r)}}
            for n, t, r in tensors
        ],
        "outputs": [{"name": "decision", "parameters": {"binary_data": True}}, {"name": "score"}],
    }
    head = json.dumps(header).encode()
    parsed = parse_infer(head + b"".join(r for *_, r in tensors), str(len(head)), 10)
    assert parsed.records == [
        {"b": True, "i": -1, "u": 255, "h": 0.5, "f": 0.25},
        {"b": False, "i": 0, "u": 0, "h": -2.0, "f": 1.5},
        {"b": True, "i": 7, "u": 3, "h": 1.0, "f": -3.0},
    ]
    assert (parsed.outputs, parsed.binary) == (["decision", "score"], {"decision"})


# --- events, feedback, health -----------------------------------------------------------------


def test_events_are_pushed_to_their_source(client: TestClient) -> None:
    events = [{"time": "2013-01-01T05:00:00", "temp": 3.5}, {"time": "2013-01-01T06:00:00"}]
    assert client.post("/events/weather", json=events).json() == {"applied": 2, "received": 2}
    assert client.post("/events/weather", json=events[0]).json() == {"applied": 0, "received": 1}
    assert client.post("/events/wether", json=events).json() == error(
        404, "unknown source 'wether' (did you mean 'weather'?); events can be pushed for 'weather'"
    )
    assert client.post("/events/weather", json=[{"temp": 1}]).json() == error(
        422,
        "record 0, field 'time': missing",
        [{"record": 0, "field": "time", "message": "missing"}],
    )


def test_feedback_by_id_or_by_keys(client: TestClient) -> None:
    [p] = client.post("/predict?at=2013-01-01T06:00:00Z", json=ROWS[0]).json()["predictions"]
    items = [
        {"prediction_id": p["prediction_id"], "label": True},
        {"keys": {"flight": 1545}, "prediction_time": "2013-01-01T06:00:00+00:00", "label": False},
        {"prediction_id": "nope", "label": True},
    ]
    assert client.post("/feedback", json=items).json() == {
        "applied": 2,
        "duplicates": 0,
        "unmatched": [2],
    }
    assert client.post("/feedback", json=items[0]).json() == {
        "applied": 0,
        "duplicates": 1,
        "unmatched": [],
    }
    bad = [
        {"prediction_id": "p0", "label": "yes", "note": 1},
        {"label": True},
        {"prediction_id": "p0", "keys": {}, "label": True},
        {"keys": [1], "prediction_time": "later", "label": False},
        {"keys": {"flight": 1}, "label": False},
    ]
    assert client.post("/feedback", json=bad).json()["error"]["problems"] == [
        {
            "record": 0,
            "field": "note",
            "message": (
                "unknown field; feedback has 'keys', 'label', 'prediction_id', 'prediction_time'"
            ),
        },
        {"record": 0, "field": "label", "message": "expected true or false, got 'yes'"},
        {
            "record": 1,
            "field": "",
            "message": (
                "name the prediction by 'prediction_id' or by 'keys' and 'prediction_time', got "
                "neither"
            ),
        },
        {
            "record": 2,
            "field": "",
            "message": (
                "name the prediction by 'prediction_id' or by 'keys' and 'prediction_time', not "
                "both"
            ),
        },
        {"record": 3, "field": "keys", "message": "expected an object of key values, got a list"},
        {
            "record": 3,
            "field": "prediction_time",
            "message": "expected an ISO 8601 time such as 2013-01-01T05:00:00Z, got 'later'",
        },
        {
            "record": 4,
            "field": "prediction_time",
            "message": "missing; give the time the prediction was made as of",
        },
    ]


def test_health_and_readiness(client: TestClient, service: ToyService) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {
        "ready": True,
        "checks": {"model": "ok", "online store": "ok"},
        "freshness": {"weather": None},
    }
    client.post("/events/weather", json={"time": "2013-01-01T05:00:00+00:00"})
    service.ready = False
    answer = client.get("/ready")
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "checks": {"model": "ok", "online store": "redis: connection refused"},
        "freshness": {"weather": "2013-01-01T05:00:00+00:00"},
    }


# --- metrics and OpenAPI ----------------------------------------------------------------------


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_template_in_a_private_registry(
    client: TestClient, service: ToyService
) -> None:
    other = TestClient(create_app(ToyService()))  # a second app in the same process
    client.post("/predict", json=ROWS)
    client.post("/v2/models/delays/infer", json=v2_json_body(ROWS[:1]))
    client.post("/v2/models/nope/infer", json={})
    client.get("/no/such/path/123")
    client.request("BREW", "/coffee")
    client.post("/events/weather", json={"time": "2013-01-01T05:00:00+00:00"})
    samples = metric_samples(client.get("/metrics").text)

    def requests(endpoint: str, method: str, status: str) -> float:
        labels = (("endpoint", endpoint), ("method", method), ("status", status))
        return samples[("mlprod_http_requests_total", labels)]

    assert requests("/predict", "POST", "200") == 1
    assert requests("/v2/models/{name}/infer", "POST", "200") == 1
    assert requests("/v2/models/{name}/infer", "POST", "404") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("unmatched", "OTHER", "404") == 1
    assert samples[("mlprod_http_request_duration_seconds_count", (("endpoint", "/predict"),))] == 1
    decided = sum(s >= 0.5 for s in SCORES[:1] * 2 + SCORES[1:])
    model = (("model", "delays"), ("version", "3"))
    assert samples[("mlprod_predictions_total", (("decision", "true"), *model))] == decided
    assert samples[("mlprod_predictions_total", (("decision", "false"), *model))] == 4 - decided
    assert samples[("mlprod_score_count", ())] == 4
    assert samples[("mlprod_score_bucket", (("le", "+Inf"),))] == 4
    info = (("model", "delays"), ("run_id", "run-abc"), ("version", "3"))
    assert samples[("mlprod_model_info", info)] == 1
    stamp = datetime(2013, 1, 1, 5, tzinfo=UTC).timestamp()
    latest = ("mlprod_online_latest_event_timestamp_seconds", (("source", "weather"),))
    assert samples[latest] == stamp
    age = samples[("mlprod_online_freshness_seconds", (("source", "weather"),))]
    assert age == pytest.approx(datetime.now(UTC).timestamp() - stamp, abs=60)
    assert not any(labels and "/no/such" in str(labels) for _, labels in samples)

    fresh = metric_samples(other.get("/metrics").text)
    assert fresh[("mlprod_score_count", ())] == 0
    assert ("mlprod_online_freshness_seconds", (("source", "weather"),)) not in fresh


def test_openapi_describes_every_body_with_the_request_fields(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    schema = predict["requestBody"]["content"]["application/json"]["schema"]
    record = schema["anyOf"][0]
    assert record == {
        "type": "object",
        "title": "Record",
        "properties": {
            "flight": {"type": "integer"},
            "origin": {"type": "string"},
            "distance": {"type": ["number", "null"]},
            "departs": {"type": "string", "format": "date-time"},
        },
        "required": ["flight", "origin", "distance", "departs"],
        "additionalProperties": False,
    }
    assert schema["anyOf"][1] == {"type": "array", "items": record, "maxItems": 5}
    assert predict["parameters"][0]["name"] == "at"
    assert set(predict["responses"]) == {"200", "400", "413", "415", "422"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "post":
                assert "requestBody" in operation, path
            assert "200" in operation["responses"], (path, method)
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    tensor = infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    names = tensor["inputs"]["items"]["properties"]["name"]
    assert names == {"enum": ["flight", "origin", "distance", "departs"]}


# --- a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """A uvicorn server (httptools) on a free local port, in a thread, for the session."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app: FastAPI = create_app(ToyService(), max_records=5, max_body_bytes=4000)
    config = uvicorn.Config(
        app, http="httptools", ws="none", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_a_real_uvicorn_server_speaks_every_protocol(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/v2/health/live").json() == {"live": True}
        for name, scores in scores_everywhere(c).items():
            assert scores == SCORES, name
        answer = c.post("/predict", json=BAD)
        assert (answer.status_code, answer.json()["error"]["problems"]) == (422, BAD_PROBLEMS)
        assert c.post("/predict", json=[ROWS[0]] * 6).status_code == 422
        big = b"[" + b" " * 5000 + b"]"
        assert c.post("/predict", content=big).json()["error"]["status"] == 413
        assert c.post("/predict", content=b"{").json()["error"]["status"] == 400
        assert c.get("/nowhere").json()["error"]["status"] == 404
        assert c.post("/events/weather", json={"time": "2013-01-01T05:00:00"}).json() == {
            "applied": 1,
            "received": 1,
        }
        [p] = c.post("/predict", json=ROWS[0]).json()["predictions"]
        feedback = c.post("/feedback", json={"prediction_id": p["prediction_id"], "label": True})
        assert feedback.json() == {"applied": 1, "duplicates": 0, "unmatched": []}
        ready = c.get("/ready").json()
        assert ready["freshness"] == {"weather": "2013-01-01T05:00:00"}
        assert c.get("/v2/models/delays").json()["name"] == "delays"
        assert c.get("/openapi.json").status_code == 200
        samples = metric_samples(c.get("/metrics").text)
        ok = (("endpoint", "/predict"), ("method", "POST"), ("status", "200"))
        assert samples[("mlprod_http_requests_total", ok)] == 3
        assert samples[("mlprod_http_requests_total", (*ok[:2], ("status", "413")))] == 1
        assert samples[("mlprod_http_requests_total", (*ok[:2], ("status", "422")))] == 2
        assert (
            samples[
                (
                    "mlprod_predictions_total",
                    (("decision", "true"), ("model", "delays"), ("version", "3")),
                )
            ]
            >= 1
        )
