"""The online store: the source rows real-time features are evaluated from, kept per entity key.

An *online table* holds, per entity key, rows of ``(at, event id, v0..vn)``: ``at`` is when the
row became available (epoch microseconds, naive UTC), the values are already evaluated. A request
reads several ``(table, key)`` pairs at once, either a time range ``since <= at < until`` or the
latest rows with ``at < until`` (every row tied on that ``at``); rows come back sorted by ``at``
then event id, whatever the backend.

- ``SqliteOnlineStore`` (:mod:`.sqlite`): the embedded default, one SQLite file in WAL mode;
  it can also summarize a range itself (``SummarizingStore``: counts, min, max, exact sums;
  :mod:`.sqlite_summaries`), so that a long window's rows never reach Python.
- ``RedisOnlineStore`` (:mod:`.redis`): one sorted set per ``(table, key)``.
- ``MemoryOnlineStore`` (:mod:`.memory`): sorted lists per key, for the parity check and tests.

A key tuple is stored as canonical JSON text: integral numbers of any Python or NumPy type (also
a float such as ``1.0``, which pandas makes of an int column with nulls) are the same int, a
string ``'1'`` is not the int ``1``; times are tagged. A key with a null part is never stored and
never matches. Writes are idempotent: an event id already stored for a key is skipped (the first
write wins). Redis knows a row by its whole member, so there an event id written again with
*different* values becomes a second row; the same values at another ``at`` are skipped as
elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlprod.data.online_store._shared import (
    ColumnSummary,
    Freshness,
    OnlineRows,
    OnlineStore,
    Read,
    Summarize,
    SummarizingStore,
    Summary,
    TableLayout,
    ValueType,
    canonical_key,
    from_micros,
    micros,
)
from mlprod.data.online_store.memory import MemoryOnlineStore
from mlprod.data.online_store.sqlite import SqliteOnlineStore
from mlprod.errors import OnlineStoreError
from mlprod.project.serving import OnlineSpec

__all__ = [
    "DEFAULT_REDIS_URL",
    "ColumnSummary",
    "Freshness",
    "MemoryOnlineStore",
    "OnlineRows",
    "OnlineSpec",
    "OnlineStore",
    "OnlineStoreError",
    "Read",
    "RedisOnlineStore",
    "SqliteOnlineStore",
    "Summarize",
    "SummarizingStore",
    "Summary",
    "TableLayout",
    "ValueType",
    "canonical_key",
    "from_micros",
    "micros",
    "open_online_store",
]


def __getattr__(name: str) -> Any:
    """The Redis store on first use: its client costs a tenth of a second to import."""
    if name in ("RedisOnlineStore", "DEFAULT_REDIS_URL"):
        from mlprod.data.online_store import redis

        return getattr(redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_online_store(spec: OnlineSpec, project_dir: Path, namespace: str) -> OnlineStore:
    """Open the store the spec names; ``namespace`` separates projects sharing one Redis."""
    if spec.kind == "redis":
        from mlprod.data.online_store.redis import DEFAULT_REDIS_URL, RedisOnlineStore

        return RedisOnlineStore(spec.url or DEFAULT_REDIS_URL, namespace)
    if spec.kind == "memory":
        return MemoryOnlineStore()
    return SqliteOnlineStore(Path(project_dir) / spec.path)
