"""Benchmark: the flights features on DuckDB, Spark (local) and PostgreSQL, mlprod against
hand-written SQL for the same engine, in the same run.

For each scale and engine, ``Project.build_matrix`` on a copy of the flights project whose
``engine`` names that engine, and the query an expert writes by hand for the same 35 features
on the same engine (DuckDB: ``bench/flights/hand_sql.py``; Spark SQL and PostgreSQL: in
``engines_bench``), each in its own process, alternating; time, peak memory (the JVM and the
PostgreSQL server included), where mlprod's time goes (``Matrix.steps``), and whether the two
matrices agree column by column.

Scales: 1x and 10x on all three engines, 30x (about 10M flights) on DuckDB and Spark
(PostgreSQL at 30x only when ``--engine postgres`` is given). PostgreSQL gets the tables once
per scale, in a schema of its own (not timed).

Run ``.venv/bin/python bench/engines.py`` (``--scale 1 10``, ``--engine duckdb spark``,
``--quick`` for one run of each at 1x). Results accumulate in ``bench/out/engines/`` and go to
the section "Feature engines" of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# As bench/features.py: make the packages next to this file importable however it is run
# (the worker processes re-run this file).
_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

from engines_bench.projects import ENGINES  # noqa: E402
from engines_bench.run import run_benchmark  # noqa: E402
from engines_bench.worker import worker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--engine", nargs="+", choices=ENGINES)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1x, one run each")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=1500.0, help="seconds one run may take (default 1500)"
    )
    parser.add_argument("--fresh-data", action="store_true", help="rewrite the data first")
    parser.add_argument(
        "--memory-limit",
        help="DuckDB only: a memory_limit (e.g. 12GB) for mlprod's project and the hand SQL",
    )
    parser.add_argument(
        "--spark-memory",
        help="Spark only: spark.driver.memory (e.g. 4g) for mlprod's project and the hand SQL",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the section from the results kept"
    )
    parser.add_argument("--worker", choices=("mlprod", "sql"), help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.engine[0], args.scale[0], args.project, args.output, args.report)
        return
    if any(s < 1 or s > 30 for s in args.scale):
        parser.error("--scale: between 1 and 30")
    args.engine_given = args.engine is not None
    args.engine = args.engine or list(ENGINES)
    run_benchmark(args)


if __name__ == "__main__":
    main()
