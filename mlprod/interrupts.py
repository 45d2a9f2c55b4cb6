"""Ctrl-C as a clean stop: one line saying what was kept, exit code 130, no traceback.

The work below the shells makes an interrupt safe before it gets here: a running DuckDB
query is interrupted and waited for (:mod:`mlprod.features.matrix`), Optuna records the
running trial as failed, and files are written under temporary names and renamed only when
complete. What is left to do at the edge is to say so, in one line, and exit as shells expect
of a process stopped by SIGINT (128 + 2).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


@contextmanager
def stop_cleanly(kept: str | None = None) -> Iterator[None]:
    """Turn a KeyboardInterrupt into ``interrupted; <kept>`` on stderr and exit code 130.

    ``kept`` says what the interrupted work leaves behind (``nothing was written``); None
    when the command cannot say.
    """
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted; {kept}\n" if kept else "interrupted\n")
        sys.stderr.flush()
        raise SystemExit(INTERRUPTED) from None
