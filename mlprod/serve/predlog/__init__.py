"""The prediction log: every prediction stored durably before it is answered, outcomes joined later.

Two backends keep one promise — an acknowledged prediction or label is never lost, also when
the process is killed with SIGKILL:

- ``SqlitePredictionLog`` (:mod:`.sqlite`, the embedded default): one SQLite file in WAL mode.
- ``PostgresPredictionLog`` (:mod:`.postgres`): two tables in a configurable schema.

Labels live in their own table with their history; ``predictions()`` joins the latest one
(latest ``observed_at``, then the latest received). ``keys``, ``request`` and ``features`` are
JSON (``jsonb`` in PostgreSQL), and a canonical ``keys_json`` (sorted keys, no spaces) is
indexed with ``prediction_time`` to match feedback that names keys instead of an id.

Schema version 2 records which experiment, variant and assignment produced each prediction,
whether it was answered (``served``; shadows are not) and its in-process latency, and keeps
``mlprod_scoring_errors``: variants that raised while the control answered for them. A
version-1 log is migrated in place (ALTER TABLE ADD COLUMN) when it is opened.
"""

from __future__ import annotations

from pathlib import Path

from mlprod.errors import PredictionLogError
from mlprod.project.serving import LogSpec
from mlprod.serve.predlog._shared import (
    PREDICTIONS_SCHEMA,
    SCHEMA_VERSION,
    SCORING_ERRORS_SCHEMA,
    Feedback,
    FeedbackResult,
    PredictionLog,
    PredictionRecord,
    ScoringError,
    canonical_keys,
    feature_table,
)
from mlprod.serve.predlog.postgres import PostgresPredictionLog
from mlprod.serve.predlog.sqlite import SqlitePredictionLog

__all__ = [
    "PREDICTIONS_SCHEMA",
    "SCHEMA_VERSION",
    "SCORING_ERRORS_SCHEMA",
    "Feedback",
    "FeedbackResult",
    "LogSpec",
    "PostgresPredictionLog",
    "PredictionLog",
    "PredictionLogError",
    "PredictionRecord",
    "ScoringError",
    "SqlitePredictionLog",
    "canonical_keys",
    "feature_table",
    "open_prediction_log",
]


def open_prediction_log(spec: LogSpec, project_dir: Path) -> PredictionLog:
    """Open (and create when missing) the log the spec names."""
    if spec.kind == "postgres":
        if not spec.url:
            raise PredictionLogError("log.kind is 'postgres' but log.url is missing")
        return PostgresPredictionLog(spec.url, spec.schema_)
    return SqlitePredictionLog(Path(project_dir) / spec.path)
