"""Nothing acknowledged is lost: `mlprod serve` killed with SIGKILL under concurrent load.

Eight clients score and send feedback as fast as they can; the server process is killed
mid-flight. Every prediction and every feedback the server answered 200 for must be in the
prediction log afterwards, and a restarted server must be ready again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlprod import Project
from mlprod.serve.predlog import SqlitePredictionLog

AT = "2013-07-15T17:00:00"
RECORD: dict[str, Any] = {
    "flight_id": 1, "hour": 19, "minute": 0, "year": 2013, "month": 7, "day": 15,
    "distance": 1065, "carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
    "flight": 1545,
}  # fmt: skip


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = ["serve", "--project", str(folder), "--port", str(port)]
    with log.open("ab") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlprod.cli", *command],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    pytest.fail("mlprod serve did not become ready in 120 s")


def test_acknowledged_predictions_and_feedback_survive_sigkill(
    deployed: Project, tmp_path: Path
) -> None:
    port = _port()
    server = _start(deployed.folder, port, tmp_path / "server.log")
    predictions: list[str] = []
    feedback: dict[str, bool] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    answer = http.post("/predict", params={"at": AT}, json=RECORD)
                    if answer.status_code == 200:
                        pid = answer.json()["predictions"][0]["prediction_id"]
                        with lock:
                            predictions.append(pid)
                        if n % 3 == 0:
                            label = (n + number) % 2 == 0
                            sent = http.post(
                                "/feedback", json={"prediction_id": pid, "label": label}
                            )
                            if sent.status_code == 200:
                                with lock:
                                    feedback[pid] = label
                except httpx.TransportError:
                    return  # the server is gone

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 60
    while len(predictions) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    stop.set()
    for thread in clients:
        thread.join(15)
    assert len(predictions) >= 150 and feedback
    log = SqlitePredictionLog(deployed.folder / ".mlprod" / "predictions.sqlite")
    try:
        logged = {r["prediction_id"]: r for r in log.predictions().to_pylist()}
    finally:
        log.close()
    missing = [pid for pid in predictions if pid not in logged]
    assert not missing, f"{len(missing)} acknowledged predictions are not in the log"
    wrong = [pid for pid, label in feedback.items() if logged[pid]["label"] is not label]
    assert not wrong, f"{len(wrong)} acknowledged feedback labels are not in the log"
    restarted = _start(deployed.folder, port, tmp_path / "server.log")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/ready").json()["ready"] is True
    finally:
        restarted.terminate()
        restarted.wait(30)
