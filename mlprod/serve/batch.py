"""Batch scoring: read requests, compute their features as of each row's time, score, write.

The features are computed by the batch engine from the deployed version's own definitions
(the compiler's scoring entry, :func:`mlprod.features.events.request_events`), exactly as the
training matrix was. Each row's prediction time is the spine's ``time`` when scoring the
spine source itself, else the input's ``prediction_time`` column, else ``--at`` (default
now). The output is written in one transaction per run id: a rerun replaces its rows, and a
run killed half way leaves nothing visible.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.sources import connect, open_source
from mlprod.data.types import accepts, type_family
from mlprod.errors import FeatureError, did_you_mean
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.events import (
    PREDICTION_TIME,
    REQUEST_ROW,
    REQUEST_TABLE,
    request_events,
    timestamp_literal,
)
from mlprod.features.matrix import run_staged
from mlprod.features.online_plan import plan_online
from mlprod.features.pushdown import PostgresBuild
from mlprod.features.typecheck import SQL_TYPES, duckdb_message
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.engine import EngineKind
from mlprod.serve.batch_io import (
    InputSpec,
    ScoreIOError,
    SourceInput,
    open_output,
    parse_input,
    parse_output,
    read_input,
)
from mlprod.serve.deployment import Deployment

CHUNK_ROWS = 65_536
_INPUT = "__input"


@dataclass(frozen=True)
class BatchSummary:
    """What ``mlprod score`` reports."""

    run_id: str
    rows: int
    decisions: int
    where: str
    model: str
    seconds: float
    feature_seconds: float
    score_seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "rows": self.rows,
            "decisions": self.decisions,
            "output": self.where,
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "feature_seconds": round(self.feature_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
        }


def score_batch(
    deployment: Deployment,
    input_text: str,
    output_text: str,
    at: datetime | None = None,
    run_id: str | None = None,
    progress: ProgressCallback = NO_PROGRESS,
    engine: EngineKind = "duckdb",
) -> BatchSummary:
    """Score every row of ``input_text`` and write the scores to ``output_text``.

    With ``engine`` postgres and a source as input, the features are computed inside the
    sources' database (see :func:`features_in_postgres`); the output may be a table of the
    same database: read from the database, score, write back.
    """
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex
    config = deployment.config
    spec = parse_input(input_text, config.sources)
    output = parse_output(output_text)
    computing = progress.start("computing features", None)
    if engine == "postgres" and isinstance(spec, SourceInput):
        features = features_in_postgres(deployment, spec.name, at)
    else:
        features = computed_features(deployment, spec, at)
    computing.finish(f"features of {features.num_rows:,} rows computed")
    feature_seconds = time.perf_counter() - started
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    keys = deployment.keys
    schema = pa.schema(
        [
            *[features.schema.field(k) for k in keys],
            pa.field("prediction_time", pa.timestamp("us")),
            pa.field("score", pa.float64()),
            pa.field("decision", pa.bool_()),
            pa.field("model_name", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("scored_at", pa.timestamp("us")),
        ]
    )
    total = features.num_rows
    decisions = 0
    score_seconds = 0.0
    scoring = progress.start("scoring", total)
    with open_output(output, run_id=run_id, schema=schema) as writer:
        for offset in range(0, max(total, 1), CHUNK_ROWS):
            chunk = features.slice(offset, CHUNK_ROWS)
            if chunk.num_rows == 0:
                break
            tick = time.perf_counter()
            scores, acts = deployment.score(chunk.select(deployment.features))
            score_seconds += time.perf_counter() - tick
            decisions += int(np.count_nonzero(acts))
            n = chunk.num_rows
            columns = [
                *[chunk.column(k) for k in keys],
                chunk.column("prediction_time").cast(pa.timestamp("us")),
                pa.array(scores, pa.float64()),
                pa.array(acts, pa.bool_()),
                pa.repeat(deployment.name, n),
                pa.repeat(deployment.version, n),
                pa.repeat(pa.scalar(scored_at, pa.timestamp("us")), n),
            ]
            writer.write(pa.Table.from_arrays(columns, schema=schema))
            scoring.advance(n)
    scoring.finish(f"{total:,} rows scored and written")
    summary = writer.result
    return BatchSummary(
        run_id,
        summary.rows,
        decisions,
        summary.where,
        f"{deployment.name}/{deployment.version}",
        time.perf_counter() - started,
        feature_seconds,
        score_seconds,
    )


def computed_features(
    deployment: Deployment, spec: InputSpec | str, at: datetime | None = None
) -> pa.Table:
    """The features of every input row as of its prediction time, in input order: the spine
    keys, ``prediction_time``, ``__request_row`` and the model's features."""
    config = deployment.config
    if isinstance(spec, str):
        spec = parse_input(spec, config.sources)
    with feature_engine(deployment, [spec.name] if isinstance(spec, SourceInput) else []) as con:
        columns = MatrixCompiler(deployment.graph).event_columns(deployment.features)
        _register_requests(con, deployment, spec, columns, at)
        return features_of_requests(con, deployment)


def features_in_postgres(deployment: Deployment, source: str, at: datetime | None) -> pa.Table:
    """The features of a source's rows computed inside its PostgreSQL database: the sources'
    contracts checked there, the requests a temporary table there, the plan run there."""
    config = deployment.config
    needed = {t.source for t in plan_online(deployment.graph, deployment.features).tables}
    compiler = MatrixCompiler(deployment.graph)
    columns = compiler.event_columns(deployment.features)
    with PostgresBuild(config, sorted({*needed, source})) as database:
        for name in sorted({*needed, source}):
            database.profile(name)
        select = source_requests(deployment, source, columns, at, database.types(source))
        database.execute(requests_table(select))
        query = compiler.staged(request_events(columns), deployment.features, "postgres")
        return database.run(query).table


@contextmanager
def feature_engine(
    deployment: Deployment, also: Sequence[str] = ()
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with the sources the model's features read (and ``also``) opened
    and checked against their contracts."""
    config = deployment.config
    con = connect(config.engine)
    try:
        needed = {t.source for t in plan_online(deployment.graph, deployment.features).tables}
        for source in sorted({*needed, *also}):
            open_source(con, deployment.folder, config, source)
        yield con
    finally:
        con.close()


def features_of_requests(con: duckdb.DuckDBPyConnection, deployment: Deployment) -> pa.Table:
    """Run the compiled features over the ``__requests`` table of ``con``."""
    compiler = MatrixCompiler(deployment.graph)
    columns = compiler.event_columns(deployment.features)
    query = compiler.staged(request_events(columns), deployment.features)
    try:
        return run_staged(con, query).table
    except duckdb.Error as exc:
        raise FeatureError(f"computing the features failed: {duckdb_message(exc)}") from None


def _register_requests(
    con: duckdb.DuckDBPyConnection,
    deployment: Deployment,
    spec: InputSpec,
    columns: list[str],
    at: datetime | None,
) -> None:
    """Create ``__requests``: the request fields, ``prediction_time`` and the row position."""
    if isinstance(spec, SourceInput):
        select = source_requests(deployment, spec.name, columns, at, _types(con, spec.name))
    else:
        fixed = timestamp_literal(at or datetime.now(UTC).replace(tzinfo=None))
        table = read_input(spec)
        con.register(_INPUT, table)
        present = _types(con, _INPUT)
        _check_fields(present, deployment, _INPUT, columns, shown=str(spec))
        time_expr = fixed if at is not None else _time_column(present, fixed)
        select = exp.select(
            *[sql.col(c) for c in columns], sql.alias(time_expr, PREDICTION_TIME)
        ).from_(sql.table(_INPUT))
    con.execute(requests_table(select).sql("duckdb", identify=True))


def source_requests(
    deployment: Deployment,
    source: str,
    columns: list[str],
    at: datetime | None,
    present: dict[str, str],
) -> exp.Select:
    """The requests of a source input (``present``: its types): the request fields and
    ``prediction_time``, the spine's own time for the spine source unless ``at`` is given."""
    spine = deployment.config.spine
    fixed = timestamp_literal(at or datetime.now(UTC).replace(tzinfo=None))
    time_expr: exp.Expr
    if source == spine.source and at is None and deployment.graph.timed:
        time_expr = deployment.graph.spine_exprs["time"].copy()
    elif at is not None or source == spine.source:
        time_expr = fixed
    else:
        time_expr = _time_column(present, fixed)
    _check_fields(present, deployment, source, columns)
    select = exp.select(*[sql.col(c) for c in columns], sql.alias(time_expr, PREDICTION_TIME))
    select = select.from_(sql.table(source))
    if source == spine.source and "filter" in deployment.graph.spine_exprs:
        select = select.where(deployment.graph.spine_exprs["filter"].copy())
    return select


def requests_table(select: exp.Select) -> exp.Create:
    """``CREATE TEMPORARY TABLE __requests``: the requests numbered in their order."""
    numbered = exp.select(
        "*", sql.alias(sql.window(exp.func("row_number"), []), REQUEST_ROW)
    ).from_(sql.subquery(select, "__in"))
    return exp.Create(
        this=sql.table(REQUEST_TABLE),
        kind="TABLE",
        expression=numbered,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )


def _time_column(present: dict[str, str], fallback: exp.Expr) -> exp.Expr:
    """The input's own ``prediction_time`` column when it has one (``present``: its types)."""
    if PREDICTION_TIME in present:
        if type_family(present[PREDICTION_TIME]) not in ("timestamp", "date"):
            raise ScoreIOError(
                f"input column '{PREDICTION_TIME}' is {present[PREDICTION_TIME]}, expected a "
                "timestamp (UTC)"
            )
        return sql.timestamp(sql.col(PREDICTION_TIME))
    return fallback


def _check_fields(
    present: dict[str, str],
    deployment: Deployment,
    table: str,
    columns: list[str],
    shown: str | None = None,
) -> None:
    """Every request field present (``present``: the input's types), with a type its
    contract accepts."""
    shown = shown or f"source '{table}'"
    contracts = deployment.config.sources[deployment.config.spine.source].columns
    for column in columns:
        if column not in present:
            raise ScoreIOError(
                f"input {shown} has no column '{column}'{did_you_mean(column, present)}; the "
                f"model needs the request fields {', '.join(columns)}"
            )
        declared = contracts[column].type
        if not accepts(declared, type_family(present[column])):
            raise ScoreIOError(
                f"input {shown}: column '{column}' is {present[column]}, expected {declared} "
                f"({SQL_TYPES[declared]})"
            )


def _types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    query = exp.Describe(this=sql.table(table)).sql("duckdb", identify=True)
    return {str(row[0]): str(row[1]) for row in con.execute(query).fetchall()}
