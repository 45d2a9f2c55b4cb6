"""One measured build in a process of its own: mlprod or the hand SQL, on one engine.

The parent (``run``) starts ``bench/engines.py --worker METHOD --engine ENGINE ...``; the
worker builds the matrix once, writes it (Arrow IPC) and what it measured (JSON).

Memory is each engine's own processes' high-water mark (``VmHWM``):

* DuckDB: the worker process (DuckDB runs inside it);
* Spark: the worker plus its JVM (the child ``java`` process), each one's peak, summed (an
  upper bound: the two peaks need not coincide);
* PostgreSQL: the worker (the client: the matrix arrives in it) and, apart, the server
  process(es) serving the build, found by ``application_name`` and sampled every 0.2 s
  (``VmHWM`` counts the shared buffers a backend touched; parallel workers included).

A Spark session is started before the clock starts, for both methods: the JVM's start-up is
reported apart, not counted.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.feather as feather
from flights.measure import peak_rss_mb
from flights.settings import AS_OF

from .projects import (
    POSTGRES_URL,
    SPARK_MASTER,
    application,
    memory_limit_of,
    revision,
    schema_name,
    spark_conf_of,
    url_for,
)


def vm_hwm_mb(pid: int) -> float:
    """The peak RSS of process ``pid`` in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ServerSampler:
    """Peak RSS and CPU of the PostgreSQL processes serving one application, sampled."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.peaks: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import adbc_driver_postgresql.dbapi as pg

        from .postgres_sql import backend_pids

        with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
            while not self._stop.is_set():
                for pid in backend_pids(cursor, self.app):
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), vm_hwm_mb(pid))
                    try:
                        times = psutil.Process(pid).cpu_times()
                        self.cpu[pid] = times.user + times.system
                    except psutil.Error:
                        pass
                conn.rollback()
                self._stop.wait(0.2)

    @property
    def peak_mb(self) -> float:
        """The largest server process (a backend; its parallel workers come and go)."""
        return max(self.peaks.values(), default=0.0)


class StepLog:
    """mlprod's progress, written as it happens: what got done before a timeout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.perf_counter()
        path.write_text("")

    def start(self, description: str, total: float | None = None) -> StepLog:
        self._line(f"start {description} ({total})")
        return self

    def advance(self, amount: float = 1) -> None:
        self._line("advance")

    def update(self, description: str | None = None, completed: float | None = None) -> None:
        pass

    def finish(self, description: str | None = None) -> None:
        self._line(f"finish {description}")

    def _line(self, text: str) -> None:
        with self.path.open("a") as out:
            out.write(f"{time.perf_counter() - self.started:.1f} {text}\n")


def _java_children() -> list[psutil.Process]:
    return [
        p for p in psutil.Process().children(recursive=True) if "java" in (p.name() or "").lower()
    ]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _start_spark(method: str, folder: Path) -> float:
    """Start the JVM before the clock, with the project's settings (as the build will ask)."""
    started = time.perf_counter()
    conf = spark_conf_of(folder)
    if method == "mlprod":
        from mlprod.features.spark import session
        from mlprod.project.engine import EngineConfig

        session(EngineConfig(kind="spark", master=SPARK_MASTER, conf=conf))
    else:
        from .spark_sql import spark_session

        spark_session(SPARK_MASTER, conf)
    return time.perf_counter() - started


def _duckdb_limited(folder: Path, limit: str) -> pa.Table:
    """The DuckDB hand SQL under the memory limit mlprod's project sets, spilling where
    mlprod spills (``<project>/.mlprod/spill``)."""
    import duckdb
    from flights.hand_sql import HAND_SQL
    from flights.settings import DATA_FILE

    spill = folder / ".mlprod" / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET memory_limit = ?", [limit])
        con.execute("SET temp_directory = ?", [str(spill)])
        table: pa.Table = con.sql(HAND_SQL).to_arrow_table()
    return table


def _build(
    method: str, engine: str, scale: int, folder: Path, output: Path, timings: dict[str, float]
) -> tuple[pa.Table, list[dict[str, Any]]]:
    if method == "mlprod":
        import mlprod

        log = StepLog(output.with_suffix(".progress"))
        matrix = mlprod.Project.load(folder).build_matrix(as_of=AS_OF, progress=log)
        return matrix.table, [step.to_dict() for step in matrix.steps]
    if engine == "duckdb":
        from flights.hand_sql import run_sql

        limit = memory_limit_of(folder)
        if limit is None:
            return run_sql(folder, timings), []
        return _duckdb_limited(folder, limit), []
    if engine == "spark":
        from .spark_sql import run_spark_sql

        return run_spark_sql(folder, output.with_suffix(".parquet"), timings), []
    from .postgres_sql import run_postgres_sql

    return run_postgres_sql(url_for("sql"), schema_name(scale), timings), []


def worker(method: str, engine: str, scale: int, folder: Path, output: Path, report: Path) -> None:
    """Build the matrix once; write it and the measurements."""
    if method == "mlprod":  # imported outside the timed region, like the hand path's libraries
        import mlprod
        import mlprod.features.matrix  # noqa: F401
    jvm_start = _start_spark(method, folder) if engine == "spark" else None
    baseline = peak_rss_mb()
    timings: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    java = _java_children()
    java_cpu = _cpu_seconds(java)
    sampler = ServerSampler(application(method)) if engine == "postgres" else None
    if sampler:
        sampler.__enter__()
    try:
        started = time.perf_counter()
        table, steps = _build(method, engine, scale, folder, output, timings)
        seconds = time.perf_counter() - started
    finally:
        if sampler:
            sampler.__exit__()
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_mb()
    java = java or _java_children()
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    result: dict[str, Any] = {
        "method": method,
        "engine": engine,
        "scale": scale,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "rows": table.num_rows,
        "columns": table.num_columns,
        "timings": timings,
        "steps": steps,
        "revision": revision(),
    }
    if engine == "spark":
        result["jvm_start_seconds"] = jvm_start
        result["jvm_peak_rss_mb"] = sum(vm_hwm_mb(p.pid) for p in java)
        result["jvm_cpu_seconds"] = _cpu_seconds(java) - java_cpu
    if sampler:
        result["server_peak_rss_mb"] = sampler.peak_mb
        result["server_cpu_seconds"] = sum(sampler.cpu.values())
        result["server_processes"] = len(sampler.peaks)
    feather.write_feather(table, str(output), compression="uncompressed")
    report.write_text(json.dumps(result))
