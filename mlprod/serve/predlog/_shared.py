"""What both prediction log backends share: the records, the schema of what they return, the
JSON they store, the feedback decision and the per-thread connections."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from mlprod.errors import InputError, PredictionLogError

# Version 2 added the experiment columns (experiment, variant, assignment, served, latency_ms)
# and the scoring errors table; a version-1 log is migrated in place when it is opened.
SCHEMA_VERSION = 2
PREDICTIONS = "mlprod_predictions"
FEEDBACK = "mlprod_feedback"
META = "mlprod_log_meta"
SCORING_ERRORS = "mlprod_scoring_errors"

# What ``predictions()`` returns; keys, request and features are JSON text.
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("predicted_at", pa.timestamp("us")),
        ("prediction_time", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("keys", pa.string()),
        ("request", pa.string()),
        ("features", pa.string()),
        ("score", pa.float64()),
        ("decision", pa.bool_()),
        ("source", pa.string()),
        ("label", pa.bool_()),
        ("labelled_at", pa.timestamp("us")),
        ("label_source", pa.string()),
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("assignment", pa.string()),
        ("served", pa.bool_()),
        ("latency_ms", pa.float64()),
    ]
)

# What ``monitor_rows()`` returns: the new predictions in the order they were stored (``seq``).
MONITOR_ROWS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("prediction_id", pa.string()),
        ("predicted_at", pa.timestamp("us")),
        ("prediction_time", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("variant", pa.string()),
        ("served", pa.bool_()),
        ("score", pa.float64()),
        ("decision", pa.bool_()),
        ("latency_ms", pa.float64()),
        ("features", pa.string()),
    ]
)
# What ``monitor_labels()`` returns: labels in the order they were stored (``feedback_id``),
# each with its prediction's position in the log (``seq``), model version and time, so that
# monitoring finds the window a label belongs to without searching its archive.
MONITOR_LABELS_SCHEMA = pa.schema(
    [
        ("feedback_id", pa.int64()),
        ("prediction_id", pa.string()),
        ("label", pa.bool_()),
        ("observed_at", pa.timestamp("us")),
        ("seq", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("prediction_time", pa.timestamp("us")),
    ]
)
_MONITOR_COLUMNS = (
    "prediction_id, predicted_at, prediction_time, model_name, model_version, variant, served, "
    "score, decision, latency_ms, features"
)

# What ``scoring_errors()`` returns: one row per failure of a variant that another answered for.
SCORING_ERRORS_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us")),
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("message", pa.string()),
    ]
)


@dataclass(frozen=True)
class PredictionRecord:
    prediction_id: str  # uuid4 hex made by the caller
    predicted_at: datetime  # naive UTC, when the server scored it
    prediction_time: datetime  # naive UTC, the time features were computed as of
    model_name: str
    model_version: str
    keys: dict[str, Any]  # the spine keys, e.g. {"flight_id": 123}
    request: dict[str, Any]  # the request fields as received (JSON-able; datetimes -> ISO)
    features: dict[str, Any]  # feature values used (JSON-able)
    score: float
    decision: bool
    source: str = "rest"  # "rest", "batch", "parity", ...
    experiment: str | None = None  # the experiment that routed it (None: no experiment)
    variant: str | None = None  # the variant that scored it
    assignment: str | None = None  # "sticky", "random", "fallback", "shadow"; None: none
    served: bool = True  # False for shadow predictions (scored and logged, never answered)
    latency_ms: float | None = None  # in-process time to compute features and score


@dataclass(frozen=True)
class ScoringError:
    """A served variant that raised while scoring; the control answered instead."""

    experiment: str | None
    variant: str | None
    model_name: str
    model_version: str
    message: str
    at: datetime | None = None  # default now (UTC)


@dataclass(frozen=True)
class Feedback:
    """A label for one prediction (by id), or for the predictions with these keys and time."""

    label: bool
    prediction_id: str | None = None
    keys: dict[str, Any] | None = None  # alternatively keys + prediction_time
    prediction_time: datetime | None = None
    observed_at: datetime | None = None  # default now (UTC)
    source: str = "feedback"  # "feedback" (POST /feedback) or "outcomes" (computed)

    def __post_init__(self) -> None:
        by_id = self.prediction_id is not None
        by_keys = self.keys is not None and self.prediction_time is not None
        half_keys = (self.keys is None) != (self.prediction_time is None)
        if by_id == by_keys or half_keys:
            raise InputError(
                "feedback must name either a prediction_id, or keys together with "
                f"prediction_time; got prediction_id={self.prediction_id!r}, "
                f"keys={self.keys!r}, prediction_time={self.prediction_time!r}"
            )


@dataclass(frozen=True)
class FeedbackResult:
    applied: int  # new labels stored
    duplicates: int  # the same label for the same prediction again: no-op
    unmatched: list[int] = field(default_factory=list)  # feedback items matching no prediction


class PredictionLog(Protocol):
    """Implemented by ``SqlitePredictionLog`` and ``PostgresPredictionLog``; thread-safe."""

    def append(self, records: Sequence[PredictionRecord]) -> None:
        """Store records in one transaction; durable when this returns."""

    def add_feedback(self, feedback: Sequence[Feedback]) -> FeedbackResult:
        """Store labels, idempotently: a label equal to the latest one is a duplicate."""

    def predictions(
        self,
        *,
        model_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        experiment: str | None = None,
    ) -> pa.Table:
        """Predictions by ``predicted_at`` (the latest ``limit`` of them), latest label joined."""

    def count(self) -> int: ...

    def record_error(self, error: ScoringError) -> None:
        """Store a scoring failure (what the error-rate guardrail counts)."""

    def scoring_errors(self, since: datetime | None = None) -> pa.Table:
        """Scoring failures by ``at`` (``SCORING_ERRORS_SCHEMA``), those at or after ``since``."""

    def monitor_rows(self, after: int, limit: int) -> pa.Table:
        """Up to ``limit`` predictions stored after position ``after`` (``MONITOR_ROWS_SCHEMA``,
        by ``seq``): what monitoring reads once, incrementally."""

    def monitor_labels(self, after: int, limit: int) -> pa.Table:
        """Up to ``limit`` labels stored after ``feedback_id`` ``after`` (by feedback_id)."""

    def ping(self) -> None:
        """Raise PredictionLogError when the log cannot be reached (for /ready)."""

    def close(self) -> None: ...


def feature_table(predictions: pa.Table) -> pa.Table:
    """The ``features`` JSON of ``predictions()`` as one column per feature, for monitoring."""
    return pa.Table.from_pylist([json.loads(text) for text in predictions["features"].to_pylist()])


def _utc_naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _filters(
    model_name: str | None,
    since: datetime | None,
    placeholder: str,
    time: Callable[[datetime], Any],
    experiment: str | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE condition and parameters of ``predictions``: the backends differ only in
    their placeholder and in how a time is passed."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if model_name is not None:
        where.append(f"p.model_name = {placeholder}")
        params.append(model_name)
    if experiment is not None:
        where.append(f"p.experiment = {placeholder}")
        params.append(experiment)
    if since is not None:
        where.append(f"p.predicted_at >= {placeholder}")
        params.append(time(_utc_naive(since)))
    return " AND ".join(where), params


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON values: datetimes become ISO text, NaN and infinities become null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item(), where)
    raise PredictionLogError(
        f"cannot store {where} in the prediction log: expected a JSON value (number, string, "
        f"bool, null, datetime, list or mapping), found {type(value).__name__} {value!r}"
    )


def _plain(value: Any) -> Any:
    """``json.dumps``'s fallback for datetimes and numpy scalars."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError


def _json(value: dict[str, Any], where: str, *, sort_keys: bool = False) -> str:
    """Compact JSON; the C encoder does the common case, ``_jsonable`` the rest and the errors."""
    try:
        return json.dumps(
            value, separators=(",", ":"), allow_nan=False, default=_plain, sort_keys=sort_keys
        )
    except (TypeError, ValueError):
        return json.dumps(
            _jsonable(value, where), separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
        )


def canonical_keys(keys: dict[str, Any]) -> str:
    """The text feedback is matched on: keys sorted, no spaces, datetimes as ISO."""
    return _json(keys, "keys", sort_keys=True)


def _record_row(record: PredictionRecord) -> tuple[Any, ...]:
    where = f"prediction {record.prediction_id}"
    return (
        record.prediction_id,
        _utc_naive(record.predicted_at),
        _utc_naive(record.prediction_time),
        record.model_name,
        record.model_version,
        canonical_keys(record.keys),
        _json(record.keys, f"{where} keys"),
        _json(record.request, f"{where} request"),
        _json(record.features, f"{where} features"),
        float(record.score),
        bool(record.decision),
        record.source,
        record.experiment,
        record.variant,
        record.assignment,
        bool(record.served),
        None if record.latency_ms is None else float(record.latency_ms),
    )


# The columns of ``_record_row``, in its order.
_COLUMNS = (
    "prediction_id, predicted_at, prediction_time, model_name, model_version, keys_json, keys, "
    "request, features, score, decision, source, experiment, variant, assignment, served, "
    "latency_ms"
)
_COLUMN_COUNT = 17
# The columns version 2 added to a version-1 log: name, SQLite type, PostgreSQL type.
_V2_COLUMNS = (
    ("experiment", "TEXT", "text"),
    ("variant", "TEXT", "text"),
    ("assignment", "TEXT", "text"),
    ("served", "INTEGER NOT NULL DEFAULT 1", "boolean NOT NULL DEFAULT true"),
    ("latency_ms", "REAL", "double precision"),
)
# The columns of a scoring error row, in ``SCORING_ERRORS_SCHEMA`` order.
_ERROR_COLUMNS = "at, experiment, variant, model_name, model_version, message"


def _error_row(error: ScoringError) -> tuple[Any, ...]:
    at = _utc_naive(error.at) if error.at is not None else _now()
    return (
        at,
        error.experiment,
        error.variant,
        error.model_name,
        error.model_version,
        error.message,
    )


# A feedback row to insert: prediction_id, label, observed_at, received_at, source.
_FeedbackRow = tuple[str, bool, datetime, datetime, str]


def _plan_feedback(
    items: Sequence[Feedback],
    matches: list[list[str]],
    history: dict[str, list[tuple[bool, datetime]]],
) -> tuple[list[_FeedbackRow], FeedbackResult]:
    """Which labels to store, given each item's matched predictions and their label history.

    ``history`` holds each prediction's stored labels oldest first (by observed_at, then as
    received). A label equal to the current latest one, or a row already stored with the same
    label and observed_at, is a duplicate; anything else is stored (and becomes the latest
    unless an earlier-received label was observed later).
    """
    received_at = _now()
    rows: list[_FeedbackRow] = []
    applied = duplicates = 0
    unmatched: list[int] = []
    latest = {pid: (labels[-1][1], labels[-1][0]) for pid, labels in history.items() if labels}
    seen = {(pid, label, at) for pid, labels in history.items() for label, at in labels}
    for index, (item, prediction_ids) in enumerate(zip(items, matches, strict=True)):
        if not prediction_ids:
            unmatched.append(index)
            continue
        observed_at = _utc_naive(item.observed_at) if item.observed_at else received_at
        for pid in prediction_ids:
            current = latest.get(pid)
            if (current is not None and current[1] == item.label) or (
                (pid, item.label, observed_at) in seen
            ):
                duplicates += 1
                continue
            rows.append((pid, item.label, observed_at, received_at, item.source))
            seen.add((pid, item.label, observed_at))
            if current is None or observed_at >= current[0]:
                latest[pid] = (observed_at, item.label)
            applied += 1
    return rows, FeedbackResult(applied=applied, duplicates=duplicates, unmatched=unmatched)


def _table(rows: Iterable[Sequence[Any]], schema: pa.Schema = PREDICTIONS_SCHEMA) -> pa.Table:
    columns = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.Table.from_arrays(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


_Conn = TypeVar("_Conn")


class _PerThread(Generic[_Conn]):
    """One connection per thread, all closed together; the server calls from a thread pool."""

    def __init__(
        self,
        connect: Callable[[], _Conn],
        close: Callable[[_Conn], None],
        usable: Callable[[_Conn], bool] = lambda conn: True,
    ) -> None:
        self._connect, self._close, self._usable = connect, close, usable
        self._local = threading.local()
        self._all: list[_Conn] = []
        self._lock = threading.Lock()
        self.closed = False

    def get(self) -> _Conn:
        if self.closed:
            raise PredictionLogError("the prediction log is closed")
        conn: _Conn | None = getattr(self._local, "conn", None)
        if conn is not None and not self._usable(conn):
            self.discard()
            conn = None
        if conn is None:
            conn = self._connect()
            with self._lock:
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def discard(self) -> None:
        """Forget this thread's connection (it broke); the next call opens a new one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._all = [c for c in self._all if c is not conn]
            with suppress(Exception):
                self._close(conn)

    def close_all(self) -> None:
        self.closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with suppress(Exception):
                self._close(conn)


def _duplicate_message(where: str) -> str:
    return (
        f"a prediction id in this batch is already in the prediction log at {where}, so "
        "nothing of the batch was stored; give every prediction a new id (uuid4 hex)"
    )


def _newer_schema(where: str, version: int) -> PredictionLogError:
    return PredictionLogError(
        f"the prediction log at {where} has schema version {version}, but this mlprod knows "
        f"versions up to {SCHEMA_VERSION}; upgrade mlprod"
    )
