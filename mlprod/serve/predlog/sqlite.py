"""``SqlitePredictionLog`` (the embedded default): one SQLite file in WAL mode, so the CLI or the
monitoring can read while the server writes.

``synchronous=NORMAL``: a commit is in the WAL file (the OS page cache) when ``append`` returns,
which survives the death of the process; only a power cut or kernel crash can lose the last
commits. ``FULL`` would fsync each commit too: measured (2026-11) at 0.5-5 ms per single append
against 0.15 ms, it would serialise the server's writes behind the disk, so setups that must
survive power loss use PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlprod.errors import PredictionLogError
from mlprod.serve.predlog._shared import (
    _COLUMN_COUNT,
    _COLUMNS,
    _ERROR_COLUMNS,
    _MONITOR_COLUMNS,
    _V2_COLUMNS,
    FEEDBACK,
    MONITOR_LABELS_SCHEMA,
    MONITOR_ROWS_SCHEMA,
    PREDICTIONS,
    SCHEMA_VERSION,
    SCORING_ERRORS,
    SCORING_ERRORS_SCHEMA,
    Feedback,
    FeedbackResult,
    PredictionRecord,
    ScoringError,
    _duplicate_message,
    _error_row,
    _filters,
    _newer_schema,
    _PerThread,
    _plan_feedback,
    _record_row,
    _table,
    _utc_naive,
    canonical_keys,
)

_BUSY_MS = 10_000
_SQLITE_DDL = (
    f"""CREATE TABLE {PREDICTIONS} (
        prediction_id TEXT PRIMARY KEY, predicted_at TEXT NOT NULL,
        prediction_time TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
        keys_json TEXT NOT NULL, keys TEXT NOT NULL, request TEXT NOT NULL,
        features TEXT NOT NULL, score REAL NOT NULL, decision INTEGER NOT NULL,
        source TEXT NOT NULL)""",
    f"CREATE INDEX {PREDICTIONS}_keys ON {PREDICTIONS} (keys_json, prediction_time)",
    f"CREATE INDEX {PREDICTIONS}_time ON {PREDICTIONS} (predicted_at)",
    f"CREATE INDEX {PREDICTIONS}_model_time ON {PREDICTIONS} (model_name, predicted_at)",
    f"""CREATE TABLE {FEEDBACK} (
        feedback_id INTEGER PRIMARY KEY,
        prediction_id TEXT NOT NULL REFERENCES {PREDICTIONS} (prediction_id),
        label INTEGER NOT NULL, observed_at TEXT NOT NULL, received_at TEXT NOT NULL,
        source TEXT NOT NULL, UNIQUE (prediction_id, label, observed_at))""",
)
# Version 1 -> 2: the experiment columns and the scoring errors (also part of a new log).
_SQLITE_V2 = (
    *(f"ALTER TABLE {PREDICTIONS} ADD COLUMN {name} {kind}" for name, kind, _ in _V2_COLUMNS),
    f"CREATE INDEX {PREDICTIONS}_experiment ON {PREDICTIONS} (experiment, predicted_at)",
    f"""CREATE TABLE {SCORING_ERRORS} (
        error_id INTEGER PRIMARY KEY, at TEXT NOT NULL, experiment TEXT, variant TEXT,
        model_name TEXT NOT NULL, model_version TEXT NOT NULL, message TEXT NOT NULL)""",
    f"CREATE INDEX {SCORING_ERRORS}_at ON {SCORING_ERRORS} (at)",
)
_SQLITE_SELECT = f"""SELECT p.prediction_id, p.predicted_at, p.prediction_time, p.model_name,
    p.model_version, p.keys, p.request, p.features, p.score, p.decision, p.source,
    f.label, f.observed_at, f.source,
    p.experiment, p.variant, p.assignment, p.served, p.latency_ms
FROM {PREDICTIONS} AS p LEFT JOIN {FEEDBACK} AS f ON f.feedback_id = (
    SELECT feedback_id FROM {FEEDBACK} WHERE prediction_id = p.prediction_id
    ORDER BY observed_at DESC, feedback_id DESC LIMIT 1)"""


def _text_time(value: datetime) -> str:
    """Fixed-width ISO text, so that text order is time order and equality is exact."""
    return value.isoformat(sep=" ", timespec="microseconds")


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqlitePredictionLog:
    """The log in one SQLite file, WAL mode, ``synchronous=NORMAL`` (survives a killed process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conns = _PerThread(self._connect, sqlite3.Connection.close)
        with self._errors("opening"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conns.get()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise PredictionLogError(
                    f"the prediction log at {self.path} cannot use WAL mode (found "
                    f"journal_mode '{mode}'); put it on a local disk"
                )
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise _newer_schema(str(self.path), version)
                if version == 0:
                    for statement in _SQLITE_DDL:
                        conn.execute(statement)
                if version < 2:
                    for statement in _SQLITE_V2:
                        conn.execute(statement)
                if version < SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise PredictionLogError(_duplicate_message(str(self.path))) from None
        except (sqlite3.Error, OSError) as exc:
            raise PredictionLogError(
                f"{action} the prediction log at {self.path} failed: {exc}; check that the "
                "folder is writable and the disk not full"
            ) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock first, so busy_timeout applies."""
        conn = self._conns.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def append(self, records: Sequence[PredictionRecord]) -> None:
        rows = [_sqlite_row(record) for record in records]
        with self._errors("writing to"), self._write() as conn:
            conn.executemany(
                f"INSERT INTO {PREDICTIONS} ({_COLUMNS}) VALUES ({', '.join('?' * _COLUMN_COUNT)})",
                rows,
            )

    def add_feedback(self, feedback: Sequence[Feedback]) -> FeedbackResult:
        with self._errors("writing feedback to"), self._write() as conn:
            matches = [self._match(conn, item) for item in feedback]
            history: dict[str, list[tuple[bool, datetime]]] = {}
            for pid in {pid for found in matches for pid in found}:
                rows = conn.execute(
                    f"SELECT label, observed_at FROM {FEEDBACK} WHERE prediction_id = ? "
                    "ORDER BY observed_at, feedback_id",
                    (pid,),
                )
                history[pid] = [(bool(label), datetime.fromisoformat(at)) for label, at in rows]
            new, result = _plan_feedback(feedback, matches, history)
            conn.executemany(
                f"INSERT OR IGNORE INTO {FEEDBACK} "
                "(prediction_id, label, observed_at, received_at, source) VALUES (?, ?, ?, ?, ?)",
                [(p, int(lb), _text_time(o), _text_time(r), s) for p, lb, o, r, s in new],
            )
        return result

    @staticmethod
    def _match(conn: sqlite3.Connection, item: Feedback) -> list[str]:
        if item.prediction_id is not None:
            query = f"SELECT prediction_id FROM {PREDICTIONS} WHERE prediction_id = ?"
            params: tuple[str, ...] = (item.prediction_id,)
        else:
            assert item.keys is not None and item.prediction_time is not None
            query = (
                f"SELECT prediction_id FROM {PREDICTIONS} "
                "WHERE keys_json = ? AND prediction_time = ? ORDER BY prediction_id"
            )
            params = (canonical_keys(item.keys), _text_time(_utc_naive(item.prediction_time)))
        return [row[0] for row in conn.execute(query, params)]

    def predictions(
        self,
        *,
        model_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        experiment: str | None = None,
    ) -> pa.Table:
        where, params = _filters(model_name, since, "?", _text_time, experiment)
        query = (
            f"{_SQLITE_SELECT} WHERE {where} "
            "ORDER BY p.predicted_at DESC, p.prediction_id DESC LIMIT ?"
        )
        with self._errors("reading"):
            rows = self._conns.get().execute(query, [*params, -1 if limit is None else limit])
            converted = [
                (
                    *row[:1],
                    _parse_time(row[1]),
                    _parse_time(row[2]),
                    *row[3:9],
                    bool(row[9]),
                    row[10],
                    None if row[11] is None else bool(row[11]),
                    _parse_time(row[12]),
                    *row[13:17],
                    bool(row[17]),
                    row[18],
                )
                for row in rows
            ]
        return _table(reversed(converted))

    def count(self) -> int:
        with self._errors("reading"):
            found: int = (
                self._conns.get().execute(f"SELECT count(*) FROM {PREDICTIONS}").fetchone()[0]
            )
        return found

    def record_error(self, error: ScoringError) -> None:
        at, *rest = _error_row(error)
        with self._errors("writing a scoring error to"), self._write() as conn:
            conn.execute(
                f"INSERT INTO {SCORING_ERRORS} ({_ERROR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (_text_time(at), *rest),
            )

    def scoring_errors(self, since: datetime | None = None) -> pa.Table:
        query = f"SELECT {_ERROR_COLUMNS} FROM {SCORING_ERRORS} WHERE at >= ? ORDER BY at, error_id"
        start = "" if since is None else _text_time(_utc_naive(since))
        with self._errors("reading"):
            rows = self._conns.get().execute(query, (start,)).fetchall()
        return _table(((_parse_time(at), *rest) for at, *rest in rows), SCORING_ERRORS_SCHEMA)

    def monitor_rows(self, after: int, limit: int) -> pa.Table:
        """By rowid: one writer at a time stores rows, so rowids become visible in order."""
        query = (
            f"SELECT rowid, {_MONITOR_COLUMNS} FROM {PREDICTIONS} WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        with self._errors("reading"):
            rows = self._conns.get().execute(query, (after, limit)).fetchall()
        return _columns(rows, MONITOR_ROWS_SCHEMA, times=(2, 3), flags=(7, 9))

    def monitor_labels(self, after: int, limit: int) -> pa.Table:
        query = (
            "SELECT f.feedback_id, f.prediction_id, f.label, f.observed_at, p.rowid, "
            f"p.model_name, p.model_version, p.prediction_time FROM {FEEDBACK} AS f "
            f"JOIN {PREDICTIONS} AS p ON p.prediction_id = f.prediction_id "
            "WHERE f.feedback_id > ? ORDER BY f.feedback_id LIMIT ?"
        )
        with self._errors("reading"):
            rows = self._conns.get().execute(query, (after, limit)).fetchall()
        return _columns(rows, MONITOR_LABELS_SCHEMA, times=(3, 7), flags=(2,))

    def ping(self) -> None:
        with self._errors("reading"):
            self._conns.get().execute("SELECT count(*) FROM sqlite_master").fetchone()

    def close(self) -> None:
        self._conns.close_all()


def _columns(
    rows: list[tuple[Any, ...]], schema: pa.Schema, times: tuple[int, ...], flags: tuple[int, ...]
) -> pa.Table:
    """Rows as an Arrow table, column by column: ISO text to timestamps, 0/1 to booleans."""
    columns = list(zip(*rows, strict=True)) or [()] * len(schema)
    arrays = []
    for index, (values, target) in enumerate(zip(columns, schema, strict=True)):
        if index in times:
            arrays.append(pa.array(values, pa.string()).cast(target.type))
        elif index in flags:
            arrays.append(pa.array(values, pa.int64()).cast(pa.bool_()))
        else:
            arrays.append(pa.array(values, target.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _sqlite_row(record: PredictionRecord) -> tuple[Any, ...]:
    row = _record_row(record)
    return (
        row[0],
        _text_time(row[1]),
        _text_time(row[2]),
        *row[3:10],
        int(row[10]),
        *row[11:15],
        int(row[15]),
        row[16],
    )
