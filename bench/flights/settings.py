"""Settings shared by every part of the benchmark: paths, methods, tolerances, time limits.

One place for the constants, and the one ``console`` all output goes through, so that the
parent process and its workers agree on where files are and what the methods are called.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent.parent
# The entry point, which the parent re-runs as worker processes (``--worker``, ...).
SCRIPT = ROOT / "bench" / "features.py"
EXAMPLE_CONFIG = ROOT / "examples" / "flights" / "mlprod.yaml"
OUT = ROOT / "bench" / "out"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
DATA_FILE = "data/nycflights13.duckdb"  # relative to a project folder, as in the example
AS_OF = datetime(2100, 1, 1)
METHODS = ("mlprod", "sql", "pandas")
LABELS = {"mlprod": "mlprod", "sql": "hand SQL", "pandas": "pandas"}
RTOL = 1e-6  # relative tolerance for float features
ATOL = 1e-9  # absolute floor, so that 0 vs 1e-12 (rounding in a variance) is not a mismatch
SECOND_RUN_LIMIT = 150.0  # seconds: a slower first run is not repeated (keeps the run short)
WORKER_TIMEOUT = 1200.0

console = Console(highlight=False)
