"""The benchmark run: data at each scale, interleaved worker runs, agreement, profile, report.

Orchestration only, in the parent process; the work itself happens in the modules it calls.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.feather as feather

from .agreement import ColumnDiff, compare
from .data import prepare_project
from .measure import Measurement, measure
from .query_profile import profile_in_subprocess
from .report import machine, other_sections, render, show
from .settings import LABELS, METHODS, OUT, RESULTS_MD, ROOT, SECOND_RUN_LIMIT, console


def run_benchmark(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    scales: list[int] = [1] if args.quick else sorted(set(args.scale))
    repeat = 1 if args.quick else 2
    load = os.getloadavg()
    console.print(f"[bold]flights feature benchmark[/] — {machine()}")
    console.print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    rows: list[dict[str, Any]] = []
    agreement: dict[int, list[ColumnDiff]] = {}
    details: list[str] = []
    for scale in scales:
        with console.status(f"[bold]{scale}x[/]: writing the data"):
            prep = time.perf_counter()
            folder = prepare_project(scale)
        console.print(f"[bold]{scale}x[/]: data ready in {time.perf_counter() - prep:.1f} s")
        work = OUT / "results" / f"x{scale}"
        work.mkdir(parents=True, exist_ok=True)
        found = {m: Measurement(m, scale) for m in METHODS}
        outputs: dict[str, Path] = {}
        # Interleave the runs so a noisy neighbour hurts each method alike.
        pandas_runs = 1 if scale >= 10 else repeat
        for attempt in range(repeat):
            for method in METHODS:
                m = found[method]
                if m.error or (method == "pandas" and attempt >= pandas_runs):
                    continue
                if attempt > 0 and (m.best or 0.0) > SECOND_RUN_LIMIT:
                    console.print(
                        f"  {scale}x {LABELS[method]}: first run took {m.best:.0f} s, not repeated"
                    )
                    continue
                outputs[method] = measure(method, folder, scale, work, m)
        tables = {m: feather.read_table(str(p)) for m, p in outputs.items() if found[m].runs}
        diffs: list[ColumnDiff] = []
        if "mlprod" in tables:
            for other in ("sql", "pandas"):
                if other in tables:
                    diffs += compare(tables["mlprod"], tables[other], LABELS[other])
        if "sql" in tables and "pandas" in tables:
            cross = compare(tables["sql"], tables["pandas"], "pandas (vs hand SQL)")
            diffs += [d for d in cross if not d.ok]
        agreement[scale] = diffs
        best = {m: found[m].best for m in METHODS}
        mlprod_s, sql_s, pandas_s = best["mlprod"], best["sql"], best["pandas"]
        rows.append(
            {
                "scale": scale,
                "rows": tables["mlprod"].num_rows if "mlprod" in tables else 0,
                "mlprod": mlprod_s,
                "sql": sql_s,
                "pandas": pandas_s,
                "mlprod_vs_sql": mlprod_s / sql_s if mlprod_s and sql_s else None,
                "pandas_vs_mlprod": pandas_s / mlprod_s if mlprod_s and pandas_s else None,
                "wall": best,
                "cpu": {
                    m: (run["cpu_seconds"] if (run := found[m].best_run) else None) for m in METHODS
                },
                "rss": {m: found[m].peak_mb for m in METHODS},
                "runs": {m: len(found[m].runs) for m in METHODS},
            }
        )
        for method in METHODS:
            run = found[method].best_run
            if run is None:
                details.append(f"- {scale}x {LABELS[method]}: {found[method].error or 'no run'}")
                continue
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in run["timings"].items())
            if method == "mlprod" and "query" in run["timings"]:
                rest = run["seconds"] - run["timings"]["query"]
                parts += f", sources + contracts + compile {rest:.2f} s"
            details.append(
                f"- {scale}x {LABELS[method]}: best of {len(found[method].runs)} = "
                f"{run['seconds']:.2f} s wall, {run['cpu_seconds']:.1f} s CPU"
                + (f" ({parts})" if parts else "")
                + f"; peak RSS {found[method].peak_mb:.0f} MB "
                f"(after imports {run['baseline_rss_mb']:.0f} MB)"
            )
        del tables

    profile: dict[str, Any] | None = None
    if not args.no_profile:
        profile_scale = args.profile_scale or scales[0]
        folder = OUT / f"flights-x{profile_scale}"
        if not folder.exists():
            prepare_project(profile_scale)
        profile = profile_in_subprocess(folder, profile_scale)

    elapsed = time.perf_counter() - started
    lines = render(rows, agreement, details, profile, scales, load, elapsed, args.quick)
    show(rows, agreement)
    target = OUT / "RESULTS.quick.md" if args.quick else RESULTS_MD
    target.write_text("\n".join(lines) + "\n" + other_sections(target))
    console.print(f"wrote {target.relative_to(ROOT)}; whole run {elapsed:.0f} s")
