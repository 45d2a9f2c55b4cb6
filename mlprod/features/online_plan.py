"""What the online store must hold for a set of features, derived from their definitions.

Lookups, as-of joins and aggregates read other rows than the event's own: the rows of a
source with the same key, available before the prediction time. Online, those rows are kept in
an *online table* per (source, key columns): each row holds its key, its availability time,
an event id and the values the features need — each value computed by DuckDB from the same
parsed expression the batch query uses (an aggregate's filter folded into its value exactly as
the batch engine folds it). A request then only picks rows by key and time and combines them.

A table's id hashes everything that shapes its rows, so a changed definition never reads rows
stored for an older one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.features.aggregates import effective_value
from mlprod.features.expressions import DIALECT
from mlprod.features.graph import FeatureGraph, Node
from mlprod.project.config import AggregateFeature, AsofFeature, ExprFeature, LookupFeature

# Rows of a static table are available since (long before) any prediction: a time every store
# can hold exactly (Redis scores are doubles: microseconds are exact after 1685).
STATIC_AT = datetime(1700, 1, 1)
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OnlineTable:
    """The rows of one source by one key, with the values its features read."""

    id: str
    source: str
    pairs: Pairs  # (spine-side name, source column)
    values: tuple[exp.Expr, ...]
    timed: bool

    def select(self, graph: FeatureGraph) -> exp.Select:
        """``__k0..``, ``__at``, ``__id`` and ``__v0..`` for every usable row of the source.

        Rows without an availability time (timed sources) are never visible, as in batch.
        The event id is a hash of the whole row and its occurrence among identical rows, so
        the same event pushed twice is stored once.
        """
        columns = list(graph.config.sources[self.source].columns)
        content = exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier(c, quoted=True), expression=sql.col(c))
                for c in columns
            ]
        )
        digest = exp.func("md5", exp.cast(exp.func("to_json", content), exp.DataType.Type.TEXT))
        select = exp.select(
            *[sql.alias(sql.col(column), f"__k{i}") for i, (_, column) in enumerate(self.pairs)]
        )
        available = graph.times[self.source].available_at
        if self.timed and available is not None:
            at = sql.timestamp(available.copy())
            select = select.select(sql.alias(at, "__at")).where(
                exp.not_(exp.Is(this=at.copy(), expression=exp.null()))
            )
        else:
            literal = exp.Literal.string(STATIC_AT.isoformat(sep=" "))
            select = select.select(
                sql.alias(exp.cast(literal, exp.DataType.Type.TIMESTAMP), "__at")
            )
        select = select.select(
            sql.alias(digest, "__h"),
            *[sql.alias(value.copy(), f"__v{i}") for i, value in enumerate(self.values)],
        ).from_(sql.table(self.source))
        occurrence = exp.cast(
            sql.window(exp.func("row_number"), [sql.col("__h")]), exp.DataType.Type.TEXT
        )
        event_id = exp.DPipe(
            this=exp.DPipe(this=sql.col("__h"), expression=exp.Literal.string("-")),
            expression=occurrence,
        )
        return exp.select(
            *[sql.col(f"__k{i}") for i in range(len(self.pairs))],
            sql.col("__at"),
            sql.alias(event_id, "__id"),
            *[sql.col(f"__v{i}") for i in range(len(self.values))],
        ).from_(sql.subquery(select, "__rows"))


@dataclass(frozen=True)
class OnlineFeature:
    """A source feature as the online evaluator reads it: which table and which value."""

    node: Node
    table: OnlineTable
    value: int  # index into table.values, -1 for a count of rows


@dataclass(frozen=True)
class OnlinePlan:
    """The online tables of a set of features, and where each source feature reads."""

    tables: tuple[OnlineTable, ...]
    features: dict[str, OnlineFeature]

    def tables_of(self, source: str) -> list[OnlineTable]:
        return [t for t in self.tables if t.source == source]

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(t.source for t in self.tables))


def plan_online(graph: FeatureGraph, names: list[str] | None = None) -> OnlinePlan:
    """Group the source features of ``names`` (and what they need) into online tables."""
    wanted = graph.closure(names) if names else list(graph.nodes)
    grouped: dict[tuple[str, Pairs], list[tuple[Node, exp.Expr | None]]] = {}
    for name in wanted:
        node = graph.nodes[name]
        feature = node.feature
        if isinstance(feature, ExprFeature):
            continue
        value = effective_value(node) if isinstance(feature, AggregateFeature) else node.value
        grouped.setdefault((feature.source, tuple(feature.key_pairs())), []).append((node, value))
    tables: list[OnlineTable] = []
    features: dict[str, OnlineFeature] = {}
    for (source, pairs), members in grouped.items():
        texts: dict[str, exp.Expr] = {}
        for _, value in members:
            if value is not None:
                texts.setdefault(value.sql(DIALECT), value)
        timed = graph.times[source].available_at is not None
        table = OnlineTable(
            _table_id(graph, source, pairs, list(texts), timed),
            source,
            pairs,
            tuple(texts.values()),
            timed,
        )
        tables.append(table)
        for node, value in members:
            index = list(texts).index(value.sql(DIALECT)) if value is not None else -1
            features[node.name] = OnlineFeature(node, table, index)
    return OnlinePlan(tuple(tables), features)


def _table_id(
    graph: FeatureGraph, source: str, pairs: Pairs, values: list[str], timed: bool
) -> str:
    times = graph.times[source]
    available = times.available_at.sql(DIALECT) if times.available_at is not None else ""
    columns = sorted(graph.config.sources[source].columns)
    content = "\n".join([source, repr([c for _, c in pairs]), available, *values, repr(columns)])
    digest = hashlib.sha256(f"{content}\n{timed}".encode()).hexdigest()[:12]
    return f"{source}_{digest}"


def is_timed_lookup(node: Node, graph: FeatureGraph) -> bool:
    feature = node.feature
    return (
        isinstance(feature, LookupFeature) and graph.times[feature.source].available_at is not None
    )


def is_asof(node: Node) -> bool:
    return isinstance(node.feature, AsofFeature)
