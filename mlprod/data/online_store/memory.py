"""``MemoryOnlineStore``: sorted lists per key, for the parity check and tests."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import pyarrow as pa

from mlprod.data.online_store._shared import (
    Freshness,
    OnlineRows,
    Read,
    TableLayout,
    _block,
    _check_id,
    _check_read,
    _layout_error,
    _now,
    _prepare,
    _undeclared,
    canonical_key,
    from_micros,
    micros,
)


class _Entries:
    """One key's rows sorted by (at, id), with ``at`` alone for bisecting."""

    __slots__ = ("ats", "ids", "rows")

    def __init__(self) -> None:
        self.ats: list[int] = []
        self.rows: list[tuple[Any, ...]] = []  # (at, id, v0, v1, ...)
        self.ids: set[str] = set()

    def cut(self, before: int, keep_latest: bool) -> int:
        """Index of the first row to keep when dropping rows with at < before."""
        end = bisect.bisect_left(self.ats, before)
        if keep_latest and end:
            return bisect.bisect_left(self.ats, self.ats[end - 1])
        return end


class MemoryOnlineStore:
    """The online store in this process's memory: sorted lists, bisected."""

    def __init__(self) -> None:
        self._layouts: dict[str, TableLayout] = {}
        self._tables: dict[str, dict[str, _Entries]] = {}
        self._fresh: dict[str, Freshness] = {}

    def declare(self, layouts: Mapping[str, TableLayout], recreate: bool = False) -> None:
        for table, layout in layouts.items():
            old = self._layouts.get(_check_id("online table", table))
            if old is not None and old != layout and not recreate:
                raise _layout_error(table, old, layout)
            if old != layout:
                self._tables[table] = {}
            self._layouts[table] = layout

    def _layout(self, table: str) -> TableLayout:
        if table not in self._layouts:
            raise _undeclared(table, "memory")
        return self._layouts[table]

    def write(self, table: str, rows: pa.Table) -> int:
        batch = _prepare(table, rows, self._layout(table))
        columns = [v.to_pylist() for v in batch.values]
        keys = self._tables[table]
        new: dict[str, list[tuple[Any, ...]]] = {}
        for key, at, id_, *values in zip(batch.keys, batch.ats, batch.ids, *columns, strict=True):
            entries = keys.get(key) or keys.setdefault(key, _Entries())
            if id_ not in entries.ids:
                entries.ids.add(id_)
                new.setdefault(key, []).append((at, id_, *values))
        for key, records in new.items():
            entries = keys[key]
            entries.rows.extend(records)
            entries.rows.sort(key=itemgetter(0, 1))
            entries.ats = [item[0] for item in entries.rows]
        return sum(len(records) for records in new.values())

    def read(self, reads: Sequence[Read]) -> list[OnlineRows]:
        out: list[OnlineRows] = []
        for read in reads:
            layout = self._layout(read.table)
            _check_read(read, layout)
            key = canonical_key(read.key)
            entries = self._tables[read.table].get(key) if key is not None else None
            if entries is None:
                out.append(_block([], 2, len(layout.values), []))
                continue
            end = bisect.bisect_left(entries.ats, read.until)
            if read.latest:
                start = bisect.bisect_left(entries.ats, entries.ats[end - 1]) if end else 0
            else:
                start = 0 if read.since is None else bisect.bisect_left(entries.ats, read.since)
            out.append(_block(entries.rows[start:end], 2, len(layout.values), []))
        return out

    def prune(self, table: str, before: int, keep_latest: bool = True) -> int:
        self._layout(table)
        dropped = 0
        for key, entries in list(self._tables[table].items()):
            cut = entries.cut(before, keep_latest)
            if cut:
                entries.ids.difference_update(item[1] for item in entries.rows[:cut])
                del entries.rows[:cut], entries.ats[:cut]
                dropped += cut
            if not entries.rows:
                del self._tables[table][key]
        return dropped

    def mark_applied(self, source: str, latest_at: datetime | None, rows: int) -> None:
        old = self._fresh.get(source)
        latest = None if latest_at is None else from_micros(micros(latest_at))
        if old is not None:
            latest = max((t for t in (latest, old.latest_at) if t is not None), default=None)
            rows += old.rows
        self._fresh[source] = Freshness(latest, rows, from_micros(_now()))

    def freshness(self) -> dict[str, Freshness]:
        return dict(sorted(self._fresh.items()))

    def ping(self) -> None:
        return None

    def clear(self) -> None:
        self._layouts.clear()
        self._tables.clear()
        self._fresh.clear()

    def close(self) -> None:
        return None
