"""``PostgresPredictionLog``: two tables in a configurable schema, one autocommit connection per
thread; a commit returns after PostgreSQL made it durable (``synchronous_commit``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, LiteralString

import psycopg
import pyarrow as pa
from psycopg import sql

from mlprod.data.postgres import redact
from mlprod.errors import PredictionLogError
from mlprod.serve.predlog._shared import (
    _COLUMNS,
    _ERROR_COLUMNS,
    _MONITOR_COLUMNS,
    _V2_COLUMNS,
    FEEDBACK,
    META,
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

_CONNECT_TIMEOUT_S = 5
_PG_DDL = (
    """CREATE TABLE IF NOT EXISTS {p} (
        prediction_id text PRIMARY KEY, predicted_at timestamp NOT NULL,
        prediction_time timestamp NOT NULL, model_name text NOT NULL,
        model_version text NOT NULL, keys_json text NOT NULL, keys jsonb NOT NULL,
        request jsonb NOT NULL, features jsonb NOT NULL, score double precision NOT NULL,
        decision boolean NOT NULL, source text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS mlprod_predictions_keys ON {p} (keys_json, prediction_time)",
    "CREATE INDEX IF NOT EXISTS mlprod_predictions_time ON {p} (predicted_at)",
    "CREATE INDEX IF NOT EXISTS mlprod_predictions_model_time ON {p} (model_name, predicted_at)",
    """CREATE TABLE IF NOT EXISTS {f} (
        feedback_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        prediction_id text NOT NULL REFERENCES {p} (prediction_id),
        label boolean NOT NULL, observed_at timestamp NOT NULL,
        received_at timestamp NOT NULL, source text NOT NULL,
        UNIQUE (prediction_id, label, observed_at))""",
    "CREATE TABLE IF NOT EXISTS {m} (schema_version integer NOT NULL)",
)
# Version 1 -> 2: the experiment columns and the scoring errors (also part of a new log).
_PG_V2 = (
    *(f"ALTER TABLE {{p}} ADD COLUMN IF NOT EXISTS {name} {kind}" for name, _, kind in _V2_COLUMNS),
    "CREATE INDEX IF NOT EXISTS mlprod_predictions_experiment ON {p} (experiment, predicted_at)",
    """CREATE TABLE IF NOT EXISTS {e} (
        error_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamp NOT NULL,
        experiment text, variant text, model_name text NOT NULL, model_version text NOT NULL,
        message text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS mlprod_scoring_errors_at ON {e} (at)",
)
# Monitoring reads new rows by their storage order; added to any log when opened.
_PG_SEQ = (
    "ALTER TABLE {p} ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY",
    "CREATE INDEX IF NOT EXISTS mlprod_predictions_seq ON {p} (seq)",
)
# Rows younger than this (by predicted_at, against the database clock) wait for the next read,
# so that a row stored by a transaction still in flight is not skipped when the cursor passes it.
_SETTLE_SECONDS = 5.0
_PG_MONITOR_ROWS = f"""SELECT seq, {_MONITOR_COLUMNS.replace("features", "features::text")}
FROM {{p}} WHERE seq > %s AND predicted_at <= (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)
ORDER BY seq LIMIT %s"""
_PG_MONITOR_LABELS = """SELECT f.feedback_id, f.prediction_id, f.label, f.observed_at, p.seq,
    p.model_name, p.model_version, p.prediction_time
FROM {f} AS f JOIN {p} AS p ON p.prediction_id = f.prediction_id
WHERE f.feedback_id > %s ORDER BY f.feedback_id LIMIT %s"""
_PG_INSERT = (
    f"INSERT INTO {{p}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, "
    "%s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_PG_ERRORS = f"""SELECT {_ERROR_COLUMNS} FROM {{e}}
WHERE %s::timestamp IS NULL OR at >= %s::timestamp ORDER BY at, error_id"""
_PG_MATCH = """SELECT i, p.prediction_id FROM unnest(%s::int[], %s::text[]) AS f (i, pid)
    JOIN {p} AS p ON p.prediction_id = f.pid
UNION ALL
SELECT i, p.prediction_id FROM unnest(%s::int[], %s::text[], %s::timestamp[]) AS f (i, kj, pt)
    JOIN {p} AS p ON p.keys_json = f.kj AND p.prediction_time = f.pt
ORDER BY 1, 2"""
_PG_LOCK = "SELECT FROM {p} WHERE prediction_id = ANY(%s) ORDER BY prediction_id FOR UPDATE"
_PG_HISTORY = """SELECT prediction_id, label, observed_at FROM {f}
WHERE prediction_id = ANY(%s) ORDER BY observed_at, feedback_id"""
_PG_FEEDBACK_INSERT = """INSERT INTO {f} (prediction_id, label, observed_at, received_at, source)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""
_PG_SELECT = """SELECT p.prediction_id, p.predicted_at, p.prediction_time, p.model_name,
    p.model_version, p.keys::text, p.request::text, p.features::text, p.score, p.decision,
    p.source, f.label, f.observed_at, f.source,
    p.experiment, p.variant, p.assignment, p.served, p.latency_ms
FROM {p} AS p LEFT JOIN LATERAL (
    SELECT label, observed_at, source FROM {f} WHERE prediction_id = p.prediction_id
    ORDER BY observed_at DESC, feedback_id DESC LIMIT 1) AS f ON TRUE
WHERE {where}
ORDER BY p.predicted_at DESC, p.prediction_id DESC LIMIT %s"""


class PostgresPredictionLog:
    """The log in PostgreSQL: one autocommit connection per thread, parameterised statements."""

    settle_seconds: float = _SETTLE_SECONDS  # see _SETTLE_SECONDS

    def __init__(self, url: str, schema: str = "public") -> None:
        self.url, self.schema = url, schema
        self._names = {
            "p": sql.Identifier(schema, PREDICTIONS),
            "f": sql.Identifier(schema, FEEDBACK),
            "m": sql.Identifier(schema, META),
            "e": sql.Identifier(schema, SCORING_ERRORS),
        }
        self._conns = _PerThread(
            self._connect, lambda conn: conn.close(), lambda conn: not conn.closed
        )
        with self._errors("creating the tables of"):
            self._create_tables()

    def _q(self, template: LiteralString, **parts: sql.Composable) -> sql.Composed:
        """A statement from a constant template, with the log's table names quoted in."""
        return sql.SQL(template).format(**self._names, **parts)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        options: dict[str, Any] = {"autocommit": True, "application_name": "mlprod"}
        if "connect_timeout" not in self.url:
            options["connect_timeout"] = _CONNECT_TIMEOUT_S
        try:
            return psycopg.connect(self.url, **options)
        except psycopg.Error as exc:
            raise PredictionLogError(
                f"cannot reach the prediction log in PostgreSQL at {redact(self.url)}: "
                f"{_pg_reason(exc)}; check that the server is running and that log.url is right"
            ) from None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.UniqueViolation:
            raise PredictionLogError(
                _duplicate_message(f"{redact(self.url)} (schema '{self.schema}')")
            ) from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._conns.discard()  # maybe broken: the next call connects again
            raise PredictionLogError(
                f"{action} the prediction log in PostgreSQL at {redact(self.url)} "
                f"(schema '{self.schema}') failed: {_pg_reason(exc)}"
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A transaction on this thread's connection. A connection found dead at BEGIN (the
        server restarted since its last use) is replaced once: nothing was sent on it yet."""
        with ExitStack() as stack:
            try:
                conn = self._conns.get()
                stack.enter_context(conn.transaction())
            except psycopg.OperationalError:
                self._conns.discard()
                conn = self._conns.get()
                stack.enter_context(conn.transaction())
            yield stack.enter_context(conn.cursor())

    def _read(
        self, query: sql.SQL | sql.Composed, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, retried once on a new connection if the old one died."""
        try:
            return self._conns.get().execute(query, params).fetchall()
        except psycopg.OperationalError:
            self._conns.discard()
            return self._conns.get().execute(query, params).fetchall()

    def _create_tables(self) -> None:
        """Create what is missing, under an advisory lock so that workers starting together
        do not race; a role that cannot create anything can still use existing tables."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlprod-log:{self.schema}",)
            )
            cur.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s",
                (self.schema, META),
            )
            if _scalar(cur.fetchone()) == 0:
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
                for statement in _PG_DDL:
                    cur.execute(self._q(statement))
            cur.execute(self._q("SELECT max(schema_version) FROM {m}"))
            version = _scalar(cur.fetchone())
            if version is not None and version > SCHEMA_VERSION:
                raise _newer_schema(f"{redact(self.url)} (schema '{self.schema}')", version)
            if version is None or version < 2:
                for statement in _PG_V2:
                    cur.execute(self._q(statement))
            cur.execute(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s AND column_name = 'seq'",
                (self.schema, PREDICTIONS),
            )
            if _scalar(cur.fetchone()) == 0:
                for statement in _PG_SEQ:
                    cur.execute(self._q(statement))
            if version is None or version < SCHEMA_VERSION:
                cur.execute(self._q("DELETE FROM {m}"))
                cur.execute(self._q("INSERT INTO {m} VALUES (%s)"), (SCHEMA_VERSION,))

    def append(self, records: Sequence[PredictionRecord]) -> None:
        rows = [_record_row(record) for record in records]
        with self._errors("writing to"), self._transaction() as cur:
            cur.executemany(self._q(_PG_INSERT), rows)

    def add_feedback(self, feedback: Sequence[Feedback]) -> FeedbackResult:
        by_id = [
            (i, f.prediction_id) for i, f in enumerate(feedback) if f.prediction_id is not None
        ]
        by_keys = [
            (i, canonical_keys(f.keys), _utc_naive(f.prediction_time))
            for i, f in enumerate(feedback)
            if f.keys is not None and f.prediction_time is not None
        ]
        with self._errors("writing feedback to"), self._transaction() as cur:
            cur.execute(
                self._q(_PG_MATCH),
                (
                    [i for i, _ in by_id],
                    [pid for _, pid in by_id],
                    [i for i, _, _ in by_keys],
                    [keys for _, keys, _ in by_keys],
                    [time for _, _, time in by_keys],
                ),
            )
            matches: list[list[str]] = [[] for _ in feedback]
            for index, pid in cur.fetchall():
                matches[index].append(pid)
            pids = sorted({pid for found in matches for pid in found})
            # Lock the labelled predictions (in a fixed order) so that concurrent feedback on
            # the same prediction is decided one call after the other.
            cur.execute(self._q(_PG_LOCK), (pids,))
            cur.execute(self._q(_PG_HISTORY), (pids,))
            history: dict[str, list[tuple[bool, datetime]]] = {}
            for pid, label, observed_at in cur.fetchall():
                history.setdefault(pid, []).append((label, observed_at))
            new, result = _plan_feedback(feedback, matches, history)
            cur.executemany(self._q(_PG_FEEDBACK_INSERT), new)
        return result

    def predictions(
        self,
        *,
        model_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        experiment: str | None = None,
    ) -> pa.Table:
        where, params = _filters(model_name, since, "%s", lambda t: t, experiment)
        query = self._q(_PG_SELECT, where=sql.SQL(where))
        with self._errors("reading"):
            rows = self._read(query, [*params, limit])
        return _table(reversed(rows))

    def count(self) -> int:
        with self._errors("reading"):
            rows = self._read(self._q("SELECT count(*) FROM {p}"))
        return int(rows[0][0])

    def record_error(self, error: ScoringError) -> None:
        with self._errors("writing a scoring error to"), self._transaction() as cur:
            cur.execute(
                self._q(f"INSERT INTO {{e}} ({_ERROR_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"),
                _error_row(error),
            )

    def scoring_errors(self, since: datetime | None = None) -> pa.Table:
        start = None if since is None else _utc_naive(since)
        with self._errors("reading"):
            rows = self._read(self._q(_PG_ERRORS), (start, start))
        return _table(rows, SCORING_ERRORS_SCHEMA)

    def monitor_rows(self, after: int, limit: int) -> pa.Table:
        with self._errors("reading"):
            rows = self._read(self._q(_PG_MONITOR_ROWS), (after, self.settle_seconds, limit))
        return _table(rows, MONITOR_ROWS_SCHEMA)

    def monitor_labels(self, after: int, limit: int) -> pa.Table:
        with self._errors("reading"):
            rows = self._read(self._q(_PG_MONITOR_LABELS), (after, limit))
        return _table(rows, MONITOR_LABELS_SCHEMA)

    def ping(self) -> None:
        with self._errors("reading"):
            self._read(sql.SQL("SELECT 1"))

    def close(self) -> None:
        self._conns.close_all()


def _scalar(row: tuple[Any, ...] | None) -> Any:
    """The one value of a one-row query."""
    assert row is not None
    return row[0]


def _pg_reason(exc: BaseException) -> str:
    """The first line of a psycopg error, without the prefix that repeats our message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.removeprefix("connection failed: ")
