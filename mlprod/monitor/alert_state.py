"""What each alert has seen so far, kept across runs so that an alert fires once, resolves
once, and counts every closed window exactly once however often the monitor runs.

One row per rule x subject x model version x variant, in the project's own database: a SQLite
file in the store (``<store>/monitor/alerts.sqlite``), or the prediction log's PostgreSQL
schema when the log lives there, so that every server and ``mlprod watch`` share one state.
A run reads and rewrites the states under the database's write lock (SQLite's ``BEGIN
IMMEDIATE``, a PostgreSQL advisory transaction lock), so two monitors running at once cannot
both send the same transition. Values are always parameters; the only identifier, the
PostgreSQL schema, comes validated from the config and is quoted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, LiteralString, NamedTuple, Protocol

import psycopg
from psycopg import sql

from mlprod.data.postgres import redact
from mlprod.errors import MonitorError

if TYPE_CHECKING:
    from mlprod.project.config import ProjectConfig

Status = Literal["ok", "firing", "resolved"]
TABLE = "mlprod_alert_states"
_COLUMNS = (
    "rule, subject, model_name, model_version, variant, severity, status, consecutive, "
    "counted_until, fired_at, resolved_at, value, updated_at"
)
_KEY = "rule, subject, model_name, model_version, variant"
_SELECT: LiteralString = f"SELECT {_COLUMNS} FROM {{table}}"
_UPSERT: LiteralString = (
    f"INSERT INTO {{table}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    f"%s, %s) ON CONFLICT ({_KEY}) DO UPDATE SET severity = excluded.severity, "
    "status = excluded.status, consecutive = excluded.consecutive, "
    "counted_until = excluded.counted_until, fired_at = excluded.fired_at, "
    "resolved_at = excluded.resolved_at, value = excluded.value, "
    "updated_at = excluded.updated_at"
)
_SQLITE_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (rule TEXT NOT NULL, subject TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, variant TEXT NOT NULL,
    severity TEXT NOT NULL, status TEXT NOT NULL, consecutive INTEGER NOT NULL,
    counted_until TEXT, fired_at TEXT, resolved_at TEXT, value REAL, updated_at TEXT NOT NULL,
    PRIMARY KEY ({_KEY}))"""
_PG_DDL: LiteralString = f"""CREATE TABLE IF NOT EXISTS {{table}} (rule text NOT NULL,
    subject text NOT NULL, model_name text NOT NULL, model_version text NOT NULL,
    variant text NOT NULL, severity text NOT NULL, status text NOT NULL,
    consecutive integer NOT NULL, counted_until timestamp, fired_at timestamp,
    resolved_at timestamp, value double precision, updated_at timestamp NOT NULL,
    PRIMARY KEY ({_KEY}))"""


class AlertKey(NamedTuple):
    """What one alert is about: a rule on one subject of one model version and variant."""

    rule: str
    subject: str  # a feature name, or "model"
    model_name: str
    model_version: str
    variant: str


@dataclass(frozen=True)
class AlertState:
    """Where one alert stands, and the last closed window it counted."""

    rule: str
    subject: str
    model_name: str
    model_version: str
    variant: str
    severity: str
    status: Status = "ok"
    consecutive: int = 0  # closed windows in a row past the threshold
    counted_until: datetime | None = None  # end of the last closed window counted (naive UTC)
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None  # the metric in the last window counted

    @property
    def key(self) -> AlertKey:
        return AlertKey(self.rule, self.subject, self.model_name, self.model_version, self.variant)

    def to_dict(self) -> dict[str, Any]:
        def stamp(at: datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        return {
            "rule": self.rule,
            "subject": self.subject,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "variant": self.variant,
            "severity": self.severity,
            "status": self.status,
            "consecutive": self.consecutive,
            "counted_until": stamp(self.counted_until),
            "fired_at": stamp(self.fired_at),
            "resolved_at": stamp(self.resolved_at),
            "value": self.value,
        }


class AlertStateStore(Protocol):
    """The alert states of a project, read and changed under the database's write lock."""

    where: str  # for messages: the file, or the redacted URL and schema

    def states(self) -> list[AlertState]:
        """Every state stored, in key order."""
        ...

    def changing(self) -> AbstractContextManager[dict[AlertKey, AlertState]]:
        """Every state by key, under the write lock; the states added or changed in the
        mapping are written when the block ends without an error."""
        ...

    def close(self) -> None: ...


def open_alert_store(config: ProjectConfig, project_dir: Path) -> AlertStateStore:
    """The alert store of a project: in the log's PostgreSQL schema when the log is there,
    else in ``<store>/monitor/alerts.sqlite``."""
    log = config.log
    if log.kind == "postgres":
        if not log.url:  # the config refuses this; kept for configs built in code
            raise MonitorError("log.kind is 'postgres' but log.url is missing")
        return PostgresAlertStore(log.url, log.schema_)
    return SqliteAlertStore(Path(project_dir) / config.store / "monitor" / "alerts.sqlite")


def _row(state: AlertState, now: datetime) -> tuple[Any, ...]:
    return (
        *state.key,
        state.severity,
        state.status,
        state.consecutive,
        state.counted_until,
        state.fired_at,
        state.resolved_at,
        state.value,
        now,
    )


def _state(row: Sequence[Any], parse: bool) -> AlertState:
    def at(value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value) if parse else value  # type: ignore[no-any-return]

    rule, subject, name, version, variant, severity, status, consecutive = row[:8]
    counted_until, fired_at, resolved_at, value = row[8:12]
    return AlertState(
        rule=rule,
        subject=subject,
        model_name=name,
        model_version=version,
        variant=variant,
        severity=severity,
        status=status,
        consecutive=int(consecutive),
        counted_until=at(counted_until),
        fired_at=at(fired_at),
        resolved_at=at(resolved_at),
        value=None if value is None else float(value),
    )


def _changed(before: dict[AlertKey, AlertState], after: dict[AlertKey, AlertState]) -> list[Any]:
    return [state for key, state in sorted(after.items()) if before.get(key) != state]


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


_BUSY_MS = 10_000


class SqliteAlertStore:
    """The states in a SQLite file of their own (WAL, so readers never wait for a run)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._errors("opening"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked() as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(_SQLITE_DDL)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self.path,
                    timeout=_BUSY_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            yield self._conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise MonitorError(
                f"{action} the alert state in {self.path} failed: {exc}; check that the "
                "folder is writable and the disk not full"
            ) from None

    @staticmethod
    def _sql(template: LiteralString) -> str:
        return template.format(table=TABLE).replace("%s", "?")

    @staticmethod
    def _params(row: tuple[Any, ...]) -> list[Any]:
        return [v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row]

    def states(self) -> list[AlertState]:
        with self._errors("reading"), self._locked() as conn:
            rows = conn.execute(self._sql(_SELECT)).fetchall()
        return sorted((_state(row, parse=True) for row in rows), key=lambda s: s.key)

    @contextmanager
    def changing(self) -> Iterator[dict[AlertKey, AlertState]]:
        with self._errors("writing"), self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(self._sql(_SELECT)).fetchall()
                before = {s.key: s for s in (_state(row, parse=True) for row in rows)}
                after = dict(before)
                yield after
                now = _utcnow()
                for state in _changed(before, after):
                    conn.execute(self._sql(_UPSERT), self._params(_row(state, now)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresAlertStore:
    """The states in the log's PostgreSQL schema: one autocommit connection under a lock,
    replaced when it breaks (the server restarted)."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.where = f"{redact(url)} (schema '{schema}')"
        self._table = sql.Identifier(schema, TABLE)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        with self._errors("opening"), self._transaction() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(self._sql(_PG_DDL))

    def _sql(self, template: LiteralString) -> sql.Composed:
        return sql.SQL(template).format(table=self._table)

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            options: dict[str, Any] = {"autocommit": True, "application_name": "mlprod-monitor"}
            if "connect_timeout" not in self.url:
                options["connect_timeout"] = 5
            self._conn = psycopg.connect(self.url, **options)
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._discard()  # maybe broken: the next call connects again
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MonitorError(
                f"{action} the alert state in PostgreSQL at {self.where} failed: {reason}"
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A transaction holding the store's advisory lock; a connection found dead before
        anything was sent is replaced once."""
        with self._lock, ExitStack() as stack:
            try:
                conn = self._connection()
                stack.enter_context(conn.transaction())
            except psycopg.OperationalError:
                self._discard()
                conn = self._connection()
                stack.enter_context(conn.transaction())
            cur = stack.enter_context(conn.cursor())
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlprod-alerts:{self.schema}",)
            )
            yield cur

    def states(self) -> list[AlertState]:
        with self._errors("reading"), self._transaction() as cur:
            rows = cur.execute(self._sql(_SELECT)).fetchall()
        return sorted((_state(row, parse=False) for row in rows), key=lambda s: s.key)

    @contextmanager
    def changing(self) -> Iterator[dict[AlertKey, AlertState]]:
        with self._errors("writing"), self._transaction() as cur:
            rows = cur.execute(self._sql(_SELECT)).fetchall()
            before = {s.key: s for s in (_state(row, parse=False) for row in rows)}
            after = dict(before)
            yield after
            now = _utcnow()
            changed = [_row(state, now) for state in _changed(before, after)]
            if changed:
                cur.executemany(self._sql(_UPSERT), changed)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
