"""Evaluate features for live requests, from the same definitions as the batch query.

A request carries the event's own fields (the request schema) and a prediction time ``t``.
Features are computed level by level, as the batch query computes them:

* ``expr`` features run their parsed expression, compiled to a Python function
  (:mod:`mlprod.features.pyexpr`); an expression it cannot compile runs in DuckDB instead;
* lookups, as-of joins and aggregates read their key's rows from the online store (see
  :mod:`mlprod.features.online_plan`) and apply the point-in-time rule at ``t``: only rows
  available strictly before ``t`` (``t - lag`` for aggregates) are seen;
* a count, count_distinct, sum, mean, std, min or max whose window no other feature of the
  request reads row by row is summarized by the store itself when it can (SQLite; see
  :mod:`mlprod.features.summaries`), exactly.

The semantics are those of the batch engine, and the same property and boundary tests
against the brute-force reference check both (``tests/test_point_in_time*.py``):

* aggregate: rows in ``[t - lag - window, t - lag)``; count and count_distinct of an empty
  window are 0, sum 0.0, the rest NULL; ``last`` is the latest non-null value (ties: the
  largest);
* as-of: the rows with the latest availability before ``t``; per value the largest non-null
  of those tied rows; NULL when older than ``t - max_staleness``;
* lookup: the key's row (of a timed table, the latest available before ``t``).

A key with a NULL part matches nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from mlprod import sqlparts as sql
from mlprod.data.online_store import OnlineRows, OnlineStore, Read, Summary
from mlprod.data.types import type_family
from mlprod.features.expressions import column_names, rewrite_columns
from mlprod.features.graph import FeatureGraph, Node
from mlprod.features.online_plan import OnlineFeature, OnlinePlan, plan_online
from mlprod.features.pyexpr import UnsupportedExpression, compile_row_function
from mlprod.features.summaries import SUMMARIZED, Summaries, summarized_value
from mlprod.features.typecheck import check_types
from mlprod.project.config import AggregateFeature, AsofFeature, ColumnType, ExprFeature

EPOCH = datetime(1970, 1, 1)
MICROSECOND = timedelta(microseconds=1)
FOREVER = 2**53 - 1  # later than any availability time, in microseconds (year 2255)

Row = Mapping[str, Any]
RowFunction = Callable[[Row], Any]


def micros(time: datetime) -> int:
    """Microseconds since the epoch of a naive UTC time (exact, unlike float seconds)."""
    return (time - EPOCH) // MICROSECOND


def feature_key(name: str) -> str:
    """Where a feature's value sits in the evaluation context (apart from spine columns)."""
    return f"__f_{name}"


@dataclass(frozen=True)
class _Expr:
    node: Node
    function: RowFunction


_WINDOW, _LATEST_BEFORE, _LATEST = 0, 1, 2  # how a source feature reads its key's rows


@dataclass(frozen=True)
class _Source:
    """A source feature's read, worked out once: where its key parts sit in the context,
    its table, and what it reads (a window, or the latest rows before ``t`` or ever)."""

    online: OnlineFeature
    refs: tuple[str, ...]
    mode: int
    lag: int  # microseconds (windows)
    window: int
    summarizable: bool

    def read(self, context: Row, t: int) -> Read | None:
        key: list[Any] = []
        for ref in self.refs:
            value = context.get(ref)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None  # a NULL key matches nothing
            key.append(value)
        table = self.online.table.id
        if self.mode == _WINDOW:
            end = t - self.lag
            return Read(table, tuple(key), until=end, since=end - self.window)
        return Read(
            table, tuple(key), until=t if self.mode == _LATEST_BEFORE else FOREVER, latest=True
        )


class OnlineFeatures:
    """Computes the features ``names`` (and what they need) for requests, from a store."""

    def __init__(
        self,
        graph: FeatureGraph,
        store: OnlineStore,
        names: list[str] | None = None,
        fallback: Callable[[Node, Mapping[str, str]], RowFunction] | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.names = graph.closure(names) if names else list(graph.nodes)
        self.plan: OnlinePlan = plan_online(graph, self.names)
        self._summarizes = callable(getattr(store, "read_summarized", None))
        self.unsupported: dict[str, str] = {}  # feature -> why it runs in DuckDB
        levels: dict[int, list[str]] = {}
        for name in self.names:
            levels.setdefault(graph.nodes[name].level, []).append(name)
        self._levels = [levels[level] for level in sorted(levels)]
        self._exprs = {
            name: self._compile(graph.nodes[name], fallback)
            for name in self.names
            if isinstance(graph.nodes[name].feature, ExprFeature)
        }
        self._sources = {name: self._source(online) for name, online in self.plan.features.items()}

    def _source(self, online: OnlineFeature) -> _Source:
        feature, own = online.node.feature, online.node.name
        refs = tuple(self._ref(spine_name, own) for spine_name, _ in online.table.pairs)
        if isinstance(feature, AggregateFeature):
            lag, window = feature.lag // MICROSECOND, feature.window // MICROSECOND
            summarizable = self._summarizes and _summarizable(online)
            return _Source(online, refs, _WINDOW, lag, window, summarizable)
        timed = isinstance(feature, AsofFeature) or online.table.timed
        return _Source(online, refs, _LATEST_BEFORE if timed else _LATEST, 0, 0, False)

    def _compile(
        self, node: Node, fallback: Callable[[Node, Mapping[str, str]], RowFunction] | None
    ) -> _Expr:
        assert node.expr is not None
        columns = self._columns(node)
        try:
            function = compile_row_function(node.expr, columns, types=self._types(node))
            return _Expr(node, function)
        except UnsupportedExpression as exc:
            if fallback is None:
                raise
            self.unsupported[node.name] = str(exc)
            return _Expr(node, fallback(node, columns))

    def _columns(self, node: Node) -> dict[str, str]:
        """Each column an expression reads -> its key in the context (features apart)."""
        assert node.expr is not None
        return {c: self._ref(c, node.name) for c in column_names(node.expr)}

    def _types(self, node: Node) -> dict[str, ColumnType]:
        """The contract types of the spine columns an expression reads, and the SQL types of
        the features it reads, so that it computes in DuckDB's types."""
        assert node.expr is not None
        contracts = self.graph.config.sources[self.graph.config.spine.source].columns
        types: dict[str, ColumnType] = {}
        for column in column_names(node.expr):
            if self._ref(column, node.name) == column:
                if column in contracts:
                    types[column] = contracts[column].type
                continue
            family = type_family(self._feature_types.get(column, ""))
            if family is not None:
                types[column] = family
        return types

    @cached_property
    def _feature_types(self) -> dict[str, str]:
        """Each feature's SQL type, from binding the batch query (no data read)."""
        return check_types(self.graph)

    def _ref(self, name: str, own: str) -> str:
        """A name as seen from feature ``own``: another feature's value, or a spine column."""
        return feature_key(name) if name in self.graph.nodes and name != own else name

    # --- evaluation ----------------------------------------------------------------------

    def compute(self, rows: Sequence[Row], times: Sequence[datetime]) -> list[dict[str, Any]]:
        """The features of each request row, as of its prediction time (naive UTC)."""
        contexts = [dict(row) for row in rows]
        cutoffs = [micros(t) for t in times]
        for level in self._levels:
            reads: dict[tuple[int, str, tuple[Any, ...], int | None], Read] = {}
            wanted: list[tuple[int, str, Read]] = []  # (row, feature, the rows it needs)
            pending: list[tuple[int, str, Read]] = []  # the same, for what may be summarized
            for name in level:
                node = self.graph.nodes[name]
                if isinstance(node.feature, ExprFeature):
                    function = self._exprs[name].function
                    for context in contexts:
                        context[feature_key(name)] = function(context)
                    continue
                source = self._sources[name]
                for i, context in enumerate(contexts):
                    read = source.read(context, cutoffs[i])
                    if read is None:
                        context[feature_key(name)] = _empty(source.online.node)
                        continue
                    if source.summarizable:
                        pending.append((i, name, read))
                        continue
                    wanted.append((i, name, read))
                    reads[_shared(i, read)] = _widest(reads.get(_shared(i, read)), read)
            summaries = Summaries()
            for i, name, read in pending:  # rows read anyway serve their window; else summarize
                shared = reads.get(_shared(i, read))
                if shared is not None and _covers(shared, read):
                    wanted.append((i, name, read))
                else:
                    summaries.add(i, read, self.plan.features[name])
            if reads or summaries:
                merged = list(reads.values())
                if summaries:
                    stored_rows, summarized = self.store.read_summarized(  # type: ignore[attr-defined]
                        merged, summaries.requests()
                    )
                else:
                    stored_rows, summarized = self.store.read(merged), []
                found = dict(zip(reads, stored_rows, strict=True))
                for i, name, read in wanted:
                    stored = found[_shared(i, read)]
                    online = self.plan.features[name]
                    value = _combine(online, stored, _within(stored, read), cutoffs[i])
                    contexts[i][feature_key(name)] = value
                for (i, name), result in summaries.results(summarized):
                    online = self.plan.features[name]
                    if isinstance(result, Summary):
                        value = summarized_value(online, result)
                    else:  # the store could not summarize exactly: the rows of the window
                        value = _combine(online, result, range(len(result)), cutoffs[i])
                    contexts[i][feature_key(name)] = value
        return [{name: context[feature_key(name)] for name in self.names} for context in contexts]


def _summarizable(online: OnlineFeature) -> bool:
    feature = online.node.feature
    return isinstance(feature, AggregateFeature) and feature.function in SUMMARIZED


def _covers(wide: Read, read: Read) -> bool:
    """Whether the rows of ``wide`` include every row ``read`` asks for."""
    if wide.latest or read.since is None:
        return False
    return (wide.since is None or wide.since <= read.since) and read.until <= wide.until


def _shared(row: int, read: Read) -> tuple[int, str, tuple[Any, ...], int | None]:
    """Reads of one request row that one store read can serve: the key's rows over the
    widest range its features ask for (each keeps its own part), or its latest rows."""
    return (row, read.table, read.key, read.until if read.latest else None)


def _widest(old: Read | None, new: Read) -> Read:
    """One read covering both (same table and key): features share a key's rows."""
    if old is None or new.latest:
        return new
    since = None if old.since is None or new.since is None else min(old.since, new.since)
    return Read(new.table, new.key, max(old.until, new.until), since)


def _within(rows: OnlineRows, read: Read) -> range:
    """The rows one feature asked for, out of a wider shared read: a slice (rows are sorted
    by availability time)."""
    if read.latest:
        return range(len(rows))
    start = 0 if read.since is None else bisect_left(rows.ats, read.since)
    return range(start, bisect_left(rows.ats, read.until, start))


def _empty(node: Node) -> Any:
    """A feature's value when nothing can match (a NULL key)."""
    feature = node.feature
    if isinstance(feature, AggregateFeature):
        if feature.function in ("count", "count_distinct"):
            return 0
        if feature.function == "sum":
            return 0.0
    return None


def _combine(online: OnlineFeature, rows: OnlineRows, span: range, t: int) -> Any:
    feature = online.node.feature
    i = online.value
    if isinstance(feature, AggregateFeature):
        return _aggregate(feature, i, rows, span)
    if not span:
        return None
    value = _largest(rows.columns[i][span.start : span.stop])  # rows tied on the latest time
    staleness = feature.max_staleness if isinstance(feature, AsofFeature) else None
    if staleness is not None and rows.ats[span.stop - 1] < t - staleness // MICROSECOND:
        return None
    return value


def _largest(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _aggregate(feature: AggregateFeature, i: int, rows: OnlineRows, span: range) -> Any:
    function = feature.function
    if function == "count" and i < 0:
        return len(span)
    column = rows.columns[i][span.start : span.stop]
    values = [v for v in column if v is not None]
    if function == "count":
        return len(values)
    if function == "count_distinct":
        return len(set(values))
    if function == "last":
        return _last(rows.ats[span.start : span.stop], column)
    if function in ("min", "max"):
        if not values:
            return None
        return min(values) if function == "min" else max(values)
    numbers = [float(v) for v in values]
    if function == "sum":
        return math.fsum(numbers)
    if not numbers:
        return None
    mean = math.fsum(numbers) / len(numbers)
    if function == "mean":
        return mean
    if len(numbers) < 2:
        return None  # a sample standard deviation needs two values
    return math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1))


def _last(ats: Sequence[int], values: Sequence[Any]) -> Any:
    """The latest non-null value; of values tied on that time, the largest."""
    for j in range(len(values) - 1, -1, -1):
        if values[j] is not None:
            best, k = values[j], j - 1
            while k >= 0 and ats[k] == ats[j]:
                if values[k] is not None and values[k] > best:
                    best = values[k]
                k -= 1
            return best
    return None


def duckdb_row_function(node: Node, columns: Mapping[str, str]) -> RowFunction:
    """Evaluate an expression the Python compiler does not cover in DuckDB, one row at a time
    (about a millisecond each: correct, if slower)."""
    import threading

    import duckdb
    import pyarrow as pa
    from sqlglot import exp

    assert node.expr is not None
    names = list(columns)
    tree = rewrite_columns(node.expr, lambda c: exp.column(f"__c{names.index(c)}", quoted=True))
    query = exp.select(sql.alias(tree, "__value")).from_("__row").sql("duckdb", identify=True)
    local = threading.local()

    def evaluate(row: Row) -> Any:
        con = getattr(local, "con", None)
        if con is None:
            con = local.con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
        values = {f"__c{i}": [row.get(columns[c])] for i, c in enumerate(names)}
        con.register("__row", pa.table(values) if values else pa.table({"__none": [1]}))
        return con.sql(query).fetchall()[0][0]

    return evaluate
