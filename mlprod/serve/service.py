"""The live scoring service behind the REST server: one deployed version, its online
features and its prediction log.

A request's records are checked against the request schema, their features computed from
the online store as of the prediction time (now, unless the caller gives one), scored by the
artefact's pipeline, and written to the prediction log; only then is the answer returned, so
every acknowledged prediction is on disk (or in PostgreSQL) even if the process is killed
the next instant.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from mlprod.data.online_store import OnlineStore
from mlprod.data.types import ARROW_TYPES
from mlprod.errors import FeatureError, did_you_mean
from mlprod.features.ingest import push as push_rows
from mlprod.features.online import OnlineFeatures, duckdb_row_function
from mlprod.features.requests import RequestField
from mlprod.serve.contract import FeedbackItem, Prediction, Readiness
from mlprod.serve.deployment import Deployment
from mlprod.serve.predlog import Feedback, PredictionLog, PredictionRecord
from mlprod.serve.records import RecordParser


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class OnlineService:
    """Implements :class:`mlprod.serve.contract.ScoringService` for one deployed version."""

    def __init__(
        self,
        deployment: Deployment,
        store: OnlineStore,
        log: PredictionLog,
        max_records: int = 1000,
        source: str = "rest",
    ) -> None:
        self.deployment = deployment
        self.store = store
        self.log = log
        self.source = source
        self.model_name = deployment.name
        self.model_version = deployment.version
        self.run_id = deployment.run_id
        self.request_fields: list[RequestField] = deployment.request_fields
        self.online = OnlineFeatures(
            deployment.graph, store, deployment.features, fallback=duckdb_row_function
        )
        self.sources = self.online.plan.sources
        spine = deployment.config.sources[deployment.config.spine.source]
        categories = {
            f.name: spine.columns[f.name].categories
            for f in self.request_fields
            if spine.columns[f.name].categories is not None
        }
        self.parser = RecordParser(
            self.request_fields,
            {k: v for k, v in categories.items() if v is not None},
            max_records,
        )
        self.schema = _feature_schema(deployment)
        # Feature values typed as the model scores them go to the pipeline as they are (no
        # Arrow table); other types (decimals, zoned times) take the table and its casts.
        rows_schema = getattr(deployment.pipeline, "row_schema", lambda: None)()
        self._score_values = rows_schema is not None and self.schema.equals(rows_schema)
        self._push_lock = threading.Lock()

    # --- predictions ---------------------------------------------------------------------

    def predict(
        self, records: Sequence[Mapping[str, Any]], at: datetime | None = None
    ) -> list[Prediction]:
        rows = self.parser.parse(records)
        return self.score_rows(rows, [at or now_utc()] * len(rows))

    def score_rows(self, rows: list[dict[str, Any]], times: list[datetime]) -> list[Prediction]:
        """Score typed request rows, each as of its own time, and log them before returning."""
        predictions, records = self.score(rows, times)
        self.log.append(records)
        return predictions

    def score(
        self,
        rows: list[dict[str, Any]],
        times: list[datetime],
        known: list[dict[str, Any]] | None = None,
    ) -> tuple[list[Prediction], list[PredictionRecord]]:
        """Score typed request rows without logging them: the answers and their log records
        (a router logs the records of all its variants at once, with the experiment).
        ``known`` are the rows' feature values when another version with the same feature
        definitions computed them already (a shadow of the served version)."""
        started = time.perf_counter()
        if known is None:
            values = self.online.compute(rows, times)
        else:
            names = self.online.names
            values = [{name: given[name] for name in names} for given in known]
        scores, decisions = self.score_values(values)
        latency_ms = (time.perf_counter() - started) * 1000.0
        predicted_at = now_utc()
        keys = self.deployment.keys
        predictions: list[Prediction] = []
        records: list[PredictionRecord] = []
        for row, features, t, score, decision in zip(
            rows, values, times, scores.tolist(), decisions.tolist(), strict=True
        ):
            prediction = Prediction(
                uuid.uuid4().hex,
                float(score),
                bool(decision),
                self.model_name,
                self.model_version,
                t,
                {k: row[k] for k in keys},
                features,
            )
            predictions.append(prediction)
            records.append(
                PredictionRecord(
                    prediction_id=prediction.prediction_id,
                    predicted_at=predicted_at,
                    prediction_time=t,
                    model_name=self.model_name,
                    model_version=self.model_version,
                    keys=prediction.keys,
                    request=row,
                    features=features,
                    score=prediction.score,
                    decision=prediction.decision,
                    source=self.source,
                    latency_ms=latency_ms,
                )
            )
        return predictions, records

    def score_values(self, values: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated scores and decisions of feature rows, as ``Deployment.score`` gives them
        for their feature table."""
        if not self._score_values:
            return self.deployment.score(self.feature_table(values))
        scores = np.asarray(self.deployment.pipeline.predict_proba_rows(values), dtype=np.float64)
        return scores, scores >= self.deployment.threshold

    def feature_table(self, values: list[dict[str, Any]]) -> pa.Table:
        """Feature rows as the pipeline expects them: the training matrix's column types."""
        return pa.Table.from_pylist(values, schema=self.schema)

    # --- events and outcomes ----------------------------------------------------------------

    def push(self, source: str, records: Sequence[Mapping[str, Any]]) -> int:
        config = self.deployment.config
        if source not in self.sources:
            hint = did_you_mean(source, self.sources)
            raise FeatureError(
                f"no online feature of model {self.model_name}/{self.model_version} reads "
                f"source '{source}'{hint}; events are accepted for "
                f"{', '.join(repr(s) for s in self.sources) or 'no source'}"
            )
        columns = config.sources[source].columns
        parser = RecordParser(
            [RequestField(n, c.type, c.nullable) for n, c in columns.items()],
            max_records=max(self.parser.max_records, 10_000),
        )
        rows = parser.parse(records)
        table = pa.table(
            {
                name: pa.array([row[name] for row in rows], type=ARROW_TYPES[contract.type])
                for name, contract in columns.items()
            }
        )
        with self._push_lock:
            summary = push_rows(self.deployment.graph, self.online.plan, self.store, source, table)
        return summary.applied

    def feedback(self, items: Sequence[FeedbackItem]) -> dict[str, Any]:
        result = self.log.add_feedback(
            [
                Feedback(
                    label=item.label,
                    prediction_id=item.prediction_id,
                    keys=item.keys,
                    prediction_time=item.prediction_time,
                )
                for item in items
            ]
        )
        return {
            "applied": result.applied,
            "duplicates": result.duplicates,
            "unmatched": list(result.unmatched),
        }

    def readiness(self) -> Readiness:
        checks: dict[str, str] = {"model": "ok"}
        for name, component in (("online_store", self.store), ("prediction_log", self.log)):
            try:
                component.ping()
                checks[name] = "ok"
            except Exception as exc:  # reported, not raised: /ready answers 503 with the reason
                checks[name] = str(exc)
        freshness: dict[str, datetime | None] = {source: None for source in self.sources}
        if checks["online_store"] == "ok":
            for source, fresh in self.store.freshness().items():
                if source in freshness:
                    freshness[source] = fresh.latest_at
        ready = all(v == "ok" for v in checks.values())
        return Readiness(ready, checks, freshness)

    def close(self) -> None:
        """Release the online store's and the prediction log's connections."""
        self.store.close()
        self.log.close()


def _feature_schema(deployment: Deployment) -> pa.Schema:
    """The training matrix's types of the model's features (from the artefact)."""
    recorded = getattr(deployment.pipeline, "input_schema", None)
    types: dict[str, pa.DataType] = {}
    if recorded is not None:
        for column in recorded.features:
            try:
                types[column.name] = pa.type_for_alias(column.dtype)
            except ValueError:
                types[column.name] = _parse_type(column.dtype)
    return pa.schema([(name, types.get(name, pa.float64())) for name in deployment.features])


def _parse_type(text: str) -> pa.DataType:
    if text.startswith("timestamp"):
        return pa.timestamp("us")
    if text.startswith("decimal"):
        return pa.float64()
    return pa.string() if text in ("large_string", "utf8") else pa.float64()
