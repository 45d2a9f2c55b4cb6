"""Where monitoring keeps what it computed: each window's summary and its metric values, in a
SQLite file next to the archive (WAL: the dashboard reads while a pass writes).

A pass replaces the summaries and metrics of the windows it summarised again and reads the
others' metrics back as they were, so the cost of a pass follows what changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlprod.errors import MonitorError
from mlprod.monitor.summary import WindowSummary
from mlprod.monitor.values import MetricValue, WindowKey
from mlprod.monitor.windows import Window, WindowSpec

_DDL = (
    """CREATE TABLE IF NOT EXISTS windows (
        spec TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
        variant TEXT NOT NULL, position INTEGER NOT NULL, start TEXT NOT NULL,
        end_ TEXT NOT NULL, rows_ INTEGER NOT NULL, summary TEXT NOT NULL,
        computed_at TEXT NOT NULL,
        PRIMARY KEY (spec, model_name, model_version, variant, position))""",
    """CREATE TABLE IF NOT EXISTS metrics (
        spec TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
        variant TEXT NOT NULL, position INTEGER NOT NULL, start TEXT NOT NULL,
        end_ TEXT NOT NULL, metric TEXT NOT NULL, subject TEXT NOT NULL, value REAL,
        lower REAL, upper REAL)""",
    """CREATE INDEX IF NOT EXISTS metrics_window
        ON metrics (spec, model_name, model_version, variant, position)""",
)
_WINDOW = "spec = ? AND model_name = ? AND model_version = ? AND variant = ? AND position = ?"


class MonitorStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA busy_timeout = 10000")
            for statement in _DDL:
                self._conn.execute(statement)
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
        position = {w.key: w.position for w in windows}
        with self._write() as conn:
            conn.executemany(
                f"DELETE FROM metrics WHERE {_WINDOW}",
                [(spec.name, *_series(w.key), w.position) for w in windows],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        spec.name,
                        *_series(w.key),
                        w.position,
                        w.key.start.isoformat(),
                        w.key.end.isoformat(),
                        w.summary.rows,
                        json.dumps(w.summary.to_dict(), separators=(",", ":")),
                        now,
                    )
                    for w in windows
                ],
            )
            conn.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        spec.name,
                        *_series(m.window),
                        position[m.window],
                        m.window.start.isoformat(),
                        m.window.end.isoformat(),
                        m.metric,
                        m.subject,
                        m.value,
                        m.lower,
                        m.upper,
                    )
                    for m in metrics
                ],
            )

    def metrics(self, spec: WindowSpec, since: datetime | None = None) -> list[MetricValue]:
        """Every stored metric of windows ending after ``since``, by window start."""
        rows = self._conn.execute(
            "SELECT model_name, model_version, variant, start, end_, metric, subject, value, "
            "lower, upper FROM metrics WHERE spec = ? AND end_ > ? ORDER BY start, rowid",
            (spec.name, "" if since is None else since.isoformat()),
        ).fetchall()
        keys: dict[tuple[str, ...], WindowKey] = {}
        out = []
        for name, version, variant, start, end, metric, subject, value, lower, upper in rows:
            key = keys.get((name, version, variant, start))
            if key is None:
                key = _key(name, version, variant, start, end)
                keys[(name, version, variant, start)] = key
            out.append(MetricValue(key, metric, subject, value, lower, upper))
        return out

    def keys(self, spec: WindowSpec) -> list[tuple[WindowKey, int]]:
        """Every stored window and its row count, by start."""
        rows = self._conn.execute(
            "SELECT model_name, model_version, variant, start, end_, rows_ FROM windows "
            "WHERE spec = ? ORDER BY start",
            (spec.name,),
        ).fetchall()
        return [
            (
                _key(name, version, variant, start, end),
                count,
            )
            for name, version, variant, start, end, count in rows
        ]

    def windows(self, spec: WindowSpec, since: datetime | None = None) -> list[Window]:
        """Stored summaries of windows ending after ``since``, by start."""
        rows = self._conn.execute(
            "SELECT model_name, model_version, variant, position, start, end_, summary "
            "FROM windows WHERE spec = ? AND end_ > ? ORDER BY start",
            (spec.name, "" if since is None else since.isoformat()),
        ).fetchall()
        return [
            Window(
                _key(name, version, variant, start, end),
                position,
                WindowSummary.from_dict(json.loads(summary)),
            )
            for name, version, variant, position, start, end, summary in rows
        ]

    def clear(self, spec: WindowSpec) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM windows WHERE spec = ?", (spec.name,))
            conn.execute("DELETE FROM metrics WHERE spec = ?", (spec.name,))

    def close(self) -> None:
        self._conn.close()


def _key(name: str, version: str, variant: str, start: str, end: str) -> WindowKey:
    return WindowKey(
        datetime.fromisoformat(start), datetime.fromisoformat(end), name, version, variant
    )


def _series(key: WindowKey) -> tuple[str, str, str]:
    return key.model_name, key.model_version, key.variant
