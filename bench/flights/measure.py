"""One measured run of one method, in its own process, and what the parent keeps of it.

Each method runs in a fresh worker process (``bench/features.py --worker METHOD``) so that its
peak RSS (``VmHWM``) and CPU time are its own; the worker writes the matrix (Arrow IPC) and
its measurements (JSON) for the parent to read.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather

from .hand_sql import run_sql
from .mlprod_method import run_mlprod
from .pandas_method import run_pandas
from .settings import LABELS, SCRIPT, WORKER_TIMEOUT, console

RUNNERS: dict[str, Callable[[Path, dict[str, float]], pa.Table]] = {
    "mlprod": run_mlprod,
    "sql": run_sql,
    "pandas": run_pandas,
}


def peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` would also count the
    RSS the parent had when it forked this worker (Linux carries it across ``execve``).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def worker(method: str, folder: Path, output: Path, report: Path) -> None:
    """Build the matrix once, write it (Arrow IPC) and what was measured (JSON)."""
    if method == "mlprod":
        # Import outside the timed region, like the other methods' libraries.
        import mlprod
        import mlprod.features.matrix  # noqa: F401
    baseline = peak_rss_mb()
    timings: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    table = RUNNERS[method](folder, timings)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_mb()  # before writing the output, which is not part of the method
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    feather.write_feather(table, str(output), compression="uncompressed")
    result = {
        "method": method,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "rows": table.num_rows,
        "columns": table.num_columns,
        "timings": timings,
    }
    report.write_text(json.dumps(result))


@dataclass
class Measurement:
    method: str
    scale: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min((r["seconds"] for r in self.runs), default=None)

    @property
    def best_run(self) -> dict[str, Any] | None:
        return min(self.runs, key=lambda r: r["seconds"]) if self.runs else None

    @property
    def peak_mb(self) -> float | None:
        return max((r["peak_rss_mb"] for r in self.runs), default=None)


def measure(method: str, folder: Path, scale: int, work: Path, m: Measurement) -> Path:
    output = work / f"{method}.arrow"
    report = work / f"{method}.json"
    report.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(SCRIPT),
        "--worker",
        method,
        "--project",
        str(folder),
        "--output",
        str(output),
        "--report",
        str(report),
    ]
    with console.status(f"[bold]{scale}x[/] {LABELS[method]}: run {len(m.runs) + 1} ..."):
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0 or not report.exists():
        m.error = (done.stderr.strip().splitlines() or ["failed"])[-1]
        console.print(f"  [red]{LABELS[method]} failed[/]: {m.error}")
        return output
    run = json.loads(report.read_text())
    m.runs.append(run)
    console.print(
        f"  {scale}x {LABELS[method]:<8} run {len(m.runs)}: {run['seconds']:7.2f} s "
        f"(cpu {run['cpu_seconds']:6.1f} s), peak RSS {run['peak_rss_mb']:7.0f} MB"
    )
    return output
