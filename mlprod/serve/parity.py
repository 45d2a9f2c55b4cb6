"""The parity gate: the online path must give the batch path's features and scores.

Historical prediction events are sampled from the spine. The batch path computes their
features with the compiled query, as batch scoring and training do; the online path fills a
scratch online store of the configured kind (SQLite, Redis or memory) from the same sources
and evaluates each event as a live request at its own prediction time. Every feature value
and every score must agree: NULL with NULL, numbers to 1e-9 (relative or absolute; sums of
floats are added in another order), everything else exactly.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.online_store import MemoryOnlineStore, OnlineStore, open_online_store
from mlprod.errors import FeatureError
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.events import PREDICTION_TIME, REQUEST_ROW, REQUEST_TABLE
from mlprod.features.ingest import declare, ingest_rows
from mlprod.features.online import OnlineFeatures, duckdb_row_function
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.serving import OnlineSpec
from mlprod.serve.batch import feature_engine, features_of_requests
from mlprod.serve.deployment import Deployment

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Mismatch:
    keys: dict[str, Any]
    prediction_time: datetime
    batch: Any
    online: Any


@dataclass
class ParityReport:
    """What ``mlprod parity`` prints: per feature (and the score) the events that differ."""

    model: str
    events: int
    features: list[str]
    store: str
    seconds: float
    mismatches: dict[str, list[Mismatch]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # column -> mismatching events

    @property
    def ok(self) -> bool:
        return not self.counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "events": self.events,
            "features": len(self.features),
            "store": self.store,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "mismatches": {
                name: {
                    "events": self.counts[name],
                    "examples": [
                        {
                            "keys": m.keys,
                            "prediction_time": m.prediction_time.isoformat(),
                            "batch": _shown(m.batch),
                            "online": _shown(m.online),
                        }
                        for m in examples
                    ],
                }
                for name, examples in self.mismatches.items()
            },
        }


def check_parity(
    deployment: Deployment,
    sample: int = 2000,
    seed: int = 0,
    store: OnlineStore | None = None,
    online_spec: OnlineSpec | None = None,
    examples: int = 3,
    progress: ProgressCallback = NO_PROGRESS,
) -> ParityReport:
    """Replay ``sample`` historical events through both paths and compare them.

    The online path reads ``store`` as it is, or else a scratch store of the kind
    ``online_spec`` names (the project's ``online:``), filled from the sources and removed
    afterwards.
    """
    started = time.perf_counter()
    spine = deployment.config.spine
    with feature_engine(deployment, [spine.source]) as con:
        _sample_events(con, deployment, sample, seed)
        task = progress.start(f"batch features of {sample:,} events", None)
        batch = features_of_requests(con, deployment)
        task.finish()
        with _scratch_store(deployment, store, online_spec or OnlineSpec()) as (scratch, kind):
            online = OnlineFeatures(
                deployment.graph, scratch, deployment.features, fallback=duckdb_row_function
            )
            declare(con, deployment.graph, online.plan.tables, scratch)
            if store is None:  # a scratch store: fill it from the sources
                ingest_rows(con, deployment.graph, online.plan.tables, scratch, progress=progress)
            columns = MatrixCompiler(deployment.graph).event_columns(deployment.features)
            requests = con.sql(
                exp.select(*[sql.col(c) for c in [*columns, PREDICTION_TIME]])
                .from_(sql.table(REQUEST_TABLE))
                .order_by(sql.col(REQUEST_ROW))
                .sql("duckdb", identify=True)
            ).to_arrow_table()
            rows = requests.to_pylist()
            times = [row.pop(PREDICTION_TIME) for row in rows]
            task = progress.start(f"online features of {len(rows):,} events", len(rows))
            live = []
            for start in range(0, len(rows), 100):
                live += online.compute(rows[start : start + 100], times[start : start + 100])
                task.advance(len(rows[start : start + 100]))
            task.finish()
    report = ParityReport(
        f"{deployment.name}/{deployment.version}",
        batch.num_rows,
        deployment.features,
        kind,
        0.0,
    )
    batch_rows = batch.to_pylist()
    keys = deployment.keys
    for name in deployment.features:
        for offline_row, online_row in zip(batch_rows, live, strict=True):
            if not same(offline_row[name], online_row[name]):
                _record(
                    report, name, offline_row, keys, offline_row[name], online_row[name], examples
                )
    batch_scores, _ = deployment.score(batch.select(deployment.features))
    online_table = _online_table(batch.select(deployment.features).schema, live)
    online_scores, _ = deployment.score(online_table)
    for row, a, b in zip(batch_rows, batch_scores.tolist(), online_scores.tolist(), strict=True):
        if not same(a, b):
            _record(report, "score", row, keys, a, b, examples)
    report.seconds = time.perf_counter() - started
    return report


def same(batch: Any, online: Any) -> bool:
    """NULL only equals NULL; numbers agree to 1e-9; NaN equals NaN; the rest exactly."""
    if batch is None or online is None:
        return batch is None and online is None
    if isinstance(batch, float) or isinstance(online, float):
        try:
            a, b = float(batch), float(online)
        except (TypeError, ValueError):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return bool(batch == online)


def _record(
    report: ParityReport,
    name: str,
    row: dict[str, Any],
    keys: list[str],
    batch: Any,
    online: Any,
    examples: int,
) -> None:
    report.counts[name] = report.counts.get(name, 0) + 1
    found = report.mismatches.setdefault(name, [])
    if len(found) < examples:
        found.append(Mismatch({k: row[k] for k in keys}, row["prediction_time"], batch, online))


def _online_table(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema}, schema=schema
    )


def _sample_events(
    con: duckdb.DuckDBPyConnection, deployment: Deployment, sample: int, seed: int
) -> None:
    """``__requests``: ``sample`` spine events with a time, drawn with ``seed``."""
    if sample < 1:
        raise FeatureError(f"the parity sample must be at least 1 event, got {sample}")
    graph = deployment.graph
    spine = deployment.config.spine
    if not graph.timed or graph.numbered:
        missing = "spine.time" if not graph.timed else "spine.keys"
        raise FeatureError(
            f"parity replays the spine's events at their time by their keys, but {missing} "
            "is not declared in mlprod.yaml"
        )
    columns = MatrixCompiler(graph).event_columns(deployment.features)
    time_expr = sql.timestamp(graph.spine_exprs["time"].copy())
    conditions: list[exp.Expr] = [exp.not_(exp.Is(this=time_expr.copy(), expression=exp.null()))]
    if "filter" in graph.spine_exprs:
        conditions.append(graph.spine_exprs["filter"].copy())
    numbered = (
        exp.select(
            *[sql.col(c) for c in columns],
            sql.alias(time_expr, PREDICTION_TIME),
            sql.alias(sql.window(exp.func("row_number"), [], sql.col(spine.keys[0])), "__n"),
        )
        .from_(sql.table(spine.source))
        .where(sql.and_all(conditions))
    )
    con.execute(_create_temp("__events", numbered))
    total = int(con.sql('SELECT count(*) FROM "__events"').fetchall()[0][0])
    if total == 0:
        raise FeatureError(f"the spine source '{spine.source}' has no events with a time")
    chosen = sorted(random.Random(seed).sample(range(1, total + 1), min(sample, total)))
    picked = (
        exp.select(
            *[sql.col(c) for c in [*columns, PREDICTION_TIME]],
            sql.alias(sql.window(exp.func("row_number"), [], sql.col("__n")), REQUEST_ROW),
        )
        .from_(sql.table("__events"))
        .where(exp.In(this=sql.col("__n"), expressions=[exp.Literal.number(n) for n in chosen]))
    )
    con.execute(_create_temp(REQUEST_TABLE, picked))


def _create_temp(name: str, select: exp.Select) -> str:
    create = exp.Create(
        this=sql.table(name),
        kind="TABLE",
        expression=select,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return create.sql("duckdb", identify=True)


@contextmanager
def _scratch_store(
    deployment: Deployment, given: OnlineStore | None, spec: OnlineSpec
) -> Iterator[tuple[OnlineStore, str]]:
    """A fresh store of the kind ``spec`` names, removed afterwards (or ``given`` as it is)."""
    if given is not None:
        yield given, "given"
        return
    folder: tempfile.TemporaryDirectory[str] | None = None
    if spec.kind == "memory":
        store: OnlineStore = MemoryOnlineStore()
    elif spec.kind == "redis":
        namespace = f"{deployment.config.name}_parity_{uuid.uuid4().hex[:12]}"
        store = open_online_store(spec, deployment.folder, namespace)
    else:
        folder = tempfile.TemporaryDirectory(prefix="mlprod-parity-")
        scratch = spec.model_copy(update={"path": str(Path(folder.name) / "online.sqlite")})
        store = open_online_store(scratch, deployment.folder, "parity")
    try:
        yield store, spec.kind
    finally:
        try:
            store.clear()
        finally:
            store.close()
            if folder is not None:
                folder.cleanup()


def _shown(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
