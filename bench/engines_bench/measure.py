"""Run one method on one engine in a worker process, with a time limit; keep what it measured.

The worker is ``bench/engines.py --worker ...`` in a session of its own, so that on a time
limit the whole group (the worker and its JVM) is stopped; what an mlprod build got through
before that is read from its progress log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flights.settings import console

SCRIPT = Path(__file__).resolve().parent.parent / "engines.py"
LABELS = {"mlprod": "mlprod", "sql": "hand SQL"}


@dataclass
class Runs:
    """The runs of one method on one engine at one scale."""

    method: str
    engine: str
    scale: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def best_run(self) -> dict[str, Any] | None:
        return min(self.runs, key=lambda r: r["seconds"]) if self.runs else None

    @property
    def best(self) -> float | None:
        run = self.best_run
        return run["seconds"] if run else None

    def peak(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "runs": self.runs, "error": self.error}


ROOT_CAUSES = ("java.lang.OutOfMemoryError", "Not enough memory to build and broadcast")


def root_cause(stderr: str) -> str:
    """The line of a failed worker's output that says why: a JVM out of memory first (Spark
    reports its consequences, lost blocks, a dead context, at more length), else the last
    line of the Python traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for cause in ROOT_CAUSES:
        for line in lines:
            if cause in line:
                text = line[line.index(cause) :]
                return text.split(". ", 1)[0]
    tail = [line for line in lines if not line.startswith("at ")]
    return tail[-1] if tail else "failed"


def _partial(progress: Path) -> str:
    """How far an mlprod build got: stages done of the total, from its progress log."""
    if not progress.exists():
        return "no progress logged"
    done, total, last = 0, "?", "0"
    for line in progress.read_text().splitlines():
        seconds, _, text = line.partition(" ")
        last = seconds
        if text.startswith("start computing features"):
            total = text.rsplit("(", 1)[-1].rstrip(")")
            done = 0
        elif text == "advance":
            done += 1
    return f"{done} of {total} steps of the plan done after {float(last):.0f} s"


def run_worker(runs: Runs, folder: Path, work: Path, timeout: float) -> Path:
    """One run; the matrix's path (Arrow IPC). A failure or time-out sets ``runs.error``."""
    name = f"{runs.engine}-{runs.method}"
    output, report = work / f"{name}.arrow", work / f"{name}.json"
    report.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(SCRIPT),
        "--worker",
        runs.method,
        "--engine",
        runs.engine,
        "--scale",
        str(runs.scale),
        "--project",
        str(folder),
        "--output",
        str(output),
        "--report",
        str(report),
    ]
    label = f"[bold]{runs.scale}x {runs.engine}[/] {LABELS[runs.method]}: run {len(runs.runs) + 1}"
    with console.status(label + " ..."):
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            got = _partial(output.with_suffix(".progress")) if runs.method == "mlprod" else ""
            runs.error = f"stopped after {timeout:.0f} s" + (f" ({got})" if got else "")
            console.print(f"  [red]{LABELS[runs.method]} {runs.error}[/]")
            return output
    (work / f"{name}.stderr").write_text(stderr)
    if process.returncode != 0 or not report.exists():
        runs.error = root_cause(stderr)
        console.print(f"  [red]{LABELS[runs.method]} failed[/]: {runs.error}")
        return output
    run = json.loads(report.read_text())
    runs.runs.append(run)
    extra = ""
    if "jvm_peak_rss_mb" in run:
        extra = f" + JVM {run['jvm_peak_rss_mb']:.0f} MB"
    if "server_peak_rss_mb" in run:
        extra = f", server {run['server_peak_rss_mb']:.0f} MB"
    console.print(
        f"  {runs.scale}x {runs.engine:<8} {LABELS[runs.method]:<8} run {len(runs.runs)}: "
        f"{run['seconds']:8.2f} s, peak RSS {run['peak_rss_mb']:.0f} MB{extra}"
    )
    return output
