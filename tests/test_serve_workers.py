"""`mlprod serve --workers N`: several processes share the port; a worker killed with SIGKILL is
replaced, the others keep answering, and nothing acknowledged is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from test_serve_durability import AT, RECORD, _port

from mlprod import Project
from mlprod.serve.predlog import SqlitePredictionLog


def _workers(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's worker processes (uvicorn's supervisor also runs a resource tracker)."""
    workers = []
    for child in psutil.Process(server.pid).children():
        try:  # a killed worker is a zombie until the supervisor reaps it: not a worker
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                child.cmdline()
            ):
                workers.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return workers


def assert_logged(project: Project, answered: list[str]) -> None:
    """Every acknowledged prediction is in the project's prediction log."""
    predictions = SqlitePredictionLog(project.folder / ".mlprod" / "predictions.sqlite")
    try:
        logged = set(predictions.predictions().column("prediction_id").to_pylist())
    finally:
        predictions.close()
    missing = [pid for pid in answered if pid not in logged]
    assert not missing, f"{len(missing)} acknowledged predictions are not in the log"


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {seconds} s")


def test_workers_share_the_port_and_a_killed_worker_is_replaced(
    deployed: Project, tmp_path: Path
) -> None:
    port = _port()
    log = tmp_path / "server.log"
    with log.open("ab") as errors:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlprod.cli", "serve"),
                *("--project", str(deployed.folder), "--port", str(port), "--workers", "2"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while not stop.is_set():
                try:
                    answer = http.post("/predict", params={"at": AT}, json=RECORD)
                except httpx.TransportError:
                    time.sleep(0.05)  # not started yet, or the worker died mid-request
                    continue
                assert answer.status_code == 200, answer.text
                with lock:
                    answered.append(answer.json()["predictions"][0]["prediction_id"])

    try:
        _wait_for(lambda: len(_workers(server)) == 2, 60, "two workers started")
        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        _wait_for(lambda: len(answered) >= 60, 120, "60 predictions answered")
        first, second = _workers(server)
        first.send_signal(signal.SIGKILL)
        before = len(answered)
        _wait_for(lambda: len(answered) >= before + 60, 60, "the other worker kept answering")
        _wait_for(
            lambda: {w.pid for w in _workers(server)} - {first.pid, second.pid},
            60,
            "the killed worker was replaced",
        )
        assert second.is_running()
        stop.set()
        for thread in clients:
            thread.join(15)
    finally:
        stop.set()
        workers = _workers(server) if server.poll() is None else []
        server.terminate()
        server.wait(30)
    assert server.returncode == 0, log.read_text()
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() for w in workers), "workers outlived the server"
    assert_logged(deployed, answered)
