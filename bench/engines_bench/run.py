"""The benchmark run: per scale the data (and the PostgreSQL tables), per engine mlprod and
the hand SQL in alternation, their agreement; the results kept across runs, then reported.

Results accumulate in ``bench/out/engines/results.json`` (one entry per scale and engine,
replaced when measured again), so 1x, 10x and 30x can be run separately and reported together.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow.feather as feather
from flights.agreement import compare
from flights.settings import console

from .measure import Runs, run_worker
from .projects import HERE, data_folder, engine_project, load_postgres, postgres_loaded, revision
from .report import HEADING, render, show

RESULTS_JSON = HERE / "results.json"
SECOND_RUN_LIMIT = 150.0  # seconds: a slower first run is not repeated


def engines_for(scale: int, chosen: list[str], explicit: bool) -> list[str]:
    """PostgreSQL runs at 1x and 10x only, unless asked for by name."""
    if scale >= 30 and not explicit:
        return [e for e in chosen if e != "postgres"]
    return chosen


def measure_pair(
    scale: int, engine: str, repeat: int, timeout: float, memory_limit: str | None = None
) -> tuple[dict[str, Runs], dict[str, Any]]:
    folder = engine_project(scale, engine, memory_limit)
    work = HERE / "results" / f"x{scale}"
    work.mkdir(parents=True, exist_ok=True)
    found = {m: Runs(m, engine, scale) for m in ("mlprod", "sql")}
    outputs = {}
    for attempt in range(repeat):  # alternate, so a noisy neighbour hurts both alike
        for method, runs in found.items():
            if runs.error or (attempt > 0 and (runs.best or 0.0) > SECOND_RUN_LIMIT):
                continue
            outputs[method] = run_worker(runs, folder, work, timeout)
    agreement: dict[str, Any] = {"checked": 0, "bad": []}
    if all(runs.runs for runs in found.values()):
        ours = feather.read_table(str(outputs["mlprod"]))
        hand = feather.read_table(str(outputs["sql"]))
        diffs = compare(ours, hand, f"hand SQL on {engine}")
        agreement = {
            "checked": len(diffs),
            "bad": [d.describe() for d in diffs if not d.ok],
        }
        if agreement["bad"]:
            for line in agreement["bad"]:
                console.print(f"  [red]{scale}x {engine}: {line}[/]", soft_wrap=True)
        else:
            console.print(f"  [green]{scale}x {engine}: all {len(diffs)} columns agree[/]")
    return found, agreement


def write_report(results: dict[str, Any], quick: bool) -> str:
    """The section, to RESULTS.md (or, for --quick, a file of its own); where it went."""
    text = render(results, quick=quick)
    if quick:
        target = HERE / "RESULTS.quick.md"
        target.write_text(text)
        return str(target)
    from results_md import RESULTS_MD, write_section

    write_section(HEADING, text)
    return str(RESULTS_MD)


def run_benchmark(args: argparse.Namespace) -> None:
    if args.report_only:
        results = json.loads(RESULTS_JSON.read_text())
        show(results)
        console.print(f"wrote {write_report(results, quick=False)}")
        return
    started = time.perf_counter()
    scales: list[int] = [1] if args.quick else sorted(set(args.scale))
    repeat = 1 if args.quick else args.repeat
    load = os.getloadavg()
    console.print(f"[bold]feature engines benchmark[/]: scales {scales}, engines {args.engine}")
    console.print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    results: dict[str, Any] = {}
    if RESULTS_JSON.exists() and not args.quick:
        results = json.loads(RESULTS_JSON.read_text())
    for scale in scales:
        engines = engines_for(scale, args.engine, args.engine_given)
        with console.status(f"[bold]{scale}x[/]: preparing the data"):
            prep = time.perf_counter()
            data_folder(scale, fresh=args.fresh_data)
        console.print(f"[bold]{scale}x[/]: data ready in {time.perf_counter() - prep:.1f} s")
        loaded = None
        if "postgres" in engines and (args.fresh_data or not postgres_loaded(scale)):
            with console.status(f"[bold]{scale}x[/]: loading the tables into PostgreSQL"):
                loaded = load_postgres(scale)
            console.print(f"[bold]{scale}x[/]: PostgreSQL tables loaded in {loaded:.1f} s")
        for engine in engines:
            load_now = os.getloadavg()
            limit = {"duckdb": args.memory_limit, "spark": args.spark_memory}.get(engine)
            found, agreement = measure_pair(scale, engine, repeat, args.timeout, limit)
            key = f"x{scale}-{engine}" + (f"-{limit}" if limit else "")
            setting = "memory_limit" if engine == "duckdb" else "spark.driver.memory"
            results[key] = {
                "scale": scale,
                "engine": engine,
                "variant": f"{setting} {limit}" if limit else None,
                "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "revision": revision(),
                "load": list(load_now),
                "postgres_load_seconds": loaded if engine == "postgres" else None,
                "mlprod": found["mlprod"].to_dict(),
                "sql": found["sql"].to_dict(),
                "agreement": agreement,
            }
            if not args.quick:  # kept after every pair: a later failure loses nothing
                RESULTS_JSON.write_text(json.dumps(results, indent=1))
    elapsed = time.perf_counter() - started
    show(results)
    console.print(f"wrote {write_report(results, args.quick)}; this run {elapsed:.0f} s")
