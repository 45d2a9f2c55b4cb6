"""One alias move at a time: a file lock beside the registry store, held across processes.

MLflow has no transaction around "read the aliases and the champion history, then write
both", so two ``promote`` commands (or a server moving aliases for an A/B test) could each read
the same champion and record it twice. Every alias move holds this lock from its read to its
last write. The lock is an operating-system lock on an open file, so a process killed while
holding it releases it at once; the file itself stays, empty, and is reused.

For a SQLite store the file sits beside the database (``mlflow.db.lock``), and for a local
file store beside its folder; a remote store (an MLflow server, a database URL) has no folder
of ours, so its lock is in the temporary folder and serialises the processes of this machine.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from mlprod.errors import RegistryError
from mlprod.registry._store import sqlite_path

# How long an alias move waits for another one before giving up, and how often it looks.
WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.02


def lock_path(uri: str) -> Path:
    """The lock file of the registry at ``uri``."""
    database = sqlite_path(uri)
    if database is not None:
        return database.with_name(database.name + ".lock")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme else uri).resolve()
        return folder.with_name(folder.name + ".lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mlprod-registry-{digest}.lock"


@contextmanager
def registry_lock(uri: str, wait: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the registry's lock for a block; raise RegistryError after ``wait`` seconds."""
    path = lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        deadline = time.monotonic() + wait
        while not _try_lock(handle):
            if time.monotonic() >= deadline:
                raise RegistryError(
                    f"another mlprod process has held the registry lock {path} for more than "
                    f"{wait:.0f} s; try again when it has finished (a stopped process releases "
                    "it)"
                )
            time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            _unlock(handle)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[bytes]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
