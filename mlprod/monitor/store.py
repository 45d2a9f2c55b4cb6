"""Where monitoring keeps what it computed: each window's summary and its metric values, in a
SQLite file next to the archive (WAL: the dashboard reads while a pass writes).

One row per window holds its packed summary and its metrics (names as JSON, values, lower and
upper bounds as float64 arrays), so a pass writes as many rows as it summarised windows, not one
per number. A pass replaces the windows it summarised again and reads the others back as they
were, so the cost of a pass follows what changed. The store is derived from the archive: a file
of another layout is emptied (``reset``) and the next pass summarises everything again.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mlprod.errors import MonitorError
from mlprod.monitor.summary import pack, unpack
from mlprod.monitor.values import MetricValue, WindowKey
from mlprod.monitor.windows import Window, WindowSpec

_LAYOUT = 2  # PRAGMA user_version of this layout
_DDL = """CREATE TABLE IF NOT EXISTS windows (
    spec TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    variant TEXT NOT NULL, position INTEGER NOT NULL, start TEXT NOT NULL, end_ TEXT NOT NULL,
    rows_ INTEGER NOT NULL, summary BLOB NOT NULL, metric_names TEXT NOT NULL,
    metric_values BLOB NOT NULL, computed_at TEXT NOT NULL,
    PRIMARY KEY (spec, model_name, model_version, variant, position))"""
_KEY = "model_name, model_version, variant, start, end_"


class MonitorStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.reset = False  # True when a store of another layout was emptied on opening
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA busy_timeout = 10000")
            with self._write() as conn:
                layout = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                names = {name for (name,) in tables.fetchall()}
                if layout != _LAYOUT and names:
                    for name in names:
                        conn.execute(f'DROP TABLE "{name}"')  # our own tables' names
                    self.reset = True
                conn.execute(_DDL)
                conn.execute(f"PRAGMA user_version = {_LAYOUT}")
        except (sqlite3.Error, OSError) as exc:
            raise MonitorError(
                f"the monitoring store at {self.path} cannot be opened: {exc}"
            ) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise MonitorError(
                f"writing the monitoring store at {self.path} failed: {exc}"
            ) from None

    def put(self, spec: WindowSpec, windows: list[Window], metrics: Iterable[MetricValue]) -> None:
        """Replace these windows' summaries and metrics (one transaction)."""
        now = datetime.now(UTC).replace(tzinfo=None).isoformat()
        per_window: dict[WindowKey, list[MetricValue]] = defaultdict(list)
        for value in metrics:
            per_window[value.window].append(value)
        rows = [_row(spec, w, per_window.get(w.key, []), now) for w in windows]
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def metrics(
        self,
        spec: WindowSpec,
        since: datetime | None = None,
        windows: Collection[WindowKey] | None = None,
    ) -> list[MetricValue]:
        """Every stored metric of windows ending after ``since`` (and among ``windows``, when
        given: only theirs are unpacked), by window start."""
        rows = self._select(f"{_KEY}, metric_names, metric_values", spec, since)
        out: list[MetricValue] = []
        for name, version, variant, start, end, names, values in rows:
            key = _key(name, version, variant, start, end)
            if windows is None or key in windows:
                out += _unpack_metrics(key, names, values)
        return out

    def keys(self, spec: WindowSpec) -> list[tuple[WindowKey, int]]:
        """Every stored window and its row count, by start."""
        rows = self._select(f"{_KEY}, rows_", spec, None)
        return [(_key(*key), count) for *key, count in rows]

    def windows(self, spec: WindowSpec, since: datetime | None = None) -> list[Window]:
        """Stored summaries of windows ending after ``since``, by start."""
        rows = self._select(f"{_KEY}, position, summary", spec, since)
        return [Window(_key(*key), position, unpack(summary)) for *key, position, summary in rows]

    def _select(self, columns: str, spec: WindowSpec, since: datetime | None) -> list[tuple]:  # type: ignore[type-arg]
        rows: list[tuple] = self._conn.execute(  # type: ignore[type-arg]
            f"SELECT {columns} FROM windows WHERE spec = ? AND end_ > ? "
            "ORDER BY start, model_name, model_version, variant",
            (spec.name, "" if since is None else since.isoformat()),
        ).fetchall()
        return rows

    def clear(self, spec: WindowSpec) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM windows WHERE spec = ?", (spec.name,))

    def close(self) -> None:
        self._conn.close()


def _row(spec: WindowSpec, window: Window, metrics: list[MetricValue], now: str) -> tuple:  # type: ignore[type-arg]
    key = window.key
    names, values = _pack_metrics(metrics)
    start, end = key.start.isoformat(), key.end.isoformat()
    series = (spec.name, key.model_name, key.model_version, key.variant, window.position)
    return (*series, start, end, window.summary.rows, pack(window.summary), names, values, now)


def _pack_metrics(values: list[MetricValue]) -> tuple[str, bytes]:
    """Names as JSON ``[[metric, subject], ...]``; value, lower and upper as float64 (NaN:
    None, which is all a metric stores that is not a finite number)."""
    names = json.dumps([[v.metric, v.subject] for v in values], separators=(",", ":"))
    numbers = np.array(
        [[v.value for v in values], [v.lower for v in values], [v.upper for v in values]],
        dtype=np.float64,
    )
    return names, numbers.tobytes()


def _unpack_metrics(key: WindowKey, names: str, data: bytes) -> list[MetricValue]:
    pairs = json.loads(names)
    numbers = np.frombuffer(data, dtype=np.float64).reshape(3, len(pairs))
    columns = [[None if x != x else x for x in row] for row in numbers.tolist()]
    return [
        MetricValue(key, metric, subject, value, lower, upper)
        for (metric, subject), value, lower, upper in zip(pairs, *columns, strict=True)
    ]


def _key(name: str, version: str, variant: str, start: str, end: str) -> WindowKey:
    return WindowKey(
        datetime.fromisoformat(start), datetime.fromisoformat(end), name, version, variant
    )
