"""deploy/: the compose file is valid for docker-compose and wires the services together, the
Prometheus config passes promtool, and the Dockerfile runs the server as it should (non-root,
a health check, the model resolved at start, no secrets). No Docker daemon is needed: the
Dockerfile's commands are run here with their shell, against a stand-in ``mlprod``."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from live_server import free_port

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_?KEY|CREDENTIAL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:(?!\$\{)[^/\s@]+@")  # user:password@, not ${VAR}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make system-deps`", pytrace=False)
    return found


def _compose(
    *args: str, password: str | None = "not-a-real-one"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run(
        [_tool("docker-compose"), "--project-directory", str(DEPLOY), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1].strip()) for s in joined]


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = _instructions(dockerfile)
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def _env(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in steps:
        if op == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


# --- compose.yaml -------------------------------------------------------------------------------


def test_the_compose_file_is_valid_and_needs_the_database_password_from_outside() -> None:
    checked = _compose("config", "-q")
    assert checked.returncode == 0, checked.stderr
    refused = _compose("config", "-q", password=None)
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD" in refused.stderr
    assert not URL_WITH_PASSWORD.search(COMPOSE.read_text())


def test_the_compose_services_are_wired_to_each_other() -> None:
    resolved = _compose("config")
    assert resolved.returncode == 0, resolved.stderr
    services: dict[str, Any] = yaml.safe_load(resolved.stdout)["services"]
    assert set(services) == {"server", "postgres", "redis", "mlflow", "prometheus"}
    server = services["server"]
    assert Path(server["build"]["context"]) == ROOT
    assert server["build"]["dockerfile"] == "deploy/Dockerfile"
    env = server["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLPROD_LOG_URL"].startswith("postgresql://mlprod:not-a-real-one@postgres:5432/")
    assert env["MLPROD_REDIS_URL"].startswith("redis://redis:6379/")
    assert {"postgres", "redis", "mlflow"} <= set(server["depends_on"])
    # docker stop waits longer than the server drains its requests in flight
    grace = re.fullmatch(r"(\d+)s", server["stop_grace_period"])
    assert grace and int(grace[1]) > int(env["MLPROD_GRACEFUL_TIMEOUT"])
    assert any(port["target"] == 8000 for port in server["ports"])
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg://mlprod:not-a-real-one@postgres:5432/")
    assert "mlflow" in command[command.index("--allowed-hosts") + 1].split(",")
    assert _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == (
        str(DEPLOY / "prometheus.yml"),
        "ro",
    )
    init, _ = _mounts(services["postgres"])["/docker-entrypoint-initdb.d/10-mlflow.sql"]
    assert "CREATE DATABASE mlflow" in Path(init).read_text()


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's volumes (written SOURCE:TARGET:MODE)."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, mode = volume.split(":")
        mounts[target] = (source, mode)
    return mounts


# --- prometheus.yml -----------------------------------------------------------------------------


def test_prometheus_config_passes_promtool_and_scrapes_the_server() -> None:
    checked = subprocess.run(
        [_tool("promtool"), "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert ("/metrics", "server:8000") in targets


# --- Dockerfile ---------------------------------------------------------------------------------


def test_the_image_is_slim_python_311_runs_as_a_user_and_holds_no_secrets() -> None:
    dockerfile = DEPLOY / "Dockerfile"
    final = _final_stage(dockerfile)
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [args for op, args in final if op == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    steps = _instructions(dockerfile)
    names = [
        pair.split("=", 1)[0]
        for op, args in steps
        if op in ("ENV", "ARG")
        for pair in shlex.split(args)
    ]
    assert not [n for n in names if SECRET_NAME.search(n)]
    assert not URL_WITH_PASSWORD.search(dockerfile.read_text())
    # the package is installed from the repository (the build context), nothing else
    copied = {
        source
        for op, args in steps
        if op == "COPY" and "--from" not in args
        for source in args.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "mlprod"}
    assert any(op == "RUN" and "pip install ." in args for op, args in steps)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {f"!{source}" for source in ("pyproject.toml", "README.md", "mlprod/")} <= set(ignore)


def _exec_form(steps: list[tuple[str, str]], op: str) -> list[str]:
    found = [args for o, args in steps if o == op]
    assert found, f"no {op}"
    args = found[-1]
    if op == "HEALTHCHECK":
        args = args[args.index("CMD") + len("CMD") :].strip()
    command: list[str] = json.loads(args)
    return command


@pytest.mark.parametrize(
    ("model", "expected"),
    [("flights@champion", ["--model", "flights@champion"]), ("", [])],
)
def test_the_server_command_resolves_the_model_from_the_environment_at_start(
    tmp_path: Path, model: str, expected: list[str]
) -> None:
    final = _final_stage(DEPLOY / "Dockerfile")
    command = _exec_form(final, "CMD")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "mlprod"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stand_in.chmod(0o755)
    env = {**_env(final), "PATH": f"{bin_dir}:{os.environ['PATH']}", "MLPROD_MODEL": model}
    ran = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [
        *("serve", "--project", "/app/project", *expected, "--host", "0.0.0.0"),
        *("--port", "8000", "--workers", "2", "--graceful-timeout", "30"),
    ]


def test_the_health_check_asks_the_server_for_health(tmp_path: Path) -> None:
    final = _final_stage(DEPLOY / "Dockerfile")
    healthcheck = next(args for op, args in final if op == "HEALTHCHECK")
    assert "--start-period=" in healthcheck
    command = _exec_form(final, "HEALTHCHECK")
    assert command[0] == "python"
    command[0] = sys.executable
    (tmp_path / "health").write_text("ok")
    port = free_port()
    env = {**os.environ, **_env(final), "MLPROD_PORT": str(port)}
    refused = subprocess.run(command, capture_output=True, env=env, timeout=30)
    assert refused.returncode != 0  # nothing listens: unhealthy

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        healthy = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        (tmp_path / "health").unlink()
        missing = subprocess.run(command, capture_output=True, env=env, timeout=30)
        assert missing.returncode != 0  # 404: unhealthy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
