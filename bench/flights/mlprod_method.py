"""Method 1, mlprod: ``Project.load(folder).build_matrix(as_of=...)``, timed end to end.

The method under test. mlprod is imported inside the function, so that only the worker that
runs this method loads it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from .settings import AS_OF


def run_mlprod(folder: Path, timings: dict[str, float]) -> pa.Table:
    import mlprod
    from mlprod.features import matrix as matrix_module

    # Time the feature query (all its stages) apart from the rest: reading and checking the
    # sources, compiling.
    original = matrix_module.run_staged

    def timed_run(*args: Any, **kwargs: Any) -> pa.Table:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings["query"] = timings.get("query", 0.0) + time.perf_counter() - started

    matrix_module.run_staged = timed_run
    try:
        table: pa.Table = mlprod.Project.load(folder).build_matrix(as_of=AS_OF).table
    finally:
        matrix_module.run_staged = original
    return table
