"""Method 1, mlprod: ``Project.load(folder).build_matrix(as_of=...)``, timed end to end.

The method under test. mlprod is imported inside the function, so that only the worker that
runs this method loads it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .settings import AS_OF


def run_mlprod(folder: Path, timings: dict[str, float]) -> pa.Table:
    import mlprod

    matrix = mlprod.Project.load(folder).build_matrix(as_of=AS_OF)
    # The feature query's steps, apart from the first one (reading and checking the sources,
    # compiling).
    timings["query"] = sum(step.seconds for step in matrix.steps[1:])
    return matrix.table
