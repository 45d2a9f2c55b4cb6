"""Fill the online store from the sources (materialize) or from new events (push).

Both run each online table's select (:mod:`mlprod.features.online_plan`) in DuckDB over the
rows: the same parsed expressions as the batch query compute the keys, availability times
and values, so no feature is written a second time. Pushed rows are checked against their
source's contract first, as a build checks a source, and stored once however often they are
pushed (their event id is a hash of the row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.contracts import check_schema, profile_and_check
from mlprod.data.online_store import OnlineStore, TableLayout, ValueType
from mlprod.data.sources import connect, open_source
from mlprod.errors import FeatureError, did_you_mean
from mlprod.features.events import timestamp_literal
from mlprod.features.graph import FeatureGraph
from mlprod.features.online_plan import OnlinePlan, OnlineTable
from mlprod.features.typecheck import duckdb_message
from mlprod.progress import NO_PROGRESS, ProgressCallback


@dataclass(frozen=True)
class IngestSummary:
    """What a materialize or push applied, per online table, and each source's latest time."""

    rows: dict[str, int]  # table id -> rows newly stored
    read: dict[str, int]  # table id -> rows computed
    latest: dict[str, datetime | None]  # source -> latest availability stored

    @property
    def applied(self) -> int:
        return sum(self.rows.values())


def declare(
    con: duckdb.DuckDBPyConnection,
    graph: FeatureGraph,
    tables: Sequence[OnlineTable],
    store: OnlineStore,
) -> dict[str, TableLayout]:
    """Create the store's tables, typed by what DuckDB says each value is (the tables'
    sources must be registered in ``con``)."""
    layouts: dict[str, TableLayout] = {}
    for table in tables:
        query = table.select(graph).limit(0).sql("duckdb", identify=True)
        schema = con.sql(query).to_arrow_table().schema
        types = tuple(_value_type(schema.field(f"__v{i}").type) for i in range(len(table.values)))
        layouts[table.id] = TableLayout(len(table.pairs), types)
    store.declare(layouts)
    return layouts


def materialize(
    folder: Path,
    graph: FeatureGraph,
    plan: OnlinePlan,
    store: OnlineStore,
    as_of: datetime,
    progress: ProgressCallback = NO_PROGRESS,
) -> IngestSummary:
    """Store every source row available strictly before ``as_of`` (the state at ``as_of``)."""
    con = connect(graph.config.engine)
    try:
        for source in plan.sources:
            open_source(con, folder, graph.config, source)
        declare(con, graph, plan.tables, store)
        return ingest_rows(con, graph, plan.tables, store, as_of, progress)
    finally:
        con.close()


def push(
    graph: FeatureGraph,
    plan: OnlinePlan,
    store: OnlineStore,
    source: str,
    rows: pa.Table,
    progress: ProgressCallback = NO_PROGRESS,
) -> IngestSummary:
    """Apply new rows of ``source`` to the online tables that read it."""
    if source not in graph.config.sources:
        raise FeatureError(f"unknown source '{source}'{did_you_mean(source, graph.config.sources)}")
    tables = plan.tables_of(source)
    if not tables:
        used = ", ".join(f"'{s}'" for s in plan.sources) or "none"
        raise FeatureError(
            f"no online feature reads source '{source}', so its events are not needed online "
            f"(sources read online: {used})"
        )
    con = connect(graph.config.engine)
    try:
        con.register("__pushed", rows)
        con.execute(f"CREATE TEMP VIEW {_quoted(source)} AS SELECT * FROM __pushed")
        declared = graph.config.sources[source]
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {_quoted(source)}").fetchall()}
        check_schema(source, declared, types)
        profile_and_check(con, source, declared, types)
        declare(con, graph, tables, store)
        return ingest_rows(con, graph, tables, store, None, progress)
    finally:
        con.close()


def ingest_rows(
    con: duckdb.DuckDBPyConnection,
    graph: FeatureGraph,
    tables: Sequence[OnlineTable],
    store: OnlineStore,
    as_of: datetime | None = None,
    progress: ProgressCallback = NO_PROGRESS,
) -> IngestSummary:
    """Compute the rows of ``tables`` from the sources registered in ``con`` (those
    available before ``as_of``, if given) and store them."""
    task = progress.start("filling the online store", len(tables))
    applied: dict[str, int] = {}
    computed: dict[str, int] = {}
    latest: dict[str, datetime | None] = {}
    for table in tables:
        select = table.select(graph)
        if as_of is not None and table.timed:
            select = select.where(exp.LT(this=sql.col("__at"), expression=timestamp_literal(as_of)))
        try:
            rows = con.sql(select.sql("duckdb", identify=True)).to_arrow_table()
        except duckdb.Error as exc:
            raise FeatureError(
                f"computing the online rows of source '{table.source}' failed: "
                f"{duckdb_message(exc)}"
            ) from None
        applied[table.id] = store.write(table.id, rows)
        computed[table.id] = rows.num_rows
        if table.timed and rows.num_rows:
            top = rows.column("__at").to_pylist()
            newest = max(t for t in top if t is not None)
            previous = latest.get(table.source)
            latest[table.source] = newest if previous is None else max(previous, newest)
        task.advance()
    task.finish(f"{sum(applied.values()):,} new rows in {len(tables)} online tables")
    for source, newest in latest.items():
        if newest is not None:
            stored = sum(applied[t.id] for t in tables if t.source == source)
            store.mark_applied(source, newest, stored)
    return IngestSummary(applied, computed, latest)


def _value_type(arrow: pa.DataType) -> ValueType:
    """The store type of a value column (decimals are stored as doubles)."""
    found = _arrow_family(arrow)
    if found is None:
        raise FeatureError(f"an online value has type {arrow}, which cannot be stored online")
    return found


def _arrow_family(arrow: pa.DataType) -> ValueType | None:
    if pa.types.is_integer(arrow):
        return "int"
    if pa.types.is_floating(arrow) or pa.types.is_decimal(arrow):
        return "float"
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "string"
    if pa.types.is_boolean(arrow):
        return "bool"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_null(arrow):
        return "float"
    return None


def _quoted(name: str) -> str:
    return sql.table(name).sql("duckdb", identify=True)
