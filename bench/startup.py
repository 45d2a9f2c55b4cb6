"""Benchmark: how long each ``mlprod`` command takes to start and answer, vs ``python -c pass``.

A command should import only what it uses: ``--help`` and ``config check`` need neither the
training stack (scikit-learn, LightGBM) nor MLflow. Each command runs ``--runs`` times in a
fresh process on the bundled flights example (commands that read no data, so the example's data
need not be there); the median wall time is printed next to the interpreter's own start-up in
the same run, and the table is written to ``bench/RESULTS.md`` (``--no-write`` to skip).

Run ``.venv/bin/python bench/startup.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_md import write_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Command start-up (bench/startup.py)"
PROJECT = ["--project", str(ROOT / "examples" / "flights")]
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (the floor)", [sys.executable, "-c", "pass"]),
    ("mlprod --help", ["--help"]),
    ("mlprod config check", ["config", "check", *PROJECT]),
    ("mlprod features list", ["features", "list", *PROJECT]),
    ("mlprod features sql origin_delayed_3h", ["features", "sql", "origin_delayed_3h", *PROJECT]),
    ("mlprod models list", ["models", "list", *PROJECT]),
]


def seconds(command: list[str], runs: int) -> float:
    """Median wall seconds of ``command`` in a fresh process (one untimed run first)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    mlprod = str(Path(sys.executable).parent / "mlprod")
    rows = []
    floor = 0.0
    for label, command in COMMANDS:
        full = command if command[0] == sys.executable else [mlprod, *command]
        took = seconds(full, args.runs)
        floor = floor or took
        rows.append(f"| `{label}` | {took:.2f} | {took / floor:.1f}x |")
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: median wall time of "
            f"{args.runs} runs, each in a fresh process, after one untimed run.",
            "",
            "| command | seconds | vs the floor |",
            "|---|---:|---:|",
            *rows,
        ]
    )
    if not args.no_write:
        write_section(SECTION, text + "\n")


if __name__ == "__main__":
    main()
