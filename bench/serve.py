"""Benchmark: mlprod's REST server against its speed limit and its peer, and batch scoring.

These servers run on loopback, one after another, each as a subprocess and measured the same way:

1. **mlprod**: ``mlprod serve --model NAME@ALIAS``, sent ``POST /predict?at=2013-07-15T17:00:00``
   with one real record of the request fields (the first spine row whose prediction time is
   ``at`` or later, read from the project's own source). Each request parses the record,
   computes the online features from the online store, scores with the artefact's pipeline
   and writes the prediction durably to the prediction log before answering.
2. **bare (the limit)**: ``bench/serve_bare.py``, one ``async def`` FastAPI endpoint under one
   uvicorn worker (httptools) that parses the same body and calls the model's LightGBM booster
   (saved from the artefact, ``num_threads=1``) on the feature row encoded once in this process.
   No features, no other ensemble member, no log: the web stack plus the trees.
3. **MLflow (the peer)**: ``mlflow models serve -m models:/NAME/VERSION --env-manager local``
   of the same registered version (one worker, MLflow's default), sent the record's
   *precomputed* features as ``{"dataframe_records": [row]}``, the row computed by the batch
   path (``computed_features`` on a one-row Parquet file). Its answer must equal mlprod's
   score within 1e-9 before anything is timed, so both serve the same model.

4. **mlprod experiment** and **mlprod shadow** (issue 11): ``mlprod serve`` of a copy of the
   project (same data, registry and online store; its own prediction log) with a ``deploy:``
   section: ``--model`` and ``--challenger`` at 50/50 assigned at random per request, and
   ``--model`` answering with ``--challenger`` as a shadow scored after the answer. The
   challenger defaults to the model itself, which measures what routing and shadowing cost;
   name another version to include its own cost. Reported as ratios to mlprod's figures.
5. **mlprod --workers 1** and **--workers 2** (issue 13): the mlprod server with ``--workers N``
   (uvicorn's supervisor and N processes sharing the port), throughput only, at each of
   ``--worker-connections`` (16 and 32: where one worker is saturated, and beyond), the two
   servers taking turns for ``--worker-rounds`` rounds (best of each kept). Target:
   2 workers >= 1.6x one. On 2 cores the load generator and any other work compete with the
   workers, so each run also reports the cores busy with the server (each worker), the load
   generator itself (reaped child processes' CPU) and the rest of the machine.

For each server: a warm-up, then sequential latency (p50, p99) over ``--requests`` requests
through one keep-alive ``http.client.HTTPConnection`` (the cheapest Python client), then
throughput at ``--connections`` keep-alive connections for ``--seconds`` s with ``wrk`` (one
thread; a Lua script sets the POST) or, without wrk, a multi-process asyncio load generator
(the output says which). The server's CPU seconds during the throughput run (its process tree,
psutil) give CPU per request, steadier than wall time on a shared machine.

In this process: where one mlprod request's time goes (the service's steps: parse, online
features, score from the feature values, log append; medians), and batch scoring rows/s:
``score_batch`` on the spine source (``BatchSummary.score_seconds``, plus the same chunked
scoring repeated) against raw ``booster.predict`` (default threads) on the same encoded matrix.

mlprod is measured as it is, not tuned here. Every request to mlprod adds a row to the
project's prediction log (the in-process breakdown's rows have source ``bench``).

Run ``.venv/bin/python bench/serve.py [--project DIR]`` (``make bench`` runs it; default
``examples/flights`` after ``make demo``). The table is printed and written to
``bench/RESULTS.md`` under "## Serving (bench/serve.py)" (replaced on a rerun; ``--no-write``
to skip; ``--workers-only`` runs only 5. and prints it, ``--no-workers`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from importlib.metadata import version as package_version
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from results_md import RESULTS_MD, write_section
from sqlglot import exp

from mlprod import Project
from mlprod import sqlparts as sql
from mlprod.errors import MlprodError
from mlprod.features.events import timestamp_literal
from mlprod.serve.batch import CHUNK_ROWS, computed_features, feature_engine, score_batch
from mlprod.serve.deployment import Deployment
from mlprod.serve.predlog import PredictionRecord
from mlprod.serve.service import OnlineService, now_utc
from mlprod.train.ensemble import EncodedModel, Ensemble

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECTION = "## Serving (bench/serve.py)"
AT = datetime(2013, 7, 15, 17)
SAME_SCORE = 1e-9
# `mlprod serve`, run as the `mlprod` script does, with the deployment commands imported
# explicitly: importing `mlprod.cli_deploy` registers them on the CLI's app.
MLPROD_CLI = "import mlprod.cli_deploy; from mlprod.cli import app; app()"
TARGETS = {
    "p50": "p50 <= 2 ms",
    "p99": "p99 <= 10 ms",
    "bare": "throughput >= 50% of bare",
    "mlflow": "throughput >= 3x MLflow",
    "batch": "scoring step >= 80% of raw predict",
    "experiment": "50/50 experiment p50 <= 1.1x single model",
    "shadow": "with a shadow p99 <= 1.3x single model",
    "workers": "2 workers >= 1.6x one",
}


# --- inputs: one record, its features, the booster -------------------------------------------


@dataclass
class Inputs:
    """What the servers are sent and checked against, computed once in this process."""

    deployment: Deployment
    record: dict[str, Any]  # the request fields of one real spine row (JSON-able)
    features: dict[str, Any]  # its features as the batch path computes them (JSON-able)
    score: float  # mlprod's score of it, in process
    member: EncodedModel  # the ensemble's LightGBM member
    encoded_row: list[float]  # that member's encoding of the feature row
    booster_score: float  # the booster alone on the encoded row


def jsonable(value: Any) -> Any:
    """A value as JSON carries it: times as ISO text, NaN as null."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def lightgbm_member(deployment: Deployment) -> EncodedModel:
    """The LightGBM model inside the artefact (alone, or a member of an ensemble)."""
    scorer = deployment.pipeline.scorer
    members = scorer.members if isinstance(scorer, Ensemble) else [scorer]
    for member in members:
        if isinstance(member, EncodedModel) and member.model.kind == "lightgbm":
            return member
    raise SystemExit(
        f"model {deployment.name}/{deployment.version} has no LightGBM model fitted on all "
        "training rows (alone or as an ensemble member): the bare server needs its booster"
    )


def read_record(deployment: Deployment, at: datetime) -> dict[str, Any]:
    """The request fields of the first spine row predicted at ``at`` or later (keys break ties)."""
    config = deployment.config
    spine = config.spine
    exprs = deployment.graph.spine_exprs
    when = sql.timestamp(exprs["time"].copy())
    condition: exp.Expr = exp.GTE(this=when, expression=timestamp_literal(at))
    if "filter" in exprs:
        condition = exp.and_(condition, exprs["filter"].copy())
    fields = [f.name for f in deployment.request_fields]
    query = (
        exp.select(*[sql.col(f) for f in fields])
        .from_(sql.table(spine.source))
        .where(condition)
        .order_by(when.copy(), *[sql.col(k) for k in spine.keys])
        .limit(1)
    )
    with feature_engine(deployment, [spine.source]) as con:
        rows = con.sql(query.sql("duckdb", identify=True)).to_arrow_table().to_pylist()
    if not rows:
        raise SystemExit(f"source '{spine.source}' has no event predicted at {at} or later")
    return dict(rows[0])


def prepare(project: Project, model: str, at: datetime, tmp: Path) -> Inputs:
    """Load the model, pick the record, compute its features (batch path) and encoded row."""
    deployment = project.deployment(model)
    row = read_record(deployment, at)
    one_row = tmp / "request.parquet"
    request = pa.Table.from_pylist([row]).append_column(
        "prediction_time", pa.array([at], pa.timestamp("us"))
    )
    pq.write_table(request, one_row)
    table = computed_features(deployment, str(one_row)).select(deployment.features)
    score = float(deployment.score(table)[0][0])
    member = lightgbm_member(deployment)
    encoded = member.encoder.transform(deployment.pipeline.feature_rows(table))
    model_ = member.model
    booster_score = float(
        model_.estimator.predict(encoded, num_iteration=model_.best_iteration, num_threads=1)[0]
    )
    return Inputs(
        deployment,
        {k: jsonable(v) for k, v in row.items()},
        {k: jsonable(v) for k, v in table.to_pylist()[0].items()},
        score,
        member,
        [float(v) for v in np.asarray(encoded, dtype=np.float64)[0]],
        booster_score,
    )


def ensure_online_store(project: Project, model: str) -> None:
    """Materialize the online store first when its (default, SQLite) file is missing."""
    spec = project.config.online
    if spec.kind == "sqlite" and not (project.folder / spec.path).exists():
        print(f"online store {spec.path} missing: materializing it (mlprod materialize)")
        project.materialize(model)


# --- where one request's time goes (in process) ----------------------------------------------


def request_steps(service: OnlineService, inputs: Inputs, n: int) -> dict[str, float]:
    """Median milliseconds of each step of one ``/predict`` record, of the whole call, and of
    the booster alone on the encoded row (what the bare server computes)."""
    names = ("parse", "features", "score", "log", "predict()", "booster")
    steps: dict[str, list[float]] = {name: [] for name in names}
    deployment, record = service.deployment, inputs.record
    booster, best = inputs.member.model.estimator, inputs.member.model.best_iteration
    row = np.asarray([inputs.encoded_row])
    for i in range(n + n // 10):
        t0 = time.perf_counter()
        rows = service.parser.parse([record])
        t1 = time.perf_counter()
        values = service.online.compute(rows, [AT])
        t2 = time.perf_counter()
        scores, decisions = service.score_values(values)
        t4 = time.perf_counter()
        entry = PredictionRecord(
            prediction_id=uuid.uuid4().hex,
            predicted_at=now_utc(),
            prediction_time=AT,
            model_name=service.model_name,
            model_version=service.model_version,
            keys={k: rows[0][k] for k in deployment.keys},
            request=rows[0],
            features=values[0],
            score=float(scores[0]),
            decision=bool(decisions[0]),
            source="bench",
        )
        service.log.append([entry])
        t5 = time.perf_counter()
        service.predict([record], AT)
        t6 = time.perf_counter()
        booster.predict(row, num_iteration=best, num_threads=1)
        t7 = time.perf_counter()
        if i >= n // 10:  # the first tenth warms up
            spans = (t1 - t0, t2 - t1, t4 - t2, t5 - t4, t6 - t5, t7 - t6)
            for name, seconds in zip(steps, spans, strict=True):
                steps[name].append(seconds)
    return {name: statistics.median(values) * 1e3 for name, values in steps.items()}


# --- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    """How to start one server and what to send it."""

    name: str
    command: list[str]  # "{port}" is replaced by the port chosen
    env: dict[str, str]
    health: str  # a GET path answering 200 once the model is loaded
    path: str  # the POST path (with query) that scores
    body: bytes
    score_of: Callable[[Any], float]  # the score in the server's JSON answer
    expected: float  # what it must answer (within SAME_SCORE) before it is timed


@dataclass
class Load:
    """The concurrent run: requests per second, latency under load, failures, server CPU."""

    tool: str
    requests_per_second: float
    requests: int
    failed: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_seconds: float = 0.0  # the server's process tree
    client_cpu_seconds: float = 0.0  # the load generator's (it shares the cores)
    machine_cpu_seconds: float = 0.0  # every process on the machine, busy (not idle or iowait)
    seconds: float = 0.0  # wall time of the run
    worker_cpu_seconds: list[float] = field(default_factory=list)  # each server process's

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1e3

    def cores(self, cpu_seconds: float) -> float:
        """CPU seconds over the run's wall time: how many cores that work kept busy."""
        return cpu_seconds / max(self.seconds, 1e-9)


@dataclass
class Measured:
    name: str
    score: float  # its answer, checked before timing
    startup_seconds: float
    latencies_ms: list[float]
    load: Load

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(server: Server, port: int, log: Path, timeout: float = 300.0) -> Iterator[int]:
    """Start the server in a session of its own, wait until its health route answers, and
    stop that session's process group on the way out; yields the server's pid."""
    command = [part.replace("{port}", str(port)) for part in server.command]
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while call_ok(port, server.health) is False:
            if process.poll() is not None:
                raise SystemExit(f"{server.name} exited ({process.returncode}):\n{tail(log)}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"{server.name} not ready after {timeout:.0f} s:\n{tail(log)}")
            time.sleep(0.25)
        yield process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group; SIGKILL if it is still there after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def call_ok(port: int, path: str) -> bool:
    try:
        return call(port, "GET", path)[0] == 200
    except OSError:
        return False


def sequential(port: int, path: str, body: bytes, n: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``n`` requests sent one at a time on one keep-alive connection,
    after ``warmup`` untimed ones."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    timings: list[float] = []
    try:
        for i in range(warmup + n):
            start = time.perf_counter()
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            answer = response.read()
            elapsed = time.perf_counter() - start
            if response.status != 200:
                raise SystemExit(f"POST {path} answered {response.status}: {answer[:300]!r}")
            if i >= warmup:
                timings.append(elapsed * 1e3)
    finally:
        connection.close()
    return timings


def tree_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and of each of its descendants (uvicorn's
    workers), by pid."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        found[process.pid] = times.user + times.system
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, together."""
    return sum(tree_cpu(pid).values())


def spawned_workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor spawned (not multiprocessing's resource
    tracker, its other child); none for a server of one process."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been reaped: wrk, or the
    Python load generator's pool (the servers, still running, are not counted yet)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, summed over its cores (other work, and time the
    hypervisor stole, included)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


_WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_load(
    port: int, path: str, body: bytes, connections: int, seconds: float, tmp: Path
) -> Load:
    """wrk with one thread (the server has the other core) and a Lua script for the POST; a
    10 s timeout, so that a slow answer is measured rather than counted as an error."""
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    url = f"http://127.0.0.1:{port}{path}"
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    command += ["--latency", "-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    percentiles = {q: float(v) * _MS[unit] for q, v, unit in _WRK_PERCENTILE.findall(out)}
    errors = re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors += re.findall(r"(?:connect|read|write|timeout) (\d+)", out)
    return Load(
        "wrk",
        float(rate[1]),
        int(total[1]),
        sum(int(n) for n in errors),
        percentiles.get("50"),
        percentiles.get("99"),
    )


async def _drive(port: int, request: bytes, connections: int, seconds: float) -> tuple[int, int]:
    """Keep ``connections`` raw HTTP/1.1 keep-alive connections busy for ``seconds``."""
    deadline = time.perf_counter() + seconds

    async def one() -> tuple[int, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        done = failed = 0
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            if head.startswith(b"HTTP/1.1 200"):
                done += 1
            else:
                failed += 1
        writer.close()
        return done, failed

    results = await asyncio.gather(*[one() for _ in range(connections)])
    return sum(d for d, _ in results), sum(f for _, f in results)


def _python_worker(job: tuple[int, bytes, int, float]) -> tuple[int, int, float]:
    start = time.perf_counter()
    done, failed = asyncio.run(_drive(*job))
    return done, failed, time.perf_counter() - start


def python_load(port: int, path: str, body: bytes, connections: int, seconds: float) -> Load:
    """The fallback without wrk: two processes (one per core), asyncio, raw keep-alive HTTP."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    processes = min(2, connections)
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    jobs = [(port, head.encode() + body, share, seconds) for share in shares]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_python_worker, jobs)
    return Load(
        f"python load generator ({processes} processes, asyncio)",
        sum(done / elapsed for done, _, elapsed in results),
        sum(done for done, _, _ in results),
        sum(failed for _, failed, _ in results),
    )


def throughput(
    server: Server, pid: int, port: int, connections: int, seconds: float, args: argparse.Namespace
) -> Load:
    """Load at ``connections`` for ``seconds`` (wrk, or the Python fallback), with the CPU
    seconds that the server's process tree, the load generator and the machine spent meanwhile."""
    server_before, client_before = tree_cpu(pid), children_cpu_seconds()
    machine_before, started = machine_cpu_seconds(), time.perf_counter()
    if shutil.which("wrk") and not args.python_load:
        load = wrk_load(port, server.path, server.body, connections, seconds, args.tmp)
    else:
        load = python_load(port, server.path, server.body, connections, seconds)
    load.seconds = time.perf_counter() - started
    load.machine_cpu_seconds = machine_cpu_seconds() - machine_before
    load.client_cpu_seconds = children_cpu_seconds() - client_before
    spent = {p: cpu - server_before.get(p, 0.0) for p, cpu in tree_cpu(pid).items()}
    load.cpu_seconds = sum(spent.values())
    workers = spawned_workers(pid)
    load.worker_cpu_seconds = sorted((spent.get(p, 0.0) for p in workers), reverse=True)
    return load


def check_answer(server: Server, port: int) -> float:
    """The server's score of the record, which must be the expected one."""
    status, answer = call(port, "POST", server.path, server.body)
    if status != 200:
        raise SystemExit(f"{server.name}: POST {server.path} answered {status}: {answer!r}")
    score = server.score_of(json.loads(answer))
    if abs(score - server.expected) > SAME_SCORE:
        raise SystemExit(
            f"{server.name} answered {score!r}, expected {server.expected!r} (within "
            f"{SAME_SCORE}): not the same model, or not the same features"
        )
    return score


def measure(server: Server, args: argparse.Namespace, tmp: Path) -> Measured:
    """Start one server, check its answer, time it sequentially, then under load."""
    port = free_port()
    print(f"{server.name}: starting", flush=True)
    started = time.perf_counter()
    with running(server, port, tmp / f"{server.name}.log") as pid:
        startup = time.perf_counter() - started
        score = check_answer(server, port)
        latencies = sequential(port, server.path, server.body, args.requests, args.warmup)
        load = throughput(server, pid, port, args.connections, args.seconds, args)
    measured = Measured(server.name, score, startup, latencies, load)
    print(
        f"{server.name}: ready in {startup:.1f} s; p50 {measured.percentile(50):.2f} ms, "
        f"p99 {measured.percentile(99):.2f} ms; {load.requests_per_second:,.0f} req/s "
        f"({load.tool}, {load.failed} failed); {load.cpu_ms_per_request:.2f} ms CPU/request",
        flush=True,
    )
    return measured


def servers(inputs: Inputs, project: Project, args: argparse.Namespace) -> list[Server]:
    """mlprod, the bare limit and MLflow, with their bodies; files go to ``args.tmp``."""
    tmp: Path = args.tmp
    member = inputs.member.model
    booster_file, row_file = tmp / "booster.txt", tmp / "row.json"
    member.estimator.save_model(str(booster_file), num_iteration=member.best_iteration)
    row_file.write_text(json.dumps(inputs.encoded_row))
    env = server_env()
    record = json.dumps(inputs.record).encode()
    deployment = inputs.deployment
    mlflow_env = {**env, "MLFLOW_TRACKING_URI": project.tracking_uri()}
    mlflow_env.pop("MLFLOW_MODELS_WORKERS", None)
    return [
        mlprod_server(inputs, project, args),
        *routed_servers(inputs, project, args, env),
        Server(
            "bare",
            [
                *(sys.executable, str(ROOT / "bench" / "serve_bare.py"), "--port", "{port}"),
                *("--booster", str(booster_file), "--row", str(row_file)),
            ],
            env,
            "/health",
            "/predict",
            record,
            lambda answer: float(answer["score"]),
            inputs.booster_score,
        ),
        Server(
            "mlflow",
            [
                *(str(BIN / "mlflow"), "models", "serve", "--env-manager", "local"),
                *("-m", f"models:/{deployment.name}/{deployment.version}"),
                *("-h", "127.0.0.1", "-p", "{port}", "--workers", str(args.mlflow_workers)),
            ],
            mlflow_env,
            "/ping",
            "/invocations",
            json.dumps({"dataframe_records": [inputs.features]}).encode(),
            lambda answer: float(answer["predictions"][0]),
            inputs.score,
        ),
    ]


def server_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def mlprod_server(
    inputs: Inputs, project: Project, args: argparse.Namespace, workers: int | None = None
) -> Server:
    """``mlprod serve --model``, as it runs by default or with ``--workers``."""
    return Server(
        "mlprod" if workers is None else f"mlprod --workers {workers}",
        [
            *(sys.executable, "-c", MLPROD_CLI, "serve", "--project", str(project.folder)),
            *("--model", args.model, "--port", "{port}"),
            *(() if workers is None else ("--workers", str(workers))),
        ],
        server_env(),
        "/health",
        f"/predict?at={AT.isoformat()}",
        json.dumps(inputs.record).encode(),
        lambda answer: float(answer["predictions"][0]["score"]),
        inputs.score,
    )


def routed_servers(
    inputs: Inputs, project: Project, args: argparse.Namespace, env: dict[str, str]
) -> list[Server]:
    """``mlprod serve`` of two copies of the project, each with a ``deploy:`` section and a
    prediction log of its own: a 50/50 experiment, and the model with a shadow."""
    base = yaml.safe_load((project.folder / "mlprod.yaml").read_text())
    control = {"name": "control", "model": args.model}
    challenger = {"name": "challenger", "model": args.challenger or args.model}
    deploys = {
        "mlprod experiment": {
            "experiment": "bench-ab",
            "variants": [{**control, "weight": 50}, {**challenger, "weight": 50}],
        },
        "mlprod shadow": {
            "experiment": "bench-shadow",
            "variants": [control],
            "shadows": [challenger],
        },
    }
    found: list[Server] = []
    for name, deploy in deploys.items():
        folder = args.tmp / name.replace(" ", "-")
        folder.mkdir()
        for entry in project.folder.iterdir():
            if entry.name != "mlprod.yaml":
                (folder / entry.name).symlink_to(entry.resolve())
        config = {**base, "deploy": deploy, "log": {"path": "routed-log/predictions.sqlite"}}
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        found.append(
            Server(
                name,
                [
                    *(sys.executable, "-c", MLPROD_CLI, "serve", "--project", str(folder)),
                    *("--port", "{port}"),
                ],
                env,
                "/health",
                f"/predict?at={AT.isoformat()}",
                json.dumps(inputs.record).encode(),
                partial(control_score, inputs.score),
                inputs.score,
            )
        )
    return found


def control_score(expected: float, answer: Any) -> float:
    """The score of an answer of the control; a challenger's (another model) counts as right."""
    prediction = answer["predictions"][0]
    return float(prediction["score"]) if prediction["variant"] == "control" else expected


# --- several workers ---------------------------------------------------------------------------


@dataclass
class WorkersRun:
    workers: int
    connections: int
    load: Load  # the best of the rounds
    errors: int  # in all rounds


def measure_workers(inputs: Inputs, project: Project, args: argparse.Namespace) -> list[WorkersRun]:
    """``mlprod serve --workers 1`` and ``--workers 2`` both started, each answer checked and
    each given a warm-up load (the health route answers once one worker is up; the other may
    still be loading); then they take turns at each of ``--worker-connections`` for
    ``--worker-rounds`` rounds, so that a busy moment of the shared machine does not fall on
    one of them only, and the best round of each is kept (the idle server costs nothing)."""
    connections = args.worker_connections
    best: dict[tuple[int, int], Load] = {}
    errors: dict[tuple[int, int], int] = {}
    with ExitStack() as stack:
        started = []
        for workers in (1, 2):
            server, port = mlprod_server(inputs, project, args, workers), free_port()
            print(f"{server.name}: starting", flush=True)
            log = args.tmp / f"workers-{workers}.log"
            pid = stack.enter_context(running(server, port, log))
            check_answer(server, port)
            throughput(server, pid, port, max(connections), args.worker_warmup, args)
            started.append((workers, server, pid, port))
        for round_ in range(1, args.worker_rounds + 1):
            for (workers, server, pid, port), count in product(started, connections):
                load = throughput(server, pid, port, count, args.seconds, args)
                key = (workers, count)
                errors[key] = errors.get(key, 0) + load.failed
                if key not in best or load.requests_per_second > best[key].requests_per_second:
                    best[key] = load
                print(
                    f"round {round_}, {server.name}, {count} connections: "
                    f"{load.requests_per_second:,.0f} req/s ({load.failed} failed), "
                    f"{load.cpu_ms_per_request:.2f} ms CPU/request; cores busy: server "
                    f"{load.cores(load.cpu_seconds):.2f}, load generator "
                    f"{load.cores(load.client_cpu_seconds):.2f}, machine "
                    f"{load.cores(load.machine_cpu_seconds):.2f}",
                    flush=True,
                )
    return [WorkersRun(w, c, load, errors[w, c]) for (w, c), load in sorted(best.items())]


def worker_ratios(runs: list[WorkersRun]) -> dict[int, float]:
    """2 workers' req/s over 1 worker's, by connection count."""
    rate = {(r.workers, r.connections): r.load.requests_per_second for r in runs}
    return {c: rate[2, c] / rate[1, c] for w, c in rate if w == 1 and (2, c) in rate}


def workers_target(runs: list[WorkersRun]) -> str:
    """The target's row, judged at the most connections (where both are saturated)."""
    ratios = worker_ratios(runs)
    most = max(ratios)
    measured = ", ".join(f"{ratios[c]:.2f}x at {c} connections" for c in ratios)
    return f"| {TARGETS['workers']} | {measured} | {verdict(ratios[most] >= 1.6)} |"


def workers_lines(args: argparse.Namespace, runs: list[WorkersRun]) -> list[str]:
    cores = os.cpu_count() or 1
    tool = runs[0].load.tool
    if tool == "wrk":
        tool = f"wrk -t1 -d{args.seconds:g}s --timeout 10s"
    ratios = worker_ratios(runs)
    lines = [
        "",
        "### Several workers: `mlprod serve --workers 1` and `--workers 2`",
        "",
        f"The mlprod server above (same project, model, record), with `--workers N`: both "
        f"started, each answer checked, {args.worker_warmup:g} s of warm-up load on each, then "
        f"{args.seconds:g} s at each connection count with {tool}, the two taking turns for "
        f"{args.worker_rounds} rounds; the best round of each is shown (errors: all rounds). "
        "Cores busy: CPU seconds over that run's wall time, "
        f"out of {cores}: the server's process tree (in brackets, each worker; the rest is "
        "uvicorn's supervisor and multiprocessing's resource tracker), the load generator "
        "itself (it competes for the same cores), and the rest of the machine (other work on "
        "it, and this benchmark's process).",
        "",
        "| workers | connections | req/s | vs 1 worker | under load p50 / p99 ms "
        "| server CPU ms/req | cores busy: server | load generator | rest of the machine "
        "| idle | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        load = run.load
        server, client = load.cores(load.cpu_seconds), load.cores(load.client_cpu_seconds)
        machine = load.cores(load.machine_cpu_seconds)
        each = " + ".join(f"{load.cores(s):.2f}" for s in load.worker_cpu_seconds)
        versus = "1.00x" if run.workers == 1 else f"{ratios[run.connections]:.2f}x"
        lines.append(
            f"| {run.workers} | {run.connections} | {load.requests_per_second:,.0f} | {versus} "
            f"| {_ms(load.p50_ms)} / {_ms(load.p99_ms)} | {load.cpu_ms_per_request:.2f} "
            f"| {server:.2f}" + (f" ({each})" if run.workers > 1 else "") + f" | {client:.2f} "
            f"| {max(machine - server - client, 0.0):.2f} | {max(cores - machine, 0.0):.2f} "
            f"| {run.errors} |"
        )
    return lines


# --- batch scoring -----------------------------------------------------------------------------


@dataclass
class BatchResult:
    """``score_batch`` on the spine source against raw ``booster.predict`` on the same rows."""

    rows: int
    seconds: float  # score_batch end to end (features, scoring, writing)
    feature_seconds: float
    score_seconds: float  # BatchSummary.score_seconds: the scoring step
    rescored_seconds: float  # the same chunked ``deployment.score`` again, best of ``repeat``
    raw_seconds: float  # ``booster.predict`` on the encoded matrix, best of ``repeat``
    parts: dict[str, float] = field(default_factory=dict)  # inside the scoring step, once

    @property
    def ratio(self) -> float:
        """The scoring step's rows/s over raw predict's."""
        return self.raw_seconds / self.score_seconds


def seconds_of(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def batch_scoring(inputs: Inputs, repeat: int, tmp: Path) -> BatchResult:
    deployment = inputs.deployment
    pipeline = deployment.pipeline
    source = deployment.config.spine.source
    print(f"batch: score_batch on source '{source}'", flush=True)
    summary = score_batch(deployment, source, str(tmp / "scores.parquet"))
    features = computed_features(deployment, source).select(deployment.features)

    def rescore() -> None:  # what score_batch's scoring step runs, chunk by chunk
        for offset in range(0, features.num_rows, CHUNK_ROWS):
            deployment.score(features.slice(offset, CHUNK_ROWS))

    rows = pipeline.feature_rows(features)
    model = inputs.member.model
    encoded = inputs.member.encoder.transform(rows)

    def raw_predict() -> None:  # the booster alone, default threads, on the encoded matrix
        model.estimator.predict(encoded, num_iteration=model.best_iteration)

    raw, rescored = math.inf, math.inf
    for _ in range(repeat):  # interleaved, so that the machine's drift hits both alike
        raw = min(raw, seconds_of(raw_predict))
        rescored = min(rescored, seconds_of(rescore))
    parts = {"input check (feature_rows)": seconds_of(partial(pipeline.feature_rows, features))}
    scorer = pipeline.scorer
    for i, member in enumerate(scorer.members if isinstance(scorer, Ensemble) else [scorer]):
        if not isinstance(member, EncodedModel):
            continue
        matrix = member.encoder.transform(rows)
        label = f"member {i} ({member.model.kind})"
        parts[f"{label}: encode"] = seconds_of(partial(member.encoder.transform, rows))
        parts[f"{label}: predict"] = seconds_of(partial(member.model.predict_proba, matrix))
    return BatchResult(
        summary.rows,
        summary.seconds,
        summary.feature_seconds,
        summary.score_seconds,
        rescored,
        raw,
        parts,
    )


# --- the machine's load ------------------------------------------------------------------------


class LoadAverage:
    """Samples the 1-minute load average every few seconds while the benchmark runs."""

    def __init__(self, interval: float = 2.0) -> None:
        self.start = os.getloadavg()
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.samples.append(os.getloadavg()[0])

    def finish(self) -> str:
        self._stop.set()
        self._thread.join()
        end = os.getloadavg()
        during = self.samples or [end[0]]
        return (
            f"{' / '.join(f'{v:.1f}' for v in self.start)} at start (1 / 5 / 15 min), "
            f"1-min mean {statistics.fmean(during):.1f} and max {max(during):.1f} during the run, "
            f"{' / '.join(f'{v:.1f}' for v in end)} at the end"
        )


# --- the report ----------------------------------------------------------------------------------


def describe_model(deployment: Deployment) -> str:
    scorer = deployment.pipeline.scorer
    if isinstance(scorer, Ensemble):
        kinds = [
            m.model.kind if isinstance(m, EncodedModel) else "cv average" for m in scorer.members
        ]
        return f"{scorer.method} ensemble of {' + '.join(kinds)}"
    return scorer.model.kind if isinstance(scorer, EncodedModel) else type(scorer).__name__


def software() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = ", uncommitted changes in the working tree" if git("status", "--porcelain") else ""
    names = ("fastapi", "uvicorn", "httptools", "uvloop", "lightgbm", "mlflow")
    libraries = ", ".join(f"{name} {package_version(name)}" for name in names)
    wrk = "wrk not installed"
    if shutil.which("wrk"):
        banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        wrk = banner.split("[")[0].strip() or "wrk"
    return (
        f"mlprod {package_version('mlprod')} (git {git('rev-parse', '--short', 'HEAD')}{dirty}), "
        f"Python {platform.python_version()}, {libraries}, {wrk}"
    )


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GB RAM, {platform.system()}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(
    args: argparse.Namespace,
    inputs: Inputs,
    results: dict[str, Measured],
    steps: dict[str, float],
    batch: BatchResult | None,
    workers: list[WorkersRun],
    load: str,
    seconds: float,
) -> str:
    deployment = inputs.deployment
    mlprod, bare, mlflow = results["mlprod"], results["bare"], results["mlflow"]
    keys = ", ".join(f"{k}={inputs.record[k]}" for k in deployment.keys)
    tool = mlprod.load.tool
    if tool == "wrk":
        tool = (
            f"wrk -t1 -c{args.connections} -d{args.seconds:g}s --timeout 10s (a Lua script sets "
            "the POST)"
        )
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bench/serve.py` on "
        f"`{args.project}`, model {deployment.name}/{deployment.version} "
        f"({describe_model(deployment)}, {len(deployment.features)} features); run time "
        f"{seconds:.0f} s.",
        "",
        f"- Machine: {machine()}, shared with other work: load average {load}.",
        f"- Software: {software()}.",
        f"- Request: the record {keys} (request fields {', '.join(inputs.record)}) at "
        f"`{AT.isoformat()}`; mlprod's score {inputs.score:.6f}, MLflow's the same within "
        f"{SAME_SCORE:g} (checked before timing).",
        f"- Sequential: {args.requests:,} requests after {args.warmup} warm-up ones, one at a "
        "time on one keep-alive `http.client.HTTPConnection`. Throughput: "
        f"{args.connections} keep-alive connections for {args.seconds:g} s with {tool}. "
        "Server CPU: user + system seconds of the server's process tree during the "
        "throughput run, per request answered. Errors: non-2xx answers and socket errors "
        "during the throughput run. Servers run one after another on loopback.",
        "",
        "| server | each request | p50 ms | p99 ms | req/s | under load p50 / p99 ms "
        "| server CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    work = {
        "mlprod": "`mlprod serve`, `POST /predict`: parse the record, online features "
        "(SQLite store), the artefact's pipeline, durable write to the prediction log (SQLite WAL)",
        "bare": "the limit: FastAPI `async def` + uvicorn (httptools, 1 worker), parse the body, "
        "LightGBM booster on a ready encoded row (`num_threads=1`)",
        "mlflow": f"the peer: `mlflow models serve` ({args.mlflow_workers} worker), "
        "`dataframe_records` of precomputed features, the same artefact as a pyfunc",
        "mlprod experiment": f"as mlprod, in a 50/50 experiment of {args.model} and "
        f"{args.challenger or args.model} (random assignment); logged with experiment and variant",
        "mlprod shadow": f"as mlprod, with {args.challenger or args.model} as a shadow scored "
        "after the answer (batched, one thread) and logged with `served=false`",
    }
    for name, m in results.items():
        lines.append(
            f"| {name} | {work[name]} | {m.percentile(50):.2f} | {m.percentile(99):.2f} "
            f"| {m.load.requests_per_second:,.0f} | {_ms(m.load.p50_ms)} / {_ms(m.load.p99_ms)} "
            f"| {m.load.cpu_ms_per_request:.2f} | {m.load.failed} |"
        )
    of_bare = mlprod.load.requests_per_second / bare.load.requests_per_second
    over_mlflow = mlprod.load.requests_per_second / mlflow.load.requests_per_second
    lines += [
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| {TARGETS['p50']} | {mlprod.percentile(50):.2f} ms "
        f"| {verdict(mlprod.percentile(50) <= 2)} |",
        f"| {TARGETS['p99']} | {mlprod.percentile(99):.2f} ms "
        f"| {verdict(mlprod.percentile(99) <= 10)} |",
        f"| {TARGETS['bare']} | {of_bare:.0%} of bare (server CPU per request: "
        f"{mlprod.load.cpu_ms_per_request / bare.load.cpu_ms_per_request:.1f}x bare's) "
        f"| {verdict(of_bare >= 0.5)} |",
        f"| {TARGETS['mlflow']} | {over_mlflow:.2f}x MLflow (server CPU per request: "
        f"{mlflow.load.cpu_ms_per_request / mlprod.load.cpu_ms_per_request:.2f}x less) "
        f"| {verdict(over_mlflow >= 3)} |",
    ]
    if batch is not None:
        lines.append(
            f"| {TARGETS['batch']} | {batch.ratio:.0%} of raw predict's rows/s "
            f"| {verdict(batch.ratio >= 0.8)} |"
        )
    if workers:
        lines.append(workers_target(workers))
    experiment, shadow = results.get("mlprod experiment"), results.get("mlprod shadow")
    if experiment is not None and shadow is not None:
        p50 = experiment.percentile(50) / mlprod.percentile(50)
        p99 = shadow.percentile(99) / mlprod.percentile(99)
        lines += [
            f"| {TARGETS['experiment']} | {p50:.2f}x | {verdict(p50 <= 1.1)} |",
            f"| {TARGETS['shadow']} | {p99:.2f}x | {verdict(p99 <= 1.3)} |",
            "",
            "### A/B tests and shadows, as ratios to mlprod with one model",
            "",
            "| server | p50 | p99 | req/s | server CPU per request |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {m.name} | {m.percentile(50) / mlprod.percentile(50):.2f}x "
                f"| {m.percentile(99) / mlprod.percentile(99):.2f}x "
                f"| {m.load.requests_per_second / mlprod.load.requests_per_second:.2f}x "
                f"| {m.load.cpu_ms_per_request / mlprod.load.cpu_ms_per_request:.2f}x |"
                for m in (experiment, shadow)
            ],
        ]
    if workers:
        lines += workers_lines(args, workers)
    total = sum(steps[k] for k in ("parse", "features", "score", "log"))
    names = {
        "parse": "parse and check the record (`service.parser.parse`)",
        "features": "online features (`service.online.compute`)",
        "score": f"score (`service.score_values`: {describe_model(deployment)})",
        "log": "prediction log append (`service.log.append`, durable)",
    }
    lines += [
        "",
        f"### Where one mlprod request's time goes (in process, medians of {args.steps:,} calls)",
        "",
        "| step | ms | share |",
        "|---|---:|---:|",
        *[f"| {names[k]} | {steps[k]:.3f} | {steps[k] / total:.0%} |" for k in names],
        f"| sum of the steps | {total:.3f} | 100% |",
        f"| `service.predict()` whole (the same steps in one call) | {steps['predict()']:.3f} | |",
        f"| HTTP and framework: server p50 - `predict()` | "
        f"{mlprod.percentile(50) - steps['predict()']:.3f} | |",
        f"| for comparison: the LightGBM booster alone on the encoded row | "
        f"{steps['booster']:.3f} | |",
        f"| for comparison: bare's p50 (HTTP and framework + the booster alone) | "
        f"{bare.percentile(50):.3f} | |",
    ]
    if batch is not None:
        raw_rate = batch.rows / batch.raw_seconds
        lines += [
            "",
            f"### Batch scoring ({batch.rows:,} rows of source '{deployment.config.spine.source}')",
            "",
            "| | seconds | rows/s | vs raw predict |",
            "|---|---:|---:|---:|",
            f"| `score_batch` scoring step (`BatchSummary.score_seconds`) "
            f"| {batch.score_seconds:.3f} | {batch.rows / batch.score_seconds:,.0f} "
            f"| {batch.ratio:.0%} |",
            f"| the same chunked `deployment.score` again, best of {args.repeat} "
            f"| {batch.rescored_seconds:.3f} | {batch.rows / batch.rescored_seconds:,.0f} "
            f"| {batch.raw_seconds / batch.rescored_seconds:.0%} |",
            f"| raw `booster.predict` on the encoded matrix (default threads), best of "
            f"{args.repeat} | {batch.raw_seconds:.3f} | {raw_rate:,.0f} | 100% |",
            "",
            f"`score_batch` end to end: {batch.seconds:.1f} s (features {batch.feature_seconds:.1f}"
            " s). Inside the scoring step, each part once on the whole table: "
            + "; ".join(f"{k} {v:.3f} s" for k, v in batch.parts.items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT / "examples" / "flights")
    parser.add_argument("--model", default="flights@latest", help="NAME@ALIAS or NAME/VERSION")
    parser.add_argument(
        "--challenger", default=None, help="of the 50/50 and shadow servers (default: --model)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests timed")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="of the throughput run")
    parser.add_argument("--steps", type=int, default=1000, help="in-process calls timed")
    parser.add_argument("--repeat", type=int, default=3, help="batch: best of this many")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="MLflow's default: 1")
    parser.add_argument("--python-load", action="store_true", help="not wrk, even if present")
    parser.add_argument(
        "--worker-connections", type=int, nargs="+", default=[16, 32], help="--workers 1 and 2"
    )
    parser.add_argument("--worker-warmup", type=float, default=5.0, help="seconds of load")
    parser.add_argument("--worker-rounds", type=int, default=2, help="--workers 1 and 2: best of")
    parser.add_argument("--no-workers", action="store_true", help="skip --workers 1 and 2")
    parser.add_argument(
        "--workers-only", action="store_true", help="only --workers 1 and 2; print, do not write"
    )
    parser.add_argument("--no-batch", action="store_true", help="skip batch scoring")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    load = LoadAverage()
    began = time.perf_counter()
    try:
        project = Project.load(args.project)
        ensure_online_store(project, args.model)
        with tempfile.TemporaryDirectory(prefix="mlprod-serve-bench-") as folder:
            args.tmp = tmp = Path(folder)
            inputs = prepare(project, args.model, AT, tmp)
            if args.workers_only:
                runs = measure_workers(inputs, project, args)
                print("\n".join([workers_target(runs), *workers_lines(args, runs)]))
                return
            service = project.service(args.model)
            try:
                print(f"in process: {args.steps:,} calls of the service's steps", flush=True)
                steps = request_steps(service, inputs, args.steps)
            finally:
                service.store.close()
                service.log.close()
            results = {s.name: measure(s, args, tmp) for s in servers(inputs, project, args)}
            workers = [] if args.no_workers else measure_workers(inputs, project, args)
            batch = None if args.no_batch else batch_scoring(inputs, args.repeat, tmp)
    except MlprodError as exc:
        raise SystemExit(f"error: {exc}") from None
    seconds = time.perf_counter() - began
    text = report(args, inputs, results, steps, batch, workers, load.finish(), seconds)
    print()
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"wrote the section '{SECTION}' of {RESULTS_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
