"""Compile feature definitions into one DuckDB query that obeys the point-in-time rule.

The rule: a row of any source is visible to a prediction at time ``t`` only if its
availability time is strictly before ``t``. The query is built in stages:

* ``__spine``: the prediction events, with ``__t`` (prediction time) and a row id;
* one CTE per dependency level, each adding the features whose inputs are ready:
  row expressions, lookups (LEFT JOIN), as-of joins (ASOF JOIN on ``t > available_at``) and
  windowed aggregates (see :mod:`mlprod.features.aggregates`);
* a final projection with the features under their own names, ordered by time and keys.

Features that read the same source through the same keys share one join.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.features.aggregates import AggregateGroup, aggregate_groups
from mlprod.features.dialects import Engine, for_engine, render
from mlprod.features.events import Events, TrainingEvents
from mlprod.features.expressions import rewrite_columns
from mlprod.features.graph import FeatureGraph, Node
from mlprod.project.config import AsofFeature, ExprFeature, LookupFeature

PREV = "__p"


def feature_column(name: str) -> str:
    """The internal column of a feature (kept apart from spine columns of the same name)."""
    return f"__f_{name}"


@dataclass
class _Query:
    """The CTEs of the query being built, in order, and which of them a staged build keeps
    as tables of their own (see :func:`staged`)."""

    ctes: list[tuple[str, exp.Select, bool]] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)

    def add(
        self, name: str, select: exp.Select, materialized: bool = False, table: bool = False
    ) -> None:
        self.ctes.append((name, select, materialized))
        if materialized or table:
            self.tables.add(name)

    def finish(self, final: exp.Select) -> exp.Select:
        for name, select, materialized in self.ctes:
            final = final.with_(
                exp.to_identifier(name, quoted=True),
                as_=select,
                materialized=materialized or None,
                copy=False,  # the query is built fresh; copying it per CTE was quadratic
            )
        return final


@dataclass(frozen=True)
class Stage:
    """One step of a staged build: a table computed from the sources and earlier stages."""

    name: str
    select: exp.Select
    drop_after: tuple[str, ...]  # earlier stages no later step reads
    features: tuple[str, ...] = ()  # the features it computes, or those of the steps reading it
    prepares: bool = False  # True: it computes none itself (the spine, running totals, ...)


@dataclass(frozen=True)
class StagedQuery:
    """The training query cut at its CTEs, to run as one temporary table after another.

    The same statements as the single query (``MatrixCompiler.sql``); run in stages, each
    intermediate table is computed once and dropped as soon as nothing later reads it, which
    keeps the peak memory of a large build down.
    """

    stages: tuple[Stage, ...]
    final: exp.Select
    final_drops: tuple[str, ...]
    final_features: tuple[str, ...] = ()  # the features the final select computes itself


def staged(query: exp.Select, tables: set[str]) -> StagedQuery:
    """Cut a query with CTEs into stages and the final select.

    A CTE becomes a stage of its own when it is one of ``tables`` (one row per event: the
    spine, each level, each probe) or when more than one place reads it; any other CTE stays a
    CTE of its one reader, where DuckDB can stream it instead of storing it. So does a table
    that only the final select reads, once (the last level): storing it would only copy it.
    """
    key = "with_" if "with_" in query.args else "with"
    with_ = query.args.get(key)
    ctes = list(with_.expressions) if with_ is not None else []
    final = query.copy()
    final.set(key, None)
    names = [cte.alias for cte in ctes]
    steps = {cte.alias: cte.this.copy() for cte in ctes} | {"": final}
    order = [*names, ""]
    reads = Counter(t.name for step in steps.values() for t in step.find_all(exp.Table))
    kept = [n for n in names if reads[n] > 1 or (n in tables and not _reads(final, n))]
    for index, name in enumerate(names):
        if name in kept:
            continue
        reader = next((r for r in order[index + 1 :] if _reads(steps[r], name)), None)
        if reader is not None:  # a CTE nothing reads is left out
            steps[reader] = steps[reader].with_(
                exp.to_identifier(name, quoted=True), as_=steps[name]
            )
    last = {n: max(i for i, r in enumerate([*kept, ""]) if _reads(steps[r], n)) for n in kept}
    drops = [tuple(n for n in kept if last[n] == i) for i in range(len(kept) + 1)]
    own = {name: _computed_features(steps[name]) for name in [*kept, ""]}
    stages = []
    for i, name in enumerate(kept):
        readers = [r for r in [*kept[i + 1 :], ""] if _reads(steps[r], name)]
        served = tuple(dict.fromkeys(f for r in readers for f in own[r]))
        features, prepares = (own[name], False) if own[name] else (served, True)
        stages.append(Stage(name, steps[name], drops[i], features, prepares))
    return StagedQuery(tuple(stages), steps[""], drops[-1], own[""])


def _computed_features(step: exp.Select) -> tuple[str, ...]:
    """Features whose column a step defines (``... AS __f_name``), not ones it passes on
    (a stream's key, ``__k0 AS __f_name``: see :func:`~mlprod.features.streamed.spine_columns`;
    a column carried under its own name, ``__p.__f_name AS __f_name``)."""
    prefix = feature_column("")
    found = (
        a.alias
        for a in step.find_all(exp.Alias)
        if a.alias.startswith(prefix)
        and not (
            isinstance(a.this, exp.Column)
            and (a.this.name.startswith("__k") or a.this.name == a.alias)
        )
    )
    return tuple(dict.fromkeys(name.removeprefix(prefix) for name in found))


def _reads(step: exp.Select, name: str) -> bool:
    return any(t.name == name for t in step.find_all(exp.Table))


class MatrixCompiler:
    """Turns a :class:`FeatureGraph` into SQL over views named after the project's sources."""

    def __init__(self, graph: FeatureGraph, framed: Collection[str] = ()) -> None:
        self.graph = graph
        self.config = graph.config
        self.framed = frozenset(framed)  # aggregate groups that slide frames on Spark

    # --- public ------------------------------------------------------------------------

    def query(self, events: Events, names: list[str] | None = None) -> exp.Select:
        """The features of ``events`` (see :mod:`mlprod.features.events`) as one query: the
        spine keys, ``prediction_time``, the events' carried columns, then the features."""
        return self._build(events, names)[0]

    def staged(
        self, events: Events, names: list[str] | None = None, engine: Engine = "duckdb"
    ) -> StagedQuery:
        """The same query in stages (see :class:`StagedQuery`), for ``engine``."""
        query, tables = self._build(events, names, engine)
        return staged(for_engine(query, engine), tables)

    def training_query(
        self,
        as_of: datetime,
        names: list[str] | None = None,
        training: TrainingEvents | None = None,
    ) -> exp.Select:
        """The training matrix: keys, prediction_time, label, label_available_at, the per-row
        values of ``train.value`` and the features, for events whose label is known strictly
        before ``as_of``."""
        return self.query(self.training_events(as_of, names, training), names)

    def staged_query(
        self,
        as_of: datetime,
        names: list[str] | None = None,
        training: TrainingEvents | None = None,
        engine: Engine = "duckdb",
    ) -> StagedQuery:
        """The training query in stages (see :class:`StagedQuery`), for ``engine``."""
        return self.staged(self.training_events(as_of, names, training), names, engine)

    def training_events(
        self, as_of: datetime, names: list[str] | None, training: TrainingEvents | None = None
    ) -> Events:
        training = training or TrainingEvents(self.graph)
        return training.events(self.event_columns(names), as_of)

    def event_columns(self, names: list[str] | None) -> list[str]:
        """The spine columns an event must carry: its keys and what the features read."""
        read = self.graph.spine_columns_read(names)
        return list(dict.fromkeys([*self.config.spine.keys, *read]))

    def window_densities(self, names: list[str] | None = None) -> dict[str, exp.Select]:
        """Per aggregate group with a sum, mean or std (by prefix), the query of its window
        density (see :meth:`AggregateGroup.window_density`), in DuckDB's SQL."""
        aggregates = [n for n in self._nodes(names) if n.feature.kind == "aggregate"]
        queries = {g.prefix: g.window_density() for g in aggregate_groups(aggregates, self.graph)}
        return {prefix: query for prefix, query in queries.items() if query is not None}

    def sql(
        self,
        as_of: datetime,
        names: list[str] | None = None,
        training: TrainingEvents | None = None,
        engine: Engine = "duckdb",
    ) -> str:
        events = self.training_events(as_of, names, training)
        query = self._build(events, names, engine)[0]
        return render(for_engine(query, engine), engine, pretty=True)

    # --- stages ------------------------------------------------------------------------

    def _nodes(self, names: list[str] | None) -> list[Node]:
        wanted = self.graph.closure(names) if names else list(self.graph.nodes)
        return [self.graph.nodes[name] for name in wanted]

    def _build(
        self, events: Events, names: list[str] | None, engine: Engine = "duckdb"
    ) -> tuple[exp.Select, set[str]]:
        """The query (still in DuckDB's SQL: see :func:`for_engine`), and which of its CTEs
        hold one row per event. Aggregates are planned for ``engine`` (see
        :class:`~mlprod.features.aggregates.AggregateGroup`)."""
        nodes = self._nodes(names)
        query = _Query()
        return self._query(query, events, nodes, engine), query.tables

    def _query(
        self, query: _Query, events: Events, nodes: list[Node], engine: Engine
    ) -> exp.Select:
        query.add("__spine", events.select, materialized=True)
        previous = "__spine"
        by_level: dict[int, list[Node]] = defaultdict(list)
        for node in nodes:
            by_level[node.level].append(node)
        aggregates = [n for n in nodes if n.feature.kind == "aggregate"]
        groups = aggregate_groups(aggregates, self.graph, engine, self.framed)
        for group in groups:
            group.add_source_ctes(query)
        for level in sorted(by_level):
            name = f"__level_{level}"
            query.add(
                name, self._level(query, previous, by_level[level], groups), materialized=True
            )
            previous = name
        keys = [sql.col(k) for k in (events.keys or self.config.spine.keys)]
        final = exp.select(
            *keys,
            sql.alias(sql.col("__t"), "prediction_time"),
            *[sql.alias(sql.col(inner), outer) for inner, outer in events.carry],
            *[sql.alias(sql.col(feature_column(n.name)), n.name) for n in nodes],
        ).from_(sql.table(previous))
        final = final.order_by(*[sql.col(name) for name in events.order])
        return query.finish(final)

    def _level(
        self, query: _Query, previous: str, nodes: list[Node], groups: list[AggregateGroup]
    ) -> exp.Select:
        select = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier(PREV))).from_(
            sql.table(previous, PREV)
        )
        projections: list[exp.Expr] = []
        lookups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Node]] = defaultdict(list)
        asofs: dict[tuple[str, tuple[tuple[str, str], ...]], list[Node]] = defaultdict(list)
        for node in nodes:
            feature = node.feature
            if isinstance(feature, ExprFeature):
                assert node.expr is not None
                value = rewrite_columns(node.expr, partial(self.spine_ref, own=node.name))
                projections.append(sql.alias(value, feature_column(node.name)))
            elif isinstance(feature, LookupFeature):
                lookups[(feature.source, tuple(feature.key_pairs()))].append(node)
            elif isinstance(feature, AsofFeature):
                asofs[(feature.source, tuple(feature.key_pairs()))].append(node)
        for index, ((source, pairs), members) in enumerate(lookups.items()):
            select, columns = self._join_lookup(
                select, f"__lookup_{nodes[0].level}_{index}", source, pairs, members
            )
            projections += columns
        level = nodes[0].level
        for index, ((source, pairs), members) in enumerate(asofs.items()):
            probe = self._narrow(previous, pairs)
            probe, columns = self._join_asof(
                query, probe, f"__asof_{level}_{index}", source, pairs, members
            )
            select = self._join_probe(
                query, select, f"__asof_{level}_{index}_probe", probe, columns
            )
            projections += [
                sql.col(feature_column(n.name), f"__asof_{level}_{index}_probe") for n in members
            ]
        level_names = {n.name for n in nodes}
        for group in groups:
            members = [n for n in group.nodes if n.name in level_names]
            if members:
                probe = self._narrow(previous, group.pairs)
                probe, columns = group.join(query, probe, previous, members, self)
                name = f"{group.prefix}_probe_{level}"
                select = self._join_probe(query, select, name, probe, columns)
                projections += [sql.col(feature_column(n.name), name) for n in members]
        return select.select(*projections, copy=False)

    # --- joins -------------------------------------------------------------------------

    def _narrow(self, previous: str, pairs: tuple[tuple[str, str], ...]) -> exp.Select:
        """The level's rows with only row id, time and keys: ASOF joins move less data."""
        names = dict.fromkeys(self.spine_ref(spine_name).name for spine_name, _ in pairs)
        inner = exp.select(sql.col("__row"), sql.col("__t"), *[sql.col(n) for n in names])
        return exp.select(sql.col("__row", PREV)).from_(
            sql.subquery(inner.from_(sql.table(previous)), PREV)
        )

    @staticmethod
    def _join_probe(
        query: _Query,
        select: exp.Select,
        name: str,
        probe: exp.Select,
        columns: list[exp.Expr],
    ) -> exp.Select:
        """Store a probe's features as a CTE and join it back to the level by row id."""
        query.add(name, probe.select(*columns), table=True)
        on = exp.EQ(this=sql.col("__row", name), expression=sql.col("__row", PREV))
        return select.join(sql.table(name), on=on, join_type="left")

    def spine_ref(self, name: str, own: str | None = None) -> exp.Column:
        """A name as seen from a level: a feature's column, or else a spine column."""
        if name in self.graph.nodes and name != own:
            return sql.col(feature_column(name), PREV)
        return sql.col(name, PREV)

    def key_condition(
        self, alias_name: str, pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]
    ) -> list[exp.Expr]:
        return [
            exp.EQ(this=sql.col(f"__k{i}", alias_name), expression=self.spine_ref(spine_name))
            for i, (spine_name, _) in enumerate(pairs)
        ]

    def source_select(
        self, source: str, pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]], timed: bool
    ) -> exp.Select:
        """SELECT the key columns as __k0.. (and availability as __at) from a source."""
        select = exp.select(
            *[sql.alias(sql.col(column), f"__k{i}") for i, (_, column) in enumerate(pairs)]
        )
        available = self.graph.times[source].available_at
        if timed and available is not None:
            select = select.select(sql.alias(sql.timestamp(available.copy()), "__at"))
            select = select.where(
                exp.not_(exp.Is(this=sql.timestamp(available.copy()), expression=exp.null()))
            )
        return select.from_(sql.table(source))

    def _join_lookup(
        self,
        select: exp.Select,
        name: str,
        source: str,
        pairs: tuple[tuple[str, str], ...],
        members: list[Node],
    ) -> tuple[exp.Select, list[exp.Expr]]:
        timed = self.graph.times[source].available_at is not None
        inner = self.source_select(source, pairs, timed)
        inner = inner.select(
            *[sql.alias(n.value.copy(), f"__v{i}") for i, n in enumerate(members) if n.value]
        )
        condition = self.key_condition(name, pairs)
        if timed:
            condition.append(exp.GT(this=sql.col("__t", PREV), expression=sql.col("__at", name)))
        select = select.join(sql.subquery(inner, name), on=sql.and_all(condition), join_type="left")
        columns: list[exp.Expr] = [
            sql.alias(sql.col(f"__v{i}", name), feature_column(n.name))
            for i, n in enumerate(members)
        ]
        return select, columns

    def _join_asof(
        self,
        query: _Query,
        select: exp.Select,
        name: str,
        source: str,
        pairs: tuple[tuple[str, str], ...],
        members: list[Node],
    ) -> tuple[exp.Select, list[exp.Expr]]:
        values = [sql.alias(n.value.copy(), f"__v{i}") for i, n in enumerate(members) if n.value]
        inner = self.source_select(source, pairs, timed=True).select(*values)
        # Rows tied on (key, availability) resolve to the largest value, feature by feature,
        # so a feature's value never depends on which other features are declared.
        keys = [sql.col(f"__k{i}") for i in range(len(pairs))]
        deduped = (
            exp.select(
                *keys,
                sql.col("__at"),
                *[
                    sql.alias(exp.Max(this=sql.col(f"__v{i}")), f"__v{i}")
                    for i in range(len(members))
                ],
            )
            .from_(inner.subquery("__rows"))
            .group_by(*[k.copy() for k in keys], sql.col("__at"))
        )
        query.add(name, deduped)
        condition = [
            *self.key_condition(name, pairs),
            exp.GT(this=sql.col("__t", PREV), expression=sql.col("__at", name)),
        ]
        select = select.join(sql.table(name), on=sql.and_all(condition), join_type="asof left")
        columns: list[exp.Expr] = []
        for i, node in enumerate(members):
            assert isinstance(node.feature, AsofFeature)
            value: exp.Expr = sql.col(f"__v{i}", name)
            if node.feature.max_staleness is not None:
                fresh = exp.GTE(
                    this=sql.col("__at", name),
                    expression=sql.minus(sql.col("__t", PREV), node.feature.max_staleness),
                )
                value = sql.case_when(fresh, value)
            columns.append(sql.alias(value, feature_column(node.name)))
        return select, columns
