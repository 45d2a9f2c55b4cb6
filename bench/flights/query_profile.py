"""Where the time goes inside each query: DuckDB's profiler on mlprod's SQL and the hand SQL.

Runs after the timed runs, in a worker of its own (``bench/features.py --profile-worker``),
so profiling costs nothing in the measured figures. (Not named ``profile``: that is a
standard library module.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from .hand_sql import HAND_SQL
from .settings import AS_OF, DATA_FILE, OUT, SCRIPT, WORKER_TIMEOUT, console


def _operator_times(path: Path) -> dict[str, float]:
    profile = json.loads(path.read_text())
    totals: dict[str, float] = {}

    def walk(node: dict[str, Any]) -> None:
        name = str(node.get("name") or node.get("operator_name") or "?")
        info = json.dumps(node.get("extra_info") or {})
        if name == "WINDOW" and "RANGE BETWEEN" in info:
            name = "WINDOW (RANGE frame)"
        elif name == "WINDOW":
            name = "WINDOW (running totals)"
        totals[name] = totals.get(name, 0.0) + float(node.get("timing") or 0.0)
        for child in node.get("children") or []:
            walk(child)

    for node in profile.get("operator") or profile.get("children") or []:
        walk(node)
    return totals


# In mlprod's SQL a RANGE-frame window ends with its frame and is aliased "__f_<feature>".
RANGE_FEATURE = re.compile(r'RANGE BETWEEN[^)]*\)\s*AS\s*"__f_(\w+)"')


def profile_worker(folder: Path, report: Path) -> None:
    """Run both queries once more under DuckDB's profiler; sum operator time by kind.

    mlprod's SQL reads views named after its sources; the DuckDB file has tables of the same
    names, so both queries run directly on the file.
    """
    import mlprod

    queries = {
        "mlprod": mlprod.Project.load(folder).feature_sql(as_of=AS_OF),
        "sql": HAND_SQL,
    }
    result: dict[str, Any] = {}
    for method, query in queries.items():
        profile_path = report.with_name(f"profile-{method}.json")
        with duckdb.connect(str(folder / DATA_FILE), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("PRAGMA enable_profiling = 'json'")
            con.execute("SET profiling_output = ?", [str(profile_path)])
            started = time.perf_counter()
            con.sql(query).to_arrow_table()
            seconds = time.perf_counter() - started
            con.execute("PRAGMA disable_profiling")
        result[method] = {
            "seconds": seconds,
            "operators": _operator_times(profile_path),
            "range_frame_features": sorted(set(RANGE_FEATURE.findall(query))),
            "asof_joins": query.upper().count("ASOF LEFT JOIN"),
        }
    result["scale"] = int(folder.name.rsplit("x", 1)[-1]) if "-x" in folder.name else 1
    report.write_text(json.dumps(result))


def profile_in_subprocess(folder: Path, scale: int) -> dict[str, Any] | None:
    """Run ``profile_worker`` in a process of its own; its report, or None if it failed."""
    profile: dict[str, Any] | None = None
    report = OUT / "results" / "profile.json"
    with console.status(f"profiling both queries at {scale}x"):
        done = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--profile-worker",
                "--project",
                str(folder),
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
        )
    if done.returncode == 0 and report.exists():
        profile = json.loads(report.read_text())
    else:
        console.print(f"[red]profile failed[/]: {done.stderr.strip()[-500:]}")
    return profile
