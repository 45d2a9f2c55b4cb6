"""schemathesis, a real OpenAPI fuzzer, against the live server: no 5xx, and every 4xx in
the one JSON error shape (tests/schemathesis_checks.py), over more than 1,000 cases."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from mlprod import Project
from mlprod.data.online_store import MemoryOnlineStore
from mlprod.serve.app import create_app
from mlprod.serve.predlog import SqlitePredictionLog
from mlprod.serve.service import OnlineService

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server_url(deployed: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The deployed model with its own empty online store and log: fuzzed events and
    predictions stay out of the project's stores."""
    folder = tmp_path_factory.mktemp("fuzz")
    service = OnlineService(
        deployed.deployment(), MemoryOnlineStore(), SqlitePredictionLog(folder / "log.sqlite")
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_fuzzer_finds_no_server_error_and_no_other_error_shape(
    server_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "st.toml"
    config.write_text('[parameters]\nname = "flights"\nversion = "1"\nsource = "weather"\n')
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_checks",
        "PYTHONPATH": str(TESTS),
    }
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file", str(config),
            "run", f"{server_url}/openapi.json",
            "--checks", "not_a_server_error,mlprod_error_shape",
            "--max-examples", "80",
            "--workers", "1",  # CPython 3.11's ast.parse is not safe in hypothesis' threads
            "--seed", "1",
        ],
        cwd=tmp_path,  # it writes .hypothesis/ where it runs
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    found = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert found, run.stdout[-2000:]
    assert int(found[1]) >= 1000 and found[1] == found[2]
