"""The files a build writes: the training matrix, or a feature subset, with its metadata.

A reader sees either the previous file or the new one, whole. Each file is written under a
hidden temporary name that carries the writer's process id (``.training.parquet.<pid>.tmp``)
and renamed into place when complete; an interrupted writer removes its own, and a killed
one's is removed by the next build, once no process of that id runs. Concurrent builds
therefore never remove each other's files.

``features build --feature NAME`` writes ``subset.parquet``: a matrix of some features
cannot be mistaken for (or replace) the training matrix of all of them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRAINING = "training"
SUBSET = "subset"

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def matrix_path(store: Path, subset: bool = False) -> Path:
    """Where a build is written: ``features/training.parquet``, or ``features/subset.parquet``
    for a build of some features only."""
    return store / "features" / f"{SUBSET if subset else TRAINING}.parquet"


def write_matrix(path: Path, table: pa.Table, metadata: dict[str, Any]) -> Path:
    """Write ``table`` to ``path`` and ``metadata`` beside it (``.json``); return the latter.

    Both are written in full under temporary names before either is renamed, so an
    interrupt leaves the previous pair in place.
    """
    meta_path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    staged = _temporary(path)
    staged_meta = _temporary(meta_path)
    try:
        pq.write_table(table, staged)
        staged_meta.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(staged, path)
        os.replace(staged_meta, meta_path)
    finally:
        staged.unlink(missing_ok=True)
        staged_meta.unlink(missing_ok=True)
    return meta_path


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder``; return
    them. A file whose writer still runs (another build, this one) is left alone."""
    removed = []
    for path in sorted(folder.glob(".*.tmp")):
        match = _TEMPORARY.fullmatch(path.name)
        if match and not _running(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (where it cannot be told: yes)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
