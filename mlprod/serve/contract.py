"""What the REST server asks of a deployed model: the seam between HTTP and scoring.

The server (``mlprod.serve.app``) only speaks protocols — its own ``/predict``, MLflow's
``/invocations`` and the Open Inference Protocol v2 — and turns every request into a call
on a :class:`ScoringService`. The service validates records against the model's request
schema, computes the online features, scores, and logs each prediction durably before it
returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mlprod.errors import MlprodError
from mlprod.features.requests import RequestField


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field of one record, for a 422 answer."""

    record: int  # position in the request (0 for a single record)
    field: str  # the field's name ('' for the record as a whole)
    message: str  # e.g. "expected an integer, got 'abc'"

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "message": self.message}


class RequestRejected(MlprodError):
    """A request that does not fit the request schema; one problem per field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else FieldProblem(0, "", "invalid request")
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        where = f"record {first.record}" + (f", field '{first.field}'" if first.field else "")
        super().__init__(f"{where}: {first.message}{more}")


@dataclass(frozen=True)
class Prediction:
    """One scored record, as answered and as logged."""

    prediction_id: str
    score: float
    decision: bool
    model_name: str
    model_version: str
    prediction_time: datetime
    keys: dict[str, Any]
    features: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "score": self.score,
            "decision": self.decision,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "prediction_time": self.prediction_time.isoformat(),
            "keys": self.keys,
        }


@dataclass(frozen=True)
class FeedbackItem:
    """An outcome for a logged prediction: by its id, or by its keys and prediction time."""

    label: bool
    prediction_id: str | None = None
    keys: dict[str, Any] | None = None
    prediction_time: datetime | None = None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]  # component -> "ok" or what is wrong
    freshness: dict[str, datetime | None]  # source -> latest event applied online


class ScoringService(Protocol):
    """A loaded model with its online features and prediction log."""

    model_name: str
    model_version: str
    run_id: str
    request_fields: list[RequestField]
    sources: list[str]  # sources whose events can be pushed

    def predict(
        self, records: Sequence[Mapping[str, Any]], at: datetime | None = None
    ) -> list[Prediction]:
        """Validate (raise RequestRejected), compute features as of ``at`` (default now, UTC),
        score, log durably, then return."""
        ...

    def push(self, source: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Apply new source events to the online store; returns how many were new."""
        ...

    def feedback(self, items: Sequence[FeedbackItem]) -> dict[str, Any]:
        """Store outcomes (idempotent): {"applied": n, "duplicates": n, "unmatched": [i...]}."""
        ...

    def readiness(self) -> Readiness: ...
