"""Build the point-in-time correct training matrix and describe it.

Reading sources, checking contracts, compiling the features and running the one query are
separate steps here so the progress bar can say where the time goes.

Ctrl-C stops a build cleanly: the running query is interrupted (never left running on a
connection being closed) and the build raises KeyboardInterrupt, whichever thread ran it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.baselines import check_null_rate_jump
from mlprod.data.contracts import SourceProfile
from mlprod.data.sources import connect, open_source
from mlprod.errors import EmptyMatrixError, FeatureError
from mlprod.features.categorical import CategoryEncoder
from mlprod.features.compiler import MatrixCompiler, StagedQuery
from mlprod.features.events import TrainingEvents
from mlprod.features.expressions import DIALECT
from mlprod.features.graph import FeatureGraph, Node
from mlprod.features.pushdown import PostgresBuild
from mlprod.features.spark import SparkBuild
from mlprod.features.typecheck import check_types, duckdb_message
from mlprod.progress import NO_PROGRESS, ProgressCallback, ProgressTask
from mlprod.project.config import ExprFeature, LookupFeature, ProjectConfig
from mlprod.project.engine import FRAME_ROWS, format_bytes


@dataclass
class Matrix:
    """A built training matrix with what is known about how it was built."""

    table: pa.Table
    features: list[str]
    as_of: datetime
    seconds: float
    events: dict[str, int]
    sources: dict[str, SourceProfile]
    hashes: dict[str, str]
    categories: dict[str, CategoryEncoder] = field(default_factory=dict)
    steps: list[StepTime] = field(default_factory=list)  # where the time went

    def metadata(self, graph: FeatureGraph) -> dict[str, Any]:
        table = self.table
        rows = table.num_rows
        features = []
        for name in self.features:
            node = graph.nodes[name]
            column = table.column(name)
            features.append(
                {
                    "name": name,
                    "kind": node.feature.kind,
                    "dtype": str(column.type),
                    "null_rate": (column.null_count / rows) if rows else 0.0,
                    "definition_hash": self.hashes[name],
                    "definition": node.feature.model_dump(
                        mode="json", by_alias=True, exclude_defaults=True
                    ),
                }
            )
        return {
            "project": graph.config.name,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "as_of": self.as_of.isoformat(),
            "rows": rows,
            "columns": table.num_columns,
            "seconds": round(self.seconds, 3),
            "keys": graph.keys,
            "notes": graph.notes(),
            "events": self.events,
            "features": features,
            "categories": {name: enc.to_dict() for name, enc in self.categories.items()},
            "steps": [step.to_dict() for step in self.steps],
            "sources": {
                name: {"rows": p.rows, "types": p.types, "null_rates": p.null_rates}
                for name, p in self.sources.items()
            },
        }


def build_matrix(
    folder: Path,
    graph: FeatureGraph,
    as_of: datetime | None = None,
    names: list[str] | None = None,
    progress: ProgressCallback = NO_PROGRESS,
    values: Mapping[str, str] | None = None,
) -> Matrix:
    """Read and check the sources, then evaluate the features for every labelled event.

    ``values`` are the per-row outcome values of ``train.value`` (outcome -> expression),
    carried into the matrix as ``value_<outcome>`` columns.
    """
    started = time.perf_counter()
    config = graph.config
    as_of = _utc(as_of or datetime.now(UTC))
    wanted = graph.closure(names) if names else list(graph.nodes)
    nodes = [graph.nodes[n] for n in wanted]
    read = [source for n in nodes if (source := _source_of(n))]
    needed = list(dict.fromkeys([config.spine.source, *read]))
    training = TrainingEvents(graph, values or {})
    check_types(graph, training, folder)
    kind = config.engine.kind
    with ExitStack() as stack:
        con: duckdb.DuckDBPyConnection | None = None
        pg: PostgresBuild | None = None
        spark: SparkBuild | None = None
        if kind == "postgres":  # everything inside the database: no rows leave it
            pg = stack.enter_context(PostgresBuild(config, needed))
            fetch: Fetch = pg.fetch
            read_source: Callable[[str], SourceProfile] = pg.profile
        else:
            spill = spill_directory(folder, config)
            spill.parent.mkdir(parents=True, exist_ok=True)  # DuckDB makes only the last folder
            con = stack.enter_context(connect(config.engine, spill))
            fetch = partial(duckdb_fetch, con)
            read_source = partial(open_source, con, folder, config)
            if kind == "spark":  # checks and plan on Spark; DuckDB reads what Spark cannot
                spark = stack.enter_context(SparkBuild(con, folder, config))
                fetch, read_source = spark.fetch, spark.profile
        try:
            task = progress.start("reading sources", total=len(needed))
            profiles: dict[str, SourceProfile] = {}
            for name in needed:
                task.update(description=f"reading source {name}")
                profiles[name] = read_source(name)
                check_null_rate_jump(folder / config.store, profiles[name], config.sources[name])
                task.advance()
            task.finish("sources read and checked")
            _check_lookups_unique(fetch, nodes)
            _check_spine_keys_unique(fetch, graph)
            compiler = MatrixCompiler(graph, framed_groups(fetch, graph, wanted))
            events = _event_counts(fetch, training, as_of)
            query = compiler.staged_query(as_of, wanted, training, kind)
            since = time.perf_counter() - started
            prepared = StepTime("sources, checks, compile", since, (), True)
            if pg is not None:
                run = pg.run(query, progress)
            elif spark is not None:
                run = spark.run(query, folder / config.store / "spark" / "matrix.parquet", progress)
            else:
                assert con is not None
                run = run_staged(con, query, progress)
        except duckdb.OutOfMemoryException as exc:
            raise FeatureError(_out_of_memory(config, exc)) from None
        except duckdb.Error as exc:  # data-dependent failures, e.g. a cast of a bad value
            raise FeatureError(f"computing the features failed: {duckdb_message(exc)}") from None
        except RuntimeError as exc:
            raise_interrupt(exc)
            raise
    table = run.table
    if table.num_rows == 0:
        raise EmptyMatrixError(_empty(config, events, as_of))
    _check_label_values(config, table)
    categories = {
        n.name: CategoryEncoder.fit(table.column(n.name), n.feature.categorical)
        for n in nodes
        if n.feature.categorical is not None
    }
    hashes = definition_hashes(config, graph, wanted)
    events["rows"] = table.num_rows
    seconds = time.perf_counter() - started
    steps = [prepared, *run.steps]
    return Matrix(table, wanted, as_of, seconds, events, profiles, hashes, categories, steps)


def raise_interrupt(exc: RuntimeError) -> None:
    """Raise KeyboardInterrupt if ``exc`` is how DuckDB reports a Ctrl-C.

    A query running in the main thread is stopped by DuckDB itself on Ctrl-C, which then
    raises ``RuntimeError('Query interrupted')`` instead of the KeyboardInterrupt; callers
    should see the interrupt as they would anywhere else.
    """
    if str(exc) == "Query interrupted":
        raise KeyboardInterrupt from None


def _empty(config: ProjectConfig, events: dict[str, int], as_of: datetime) -> str:
    """Why a build has no rows: no events at all, or none labelled as of ``as_of``."""
    source = config.spine.source
    filtered = " that pass spine.filter" if config.spine.filter else ""
    if events["events"] == 0:
        return f"the training matrix is empty: spine source '{source}' has no events{filtered}"
    moment = as_of.isoformat(sep=" ")
    left_out = (
        f"label not yet known: {events['label_pending']:,}; label is null: "
        f"{events['label_missing']:,}; no prediction time: {events['no_time']:,}"
    )
    hint = "; build as of a later time (--as-of)" if events["label_pending"] else ""
    return (
        f"the training matrix is empty: none of the {events['events']:,} events of spine "
        f"source '{source}'{filtered} has a label known as of {moment} ({left_out}){hint}"
    )


def spill_directory(folder: Path, config: ProjectConfig) -> Path:
    """Where DuckDB spills what does not fit in memory: ``engine.spill_directory``, or
    ``<store>/spill`` inside the project (not ``.tmp`` in whatever folder mlprod runs from)."""
    chosen = config.engine.spill_directory
    return folder / (chosen if chosen is not None else Path(config.store) / "spill")


def _out_of_memory(config: ProjectConfig, exc: duckdb.Error) -> str:
    limit = config.engine.memory_limit
    allowed = (
        f"engine.memory_limit ({format_bytes(limit)})"
        if limit is not None
        else "DuckDB's default limit (80% of RAM)"
    )
    return (
        f"computing the features ran out of memory: the build needs more than {allowed} "
        f"allows, even spilling to disk ({duckdb_message(exc)}). Raise engine.memory_limit in "
        "mlprod.yaml, or build fewer features at once (features build --feature NAME)."
    )


@dataclass(frozen=True)
class StepTime:
    """How long one step of a build took, and which features it was for."""

    step: str
    seconds: float
    features: tuple[str, ...]
    prepares: bool  # True: shared work (e.g. running totals) that later steps read

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": round(self.seconds, 3),
            "features": list(self.features),
            "prepares": self.prepares,
        }


@dataclass(frozen=True)
class StagedRun:
    """A staged build's result, and how long each of its steps took."""

    table: pa.Table
    steps: list[StepTime]


def run_staged(
    con: duckdb.DuckDBPyConnection,
    query: StagedQuery,
    progress: ProgressCallback = NO_PROGRESS,
) -> StagedRun:
    """Run the feature query stage by stage, dropping each intermediate table once nothing
    later reads it; time each stage. The task counts stages, and moves within one by DuckDB's
    own estimate of how far the query got."""
    steps = len(query.stages) + 1
    task = progress.start("computing features", total=steps)
    watch = _Watch(con, task if progress is not NO_PROGRESS else None)
    times: list[StepTime] = []
    for index, stage in enumerate(query.stages):
        create = exp.Create(
            this=_table(stage.name),
            kind="TABLE",
            expression=stage.select,
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        )
        started = time.perf_counter()
        watch.run(index, f"step {index + 1} of {steps}", create, fetch=False)
        seconds = time.perf_counter() - started
        times.append(StepTime(stage.name, seconds, stage.features, stage.prepares))
        _drop(con, stage.drop_after)
    started = time.perf_counter()
    table: pa.Table = watch.run(steps - 1, f"step {steps} of {steps}", query.final, fetch=True)
    times.append(StepTime("result", time.perf_counter() - started, query.final_features, False))
    _drop(con, query.final_drops)
    task.finish("features computed")
    return StagedRun(table, times)


def _table(name: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name, quoted=True))


def _drop(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    for name in names:
        con.execute(exp.Drop(tables=[_table(name)], kind="TABLE").sql(DIALECT, identify=True))


@dataclass
class _Watch:
    """Runs statements; while one runs, the bar follows DuckDB's estimate of its progress.

    Watched, a statement runs in a worker thread while this one polls; a Ctrl-C here
    interrupts the query and waits for the worker to let go of the connection before it
    goes on, so the connection is never closed under a running query.
    """

    con: duckdb.DuckDBPyConnection
    task: ProgressTask | None  # None: nobody watches, so run in this thread

    def run(self, index: int, what: str, statement: exp.Expr, fetch: bool) -> Any:
        text = statement.sql(DIALECT, identify=True)
        task = self.task
        if task is None:
            try:
                return self._execute(text, fetch)
            except RuntimeError as exc:
                raise_interrupt(exc)
                raise
        task.update(description=f"computing features ({what})", completed=index)
        result: dict[str, Any] = {}
        # Waited for with an event, not Thread.join: a Ctrl-C inside join() can leave the
        # thread marked as stopped while it still runs (CPython before 3.12).
        finished = threading.Event()

        def work() -> None:
            try:
                result["value"] = self._execute(text, fetch)
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
            finally:
                finished.set()

        worker = threading.Thread(target=work, daemon=True)
        try:
            worker.start()
            while not finished.wait(0.1):
                done = self.con.query_progress()  # a percentage, or -1 when unknown
                if done >= 0:
                    task.update(completed=index + done / 100)
        except KeyboardInterrupt:
            self._interrupt(worker, finished)
            raise
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def _interrupt(self, worker: threading.Thread, finished: threading.Event) -> None:
        """Interrupt the worker's query and wait until it has let go of the connection (a
        second Ctrl-C cannot cut the wait short: the connection is not free before)."""
        while worker.ident is not None and not finished.is_set():
            self.con.interrupt()
            with suppress(KeyboardInterrupt):
                finished.wait(0.1)

    def _execute(self, text: str, fetch: bool) -> pa.Table | None:
        if fetch:
            return self.con.sql(text).to_arrow_table()
        self.con.execute(text)
        return None


def _source_of(node: Node) -> str | None:
    return None if isinstance(node.feature, ExprFeature) else node.feature.source


Fetch = Callable[[exp.Select], tuple[list[str], list[tuple[Any, ...]]]]


def duckdb_fetch(
    con: duckdb.DuckDBPyConnection, select: exp.Select
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a check's query in DuckDB: column names and rows."""
    cursor = con.execute(select.sql("duckdb", identify=True))
    rows = cursor.fetchall()
    return [d[0] for d in cursor.description or []], rows


def _check_lookups_unique(fetch: Fetch, nodes: list[Node]) -> None:
    """A lookup joins at most one row per key; duplicates would multiply training rows.

    Also when the source's rows have availability times: a key whose row changes over time is
    what an as-of feature is for (the latest row before ``t``, in batch and online alike).
    """
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for node in nodes:
        feature = node.feature
        if not isinstance(feature, LookupFeature):
            continue
        columns = tuple(c for _, c in feature.key_pairs())
        if (feature.source, columns) in seen:
            continue
        seen.add((feature.source, columns))
        keys: list[exp.Expr] = [sql.col(c) for c in columns]
        probe = (
            exp.select(*keys, sql.alias(exp.Count(this=exp.Star()), "__n"))
            .from_(sql.table(feature.source))
            .group_by(*[k.copy() for k in keys])
            .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
            .order_by(exp.Ordered(this=sql.col("__n"), desc=True))
            .limit(1)
        )
        _, rows = fetch(probe)
        if rows:
            key = ", ".join(f"{c}={v!r}" for c, v in zip(columns, rows[0], strict=False))
            raise FeatureError(
                f"feature '{feature.name}': source '{feature.source}' has {rows[0][-1]} rows for "
                f"{key}; a lookup needs at most one row per key (use an asof feature for a "
                "table that changes over time)"
            )


def _check_spine_keys_unique(fetch: Fetch, graph: FeatureGraph) -> None:
    """Each event of the spine has its own keys: a duplicated key would be two training rows
    (or a scored row) that features, predictions and outcomes cannot tell apart."""
    spine = graph.config.spine
    if not spine.keys:
        return
    keys: list[exp.Expr] = [sql.col(c) for c in spine.keys]
    groups = (
        exp.select(*keys, sql.alias(exp.Count(this=exp.Star()), "__n"))
        .from_(sql.table(spine.source))
        .group_by(*[k.copy() for k in keys])
        .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
    )
    if "filter" in graph.spine_exprs:
        groups = groups.where(graph.spine_exprs["filter"].copy())
    probe = (
        exp.select(
            *[sql.col(c) for c in spine.keys],
            sql.col("__n"),
            sql.alias(sql.window(exp.Count(this=exp.Star()), []), "__keys"),
            sql.alias(sql.window(exp.Sum(this=sql.col("__n")), []), "__rows"),
        )
        .from_(groups.subquery("__duplicates"))
        .order_by(exp.Ordered(this=sql.col("__n"), desc=True), *[sql.col(c) for c in spine.keys])
        .limit(1)
    )
    _, rows = fetch(probe)
    if rows:
        *values, n, duplicated, total = rows[0]
        key = ", ".join(f"{c}={v!r}" for c, v in zip(spine.keys, values, strict=True))
        raise FeatureError(
            f"spine source '{spine.source}' has {duplicated:,} duplicate "
            f"{'key' if duplicated == 1 else 'keys'} ({total:,} rows), e.g. {key} on {n:,} rows; "
            "spine.keys must identify each event once (add a column to spine.keys, or leave "
            "the duplicates out with spine.filter)"
        )


def _check_label_values(config: ProjectConfig, table: pa.Table) -> None:
    """An integer label must be 0 or 1 (its type was checked before the build)."""
    label = table.column("label")
    if not pa.types.is_integer(label.type):
        return
    bad = pc.filter(label, pc.invert(pc.is_in(label, pa.array([0, 1], label.type))))
    if len(bad):
        raise FeatureError(
            f"mlprod.yaml: spine.label: '{config.spine.label}' gives {len(bad):,} values other "
            f"than 0 and 1 among {table.num_rows:,} labelled events (e.g. {bad[0].as_py()}); "
            "the label must be a boolean or 0/1 (write a condition, e.g. 'amount > 0')"
        )


def framed_groups(fetch: Fetch, graph: FeatureGraph, names: list[str]) -> frozenset[str]:
    """Spark: the aggregate groups whose windows hold few rows, which slide frames over
    them (see ``engine.frame_rows``); none on the other engines."""
    engine = graph.config.engine
    limit = FRAME_ROWS if engine.frame_rows is None else engine.frame_rows
    if engine.kind != "spark" or limit == 0:
        return frozenset()
    densities = MatrixCompiler(graph).window_densities(names)
    few = set()
    for prefix, query in densities.items():
        density = fetch(query)[1][0][0]
        if density is None or density <= limit:  # None: no rows at all
            few.add(prefix)
    return frozenset(few)


def _event_counts(fetch: Fetch, training: TrainingEvents, as_of: datetime) -> dict[str, int]:
    columns, rows = fetch(training.counts_query(as_of))
    # Sums over no events (a spine.filter that keeps none) are NULL: none counted.
    return {column: int(v or 0) for column, v in zip(columns, rows[0], strict=True)}


def definition_hashes(
    config: ProjectConfig, graph: FeatureGraph, names: list[str]
) -> dict[str, str]:
    """A hash per feature over its definition, its source's time rules and its dependencies'."""
    hashes: dict[str, str] = {}
    spine = config.spine.model_dump(mode="json", by_alias=True)
    for name in graph.closure(names):
        node = graph.nodes[name]
        content: dict[str, Any] = {
            "feature": node.feature.model_dump(mode="json", by_alias=True, exclude={"description"}),
            "spine": spine,
            "deps": [hashes[d] for d in node.deps],
        }
        source = _source_of(node)
        if source:
            src = config.sources[source]
            content["source"] = {
                "from": src.location.model_dump(mode="json", by_alias=True),
                "time": src.time,
                "available_at": src.available_at,
            }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        hashes[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {n: hashes[n] for n in names}


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
