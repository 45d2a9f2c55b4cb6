"""The two databases the routing store lives in, behind one small interface: the prediction
log's SQLite file, or its PostgreSQL schema.

Statements are written once with ``{policies}``, ``{rollouts}`` and ``{audit}`` for the table
names and ``%s`` for parameters; each backend fills in its table names (quoted identifiers in
the configured schema, for PostgreSQL) and its placeholder. Values are always parameters.
Writes hold the database's write lock for their whole transaction: SQLite's ``BEGIN
IMMEDIATE``, a PostgreSQL advisory transaction lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg import sql

from mlprod.data.postgres import redact
from mlprod.errors import RolloutError

POLICIES = "mlprod_routing_policies"
ROLLOUTS = "mlprod_rollouts"
AUDIT = "mlprod_admin_audit"

_SQLITE_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {POLICIES} (revision INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL, actor TEXT NOT NULL, policy TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {ROLLOUTS} (rollout_id INTEGER PRIMARY KEY,
        experiment TEXT NOT NULL, challenger TEXT NOT NULL, control TEXT NOT NULL,
        base TEXT NOT NULL, steps TEXT NOT NULL, every_s REAL NOT NULL,
        guardrails TEXT NOT NULL, step INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT,
        measures TEXT NOT NULL, started_at TEXT NOT NULL, step_started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, version INTEGER NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {AUDIT} (audit_id INTEGER PRIMARY KEY, at TEXT NOT NULL,
        actor TEXT NOT NULL, peer TEXT, action TEXT NOT NULL, detail TEXT NOT NULL)""",
)
_PG_DDL: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS {policies} (revision integer PRIMARY KEY,
        created_at timestamp NOT NULL, actor text NOT NULL, policy text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {rollouts} (
        rollout_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        experiment text NOT NULL, challenger text NOT NULL, control text NOT NULL,
        base text NOT NULL, steps text NOT NULL, every_s double precision NOT NULL,
        guardrails text NOT NULL, step integer NOT NULL, status text NOT NULL, reason text,
        measures text NOT NULL, started_at timestamp NOT NULL,
        step_started_at timestamp NOT NULL, updated_at timestamp NOT NULL,
        version integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {audit} (
        audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamp NOT NULL,
        actor text NOT NULL, peer text, action text NOT NULL, detail text NOT NULL)""",
)


Run = Callable[[LiteralString, Sequence[Any]], list[tuple[Any, ...]]]


class Database(Protocol):
    """Reads, and write transactions that hold the database's write lock."""

    where: str  # for messages: the file, or the redacted URL and schema

    def read(self, query: LiteralString, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def write(self) -> AbstractContextManager[Run]: ...

    def close(self) -> None: ...


_BUSY_MS = 10_000


class SqliteDatabase:
    """The store in the log's SQLite file: one connection, used under a lock (the store is
    called about once a second, not per request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._errors("opening"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("opening"), self._locked() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SQLITE_DDL:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

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
                self._conn.execute("PRAGMA synchronous = NORMAL")
            yield self._conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise RolloutError(
                f"{action} the routing state in {self.path} failed: {exc}; check that the "
                "folder is writable and the disk not full"
            ) from None

    @staticmethod
    def _query(template: LiteralString) -> str:
        return template.format(policies=POLICIES, rollouts=ROLLOUTS, audit=AUDIT).replace("%s", "?")

    def read(self, query: LiteralString, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors("reading"), self._locked() as conn:
            return conn.execute(self._query(query), _sqlite_params(params)).fetchall()

    @contextmanager
    def write(self) -> Iterator[Run]:
        with self._errors("writing"), self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:

                def run(query: LiteralString, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    return conn.execute(self._query(query), _sqlite_params(params)).fetchall()

                yield run
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


def _sqlite_params(params: Sequence[Any]) -> list[Any]:
    return [
        p.isoformat(sep=" ", timespec="microseconds") if isinstance(p, datetime) else p
        for p in params
    ]


class PostgresDatabase:
    """The store in the log's PostgreSQL schema: one autocommit connection under a lock,
    replaced when it breaks (the server restarted)."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.where = f"{redact(url)} (schema '{schema}')"
        self._names = {
            "policies": sql.Identifier(schema, POLICIES),
            "rollouts": sql.Identifier(schema, ROLLOUTS),
            "audit": sql.Identifier(schema, AUDIT),
        }
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        with self.write() as run:  # under the write lock: servers starting together wait
            for statement in (
                "CREATE SCHEMA IF NOT EXISTS {schema}",
                *_PG_DDL,
            ):
                run(statement, ())

    def _q(self, template: LiteralString) -> sql.Composed:
        return sql.SQL(template).format(**self._names, schema=sql.Identifier(self.schema))

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            options: dict[str, Any] = {"autocommit": True, "application_name": "mlprod-routing"}
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
            raise RolloutError(
                f"{action} the routing state in PostgreSQL at {self.where} failed: {reason}"
            ) from None

    def read(self, query: LiteralString, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors("reading"), self._lock:
            try:
                return self._connection().execute(self._q(query), params).fetchall()
            except psycopg.OperationalError:  # a connection the server dropped: once more
                self._discard()
                return self._connection().execute(self._q(query), params).fetchall()

    @contextmanager
    def write(self) -> Iterator[Run]:
        with self._errors("writing"), self._lock, ExitStack() as stack:
            try:
                conn = self._connection()
                stack.enter_context(conn.transaction())
            except psycopg.OperationalError:  # dead since its last use; nothing was sent yet
                self._discard()
                conn = self._connection()
                stack.enter_context(conn.transaction())
            cur = stack.enter_context(conn.cursor())
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlprod-routing:{self.schema}",)
            )

            def run(query: LiteralString, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cur.execute(self._q(query), params)
                return cur.fetchall() if cur.description is not None else []

            yield run

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
