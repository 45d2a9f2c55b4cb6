"""Windowed aggregates per entity: rows available in ``[t - lag - window, t - lag)``.

Five strategies, chosen per function:

* count: running row counts per key ordered by availability time, read twice with ASOF
  joins, at ``t - lag`` and at ``t - lag - window``; the window's count is the difference.
  Linear in the data, whatever the window's density, and exact because counts are integers.
  (Sums are not done this way: a difference of two large float totals loses the digits of a
  small window, so one huge old value would change every later window's sum.)
* sum, mean, std: running totals that restart every window length
  (see :mod:`mlprod.features.blocked`), so rounding depends on two blocks, not on history.
* last: an ASOF join to the latest non-null value before ``t - lag``, kept if it is inside
  the window. Rows tied on availability time resolve to the largest value.
* count_distinct: each row of a value stands for that value from its availability time until
  the window has passed or the value's next row arrives, whichever is first; the distinct
  count at a cutoff is the number of rows arrived minus the number expired, one running
  count read with an ASOF join. Exact (integers) and linear, unlike a distinct count over a
  moving frame.
* min, max: spine and source rows in one stream, with a RANGE window frame
  ``[ts - window, ts - 1 microsecond]`` evaluated at the spine rows.

These are DuckDB's. Spark and PostgreSQL have no ASOF JOIN: on both, counts, distinct counts,
sums, means and deviations are streams the spine rows join at their cutoffs (see
:mod:`mlprod.features.streamed`); on PostgreSQL, count, sum, mean, std, min and max are RANGE
frames in one stream per group and lag instead, the sums in exact ``numeric``, whose moving
frames PostgreSQL updates without re-reading them. Min and max on Spark are such frames too,
over one stream per key (Spark slides a frame over a key's rows; the blocks are DuckDB's).

An empty window gives 0 for count, count_distinct and sum, and NULL for the others; a spine
row whose key is NULL sees an empty window.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.features.blocked import (
    BLOCKED,
    BlockedTotals,
    block_of,
    blocked_value,
    key_medians,
)
from mlprod.features.dialects import Engine
from mlprod.features.expressions import DIALECT
from mlprod.features.graph import FeatureGraph, Node
from mlprod.features.streamed import counts, spine_columns, window_parts, window_totals
from mlprod.project.config import AggregateFeature

if TYPE_CHECKING:
    from mlprod.features.compiler import MatrixCompiler

DECOMPOSABLE = frozenset({"count"})
COUNTED = frozenset({"count", "count_distinct"})
MOVING = frozenset({"count", "sum", "mean", "std", "min", "max"})
PREV = "__p"
Pairs = tuple[tuple[str, str], ...]


class CteSink(Protocol):
    def add(self, name: str, select: exp.Select, materialized: bool = False) -> None: ...


@dataclass
class AggregateGroup:
    """Aggregates over one source through the same keys: they share their scans and joins.

    A feature's filter is folded into its value (``CASE WHEN filter THEN value END``), so
    features with different filters still share one table of running totals.
    """

    index: int
    source: str
    pairs: Pairs
    graph: FeatureGraph
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, exp.Expr] = field(default_factory=dict)  # distinct values: __v0, __v1..
    blocks: dict[timedelta, BlockedTotals] = field(default_factory=dict)
    engine: Engine = "duckdb"
    framed: bool = False  # Spark: few rows per key and window, sums over frames too

    @property
    def streamed(self) -> bool:
        """No ASOF JOIN: totals from streams (see :mod:`mlprod.features.streamed`)."""
        return self.engine != "duckdb"

    @property
    def moving(self) -> bool:
        """Exact moving aggregates over RANGE frames (PostgreSQL's numeric sums, counts and
        variances take rows back out of a frame as it moves: linear, and no rounding)."""
        return self.engine == "postgres"

    def _moving_frame(self, function: str) -> bool:
        """Whether ``function`` is a frame over one stream per lag, partitioned by key alone
        (PostgreSQL: see :attr:`moving`; Spark: min and max, whose frames Spark slides over
        a key's rows as they come, without blocks; and sums, means and deviations when the
        group is :attr:`framed`: Spark aggregates a frame's rows again as it moves, which
        beats the blocked streams' extra copies while a frame holds few rows)."""
        if self.moving:
            return function in MOVING
        slid = ("min", "max", *(BLOCKED if self.framed else ()))
        return self.streamed and function in slid

    @property
    def prefix(self) -> str:
        return f"__agg_{self.index}"

    def add(self, node: Node) -> None:
        self.nodes.append(node)
        value = effective_value(node)
        if value is not None:
            self.values.setdefault(value.sql(DIALECT), value)

    def value_index(self, node: Node) -> int:
        value = effective_value(node)
        return list(self.values).index(value.sql(DIALECT)) if value is not None else -1

    def _blocked(self, node: Node) -> bool:
        return self._feature(node).function in BLOCKED

    def function(self, node: Node) -> str:
        return self._feature(node).function

    def window(self, node: Node) -> timedelta:
        return self._feature(node).window

    def _feature(self, node: Node) -> AggregateFeature:
        assert isinstance(node.feature, AggregateFeature)
        return node.feature

    # --- CTEs that depend on the source only ---------------------------------------------

    def add_source_ctes(self, query: CteSink) -> None:
        if self.streamed:
            self._add_streamed_source_ctes(query)
            return
        for window in sorted({self._feature(n).window for n in self.nodes if self._blocked(n)}):
            members = [
                n for n in self.nodes if self._blocked(n) and self._feature(n).window == window
            ]
            indices = sorted({self.value_index(n) for n in members})
            shifted = sorted(
                {self.value_index(n) for n in members if self._feature(n).function == "std"}
            )
            self.blocks[window] = BlockedTotals(self, window, indices, shifted)
            self.blocks[window].add_ctes(query)
        functions = {self._feature(n).function for n in self.nodes}
        if functions & DECOMPOSABLE:
            query.add(f"{self.prefix}_totals", self._running_totals())
        for i in sorted(
            {self.value_index(n) for n in self.nodes if self._feature(n).function == "last"}
        ):
            query.add(f"{self.prefix}_last{i}", self._latest_values(i))
        distinct = {
            (self.value_index(n), self._feature(n).window)
            for n in self.nodes
            if self._feature(n).function == "count_distinct"
        }
        for i, window in sorted(distinct):
            query.add(self._distinct_table(i, window), self._distinct_totals(i, window))

    def _add_streamed_source_ctes(self, query: CteSink) -> None:
        """The tables streamed totals read: medians to shift by, latest values (as-of)."""
        shifted = sorted({self.value_index(n) for n in self.nodes if self.function(n) == "std"})
        if shifted and not self.moving and not self.framed:
            query.add(f"{self.prefix}_shift", key_medians(self, shifted))
        for i in sorted({self.value_index(n) for n in self.nodes if self.function(n) == "last"}):
            query.add(f"{self.prefix}_last{i}", self._latest_values(i))

    def window_density(self) -> exp.Select | None:
        """How many of the source's rows a window of this group's widest sum, mean or std
        holds, on average over the rows (None: the group has none): per key and block of the
        window's length, the sum of squared row counts over the rows. A frame that slides over
        a key's rows reads that many rows again per row; a blocked stream copies each row
        twice whatever the density (see :attr:`framed`)."""
        windows = [self.window(n) for n in self.nodes if self._blocked(n)]
        if not windows:
            return None
        keys = [sql.col(f"__k{i}") for i in range(len(self.pairs))]
        per_block = (
            exp.select(sql.alias(exp.Count(this=exp.Star()), "__n"))
            .from_(sql.subquery(self._base(), "__rows"))
            .group_by(*keys, block_of(sql.col("__at"), max(windows)))
        )
        n = exp.cast(sql.col("__n"), exp.DataType.Type.DOUBLE)
        squares = exp.Sum(this=exp.Mul(this=n, expression=n.copy()))
        density = exp.Div(this=squares, expression=exp.Sum(this=n.copy()))
        return exp.select(sql.alias(density, "__density")).from_(
            sql.subquery(per_block, "__blocks")
        )

    def _distinct_table(self, i: int, window: timedelta) -> str:
        return f"{self.prefix}_distinct{i}_{window // sql.MICROSECOND}"

    def _distinct_totals(self, i: int, window: timedelta) -> exp.Select:
        """Running count of the distinct values of ``__v<i>`` seen in the last ``window``."""
        keys = [sql.col(f"__k{j}") for j in range(len(self.pairs))]
        return exp.select(
            *[k.copy() for k in keys],
            sql.col("__at"),
            sql.alias(self._running(sql.col("__d"), keys), "__d"),
        ).from_(sql.subquery(self.distinct_events(i, window), "__per_time"))

    def distinct_events(self, i: int, window: timedelta) -> exp.Select:
        """The changes ``__d`` to the distinct count of ``__v<i>`` in the last ``window``, per
        key and time: their running total is the count.

        A row arrives at its time ``a`` (+1) and expires (-1) at ``min(a + window, a')``,
        where ``a'`` is the time of the same key and value's next row: from then on that next
        row stands for the value. At a cutoff ``c``, a row is counted when ``a < c`` and it
        has not expired before ``c``: then ``c - window <= a`` and no later row of its value
        precedes ``c``, so each value in ``[c - window, c)`` is counted once. Rows tied on
        time expire as they arrive, except the last of them.
        """
        keys = [sql.col(f"__k{j}") for j in range(len(self.pairs))]
        value = self._parsed_values()[i]
        rows = self._base().select(sql.alias(value, "__v"))
        rows = rows.where(exp.not_(exp.Is(this=value.copy(), expression=exp.null())))
        arrive = sql.col("__at")
        later = exp.Add(this=arrive.copy(), expression=sql.interval(window))
        following = sql.window(
            exp.func("lead", sql.col("__at")),
            [*[k.copy() for k in keys], sql.col("__v")],
            sql.col("__at"),
        )
        expire = exp.func("least", later, exp.func("coalesce", following, later.copy()))
        # One scan: each row gives its arrival (+1) and its expiry (-1).
        events = exp.select(
            *[k.copy() for k in keys],
            sql.alias(_unnest(arrive, expire), "__at"),
            sql.alias(_unnest(exp.Literal.number(1), exp.Literal.number(-1)), "__d"),
        ).from_(sql.subquery(rows, "__rows"))
        return (
            exp.select(
                *[k.copy() for k in keys],
                sql.col("__at"),
                sql.alias(exp.Sum(this=sql.col("__d")), "__d"),
            )
            .from_(sql.subquery(events, "__events"))
            .group_by(*[k.copy() for k in keys], sql.col("__at"))
        )

    def _rows(self, select: exp.Select) -> exp.Select:
        """Drop rows with a null key: they can never match a spine row."""
        for i in range(len(self.pairs)):
            select = select.where(
                exp.not_(exp.Is(this=sql.col(self.pairs[i][1]), expression=exp.null()))
            )
        return select

    def _base(self) -> exp.Select:
        available = self.graph.times[self.source].available_at
        assert available is not None
        at = sql.timestamp(available.copy())
        select = exp.select(
            *[sql.alias(sql.col(c), f"__k{i}") for i, (_, c) in enumerate(self.pairs)]
        )
        select = select.select(sql.alias(at, "__at")).from_(sql.table(self.source))
        return self._rows(select.where(exp.not_(exp.Is(this=at.copy(), expression=exp.null()))))

    def _parsed_values(self) -> list[exp.Expr]:
        return [value.copy() for value in self.values.values()]

    def _totals_needed(self) -> list[str]:
        """The running counts the count features read: of rows (__n) or of values (__c<i>)."""
        needed: set[str] = set()
        for node in self.nodes:
            function, i = self._feature(node).function, self.value_index(node)
            if function in DECOMPOSABLE:
                needed.add("__n" if i < 0 else f"__c{i}")
        return sorted(needed)

    def _running_totals(self) -> exp.Select:
        keys = [sql.col(f"__k{i}") for i in range(len(self.pairs))]
        needed = self._totals_needed()
        per_time = self._base()
        for name in needed:
            if name == "__n":
                per_time = per_time.select(sql.alias(exp.Count(this=exp.Star()), name))
                continue
            value = self._parsed_values()[int(name[3:])]
            per_time = per_time.select(sql.alias(exp.Count(this=value), name))
        per_time = per_time.group_by(*[k.copy() for k in keys], sql.col("__at"))
        totals = [sql.alias(self._running(sql.col(name), keys), name) for name in needed]
        return exp.select(*[k.copy() for k in keys], sql.col("__at"), *totals).from_(
            sql.subquery(per_time, "__per_time")
        )

    @staticmethod
    def _running(value: exp.Expr, keys: Sequence[exp.Expr]) -> exp.Window:
        return sql.window(
            exp.Sum(this=value), [k.copy() for k in keys], sql.col("__at"), sql.running_total()
        )

    def _latest_values(self, i: int) -> exp.Select:
        value = self._parsed_values()[i]
        keys = [sql.col(f"__k{j}") for j in range(len(self.pairs))]
        base = self._base().select(sql.alias(value, "__v"))
        base = base.where(exp.not_(exp.Is(this=value.copy(), expression=exp.null())))
        return (
            exp.select(*keys, sql.col("__at"), sql.alias(exp.Max(this=sql.col("__v")), "__v"))
            .from_(sql.subquery(base, "__rows"))
            .group_by(*[k.copy() for k in keys], sql.col("__at"))
        )

    # --- joining to a level ----------------------------------------------------------------

    def join(
        self,
        query: CteSink,
        select: exp.Select,
        previous: str,
        members: list[Node],
        compiler: MatrixCompiler,
    ) -> tuple[exp.Select, list[exp.Expr]]:
        columns: list[exp.Expr] = []
        totals_at: dict[timedelta, str] = {}

        def totals(offset: timedelta) -> str:
            """Alias of the running totals read at t - offset (one ASOF join per offset)."""
            if offset not in totals_at:
                name = f"{self.prefix}_at{len(totals_at)}_{previous}"
                totals_at[offset] = name
                nonlocal select
                select = self._asof(select, f"{self.prefix}_totals", name, offset, compiler)
            return totals_at[offset]

        framed: dict[tuple[timedelta, timedelta | None], list[Node]] = {}
        block_totals: dict[tuple[timedelta, timedelta], dict[str, exp.Expr]] = {}
        if self.streamed:
            select, members, columns = self._join_streamed(
                query, select, previous, members, compiler
            )
        for node in members:
            feature = self._feature(node)
            if self._moving_frame(feature.function):  # one stream, a frame per window
                framed.setdefault((feature.lag, None), []).append(node)
            elif feature.function in BLOCKED:
                key = (feature.window, feature.lag)
                if key not in block_totals:
                    blocks = self.blocks[feature.window]
                    select, block_totals[key] = blocks.join(select, feature.lag, previous, compiler)
                value = blocked_value(feature.function, self.value_index(node), block_totals[key])
                columns.append(sql.alias(value, f"__f_{node.name}"))
            elif feature.function in DECOMPOSABLE:
                hi, lo = totals(feature.lag), totals(feature.lag + feature.window)
                columns.append(sql.alias(self._difference(node, hi, lo), f"__f_{node.name}"))
            elif feature.function == "count_distinct":
                table = self._distinct_table(self.value_index(node), feature.window)
                name = f"{table}_{feature.lag // sql.MICROSECOND}_{previous}"
                select = self._asof(select, table, name, feature.lag, compiler)
                count = exp.cast(sql.coalesce0(sql.col("__d", name)), exp.DataType.Type.BIGINT)
                columns.append(sql.alias(count, f"__f_{node.name}"))
            elif feature.function == "last":
                table = f"{self.prefix}_last{self.value_index(node)}"
                name = f"{table}_{feature.lag // sql.MICROSECOND}_{previous}"
                select = self._asof(select, table, name, feature.lag, compiler)
                inside = exp.GTE(
                    this=sql.col("__at", name),
                    expression=sql.minus(sql.col("__t", PREV), feature.lag + feature.window),
                )
                columns.append(
                    sql.alias(sql.case_when(inside, sql.col("__v", name)), f"__f_{node.name}")
                )
            else:
                framed.setdefault((feature.lag, feature.window), []).append(node)
        for (lag, window), nodes in framed.items():
            span = "all" if window is None else window // sql.MICROSECOND
            micros = f"{lag // sql.MICROSECOND}_{span}"
            name = f"{self.prefix}_frame{micros}_{previous}"
            framed_rows = self._framed(previous, lag, window, nodes, compiler)
            select, alias = self._join_row(query, select, name, framed_rows)
            for node in nodes:
                columns.append(sql.alias(sql.col(f"__f_{node.name}", alias), f"__f_{node.name}"))
        return select, columns

    def _join_streamed(
        self,
        query: CteSink,
        select: exp.Select,
        previous: str,
        members: list[Node],
        compiler: MatrixCompiler,
    ) -> tuple[exp.Select, list[Node], list[exp.Expr]]:
        """Join the streamed totals of ``members`` (see :mod:`mlprod.features.streamed`);
        return the members left to the other strategies (on PostgreSQL, the framed ones)."""
        columns: list[exp.Expr] = []
        by_window: dict[tuple[timedelta, timedelta], list[Node]] = {}
        by_lag: dict[timedelta, list[Node]] = {}
        rest = []
        for node in members:
            feature = self._feature(node)
            if self._moving_frame(feature.function):
                rest.append(node)
            elif feature.function in BLOCKED:
                by_window.setdefault((feature.window, feature.lag), []).append(node)
            elif feature.function in COUNTED:
                by_lag.setdefault(feature.lag, []).append(node)
            else:
                rest.append(node)
        for lag, nodes in by_lag.items():
            name = f"{self.prefix}_counts{lag // sql.MICROSECOND}_{previous}"
            counted, column_of = counts(self, lag, nodes, previous, compiler)
            select, alias = self._join_row(query, select, name, counted)
            columns += [
                sql.alias(sql.col(column_of[n.name], alias), f"__f_{n.name}") for n in nodes
            ]
        for (window, lag), nodes in by_window.items():
            micros = f"{window // sql.MICROSECOND}_{lag // sql.MICROSECOND}"
            name = f"{self.prefix}_window{micros}_{previous}"
            totals = window_totals(self, window, lag, nodes, previous, compiler)
            select, alias = self._join_row(query, select, name, totals)
            parts: dict[str, exp.Expr] = {p: sql.col(p, alias) for p in window_parts(self, nodes)}
            for node in nodes:
                value = blocked_value(self.function(node), self.value_index(node), parts)
                columns.append(sql.alias(value, f"__f_{node.name}"))
        return select, rest, columns

    def _join_row(
        self, query: CteSink, select: exp.Select, name: str, table: exp.Select
    ) -> tuple[exp.Select, str]:
        """Add ``table`` (one row per spine row) as a CTE and LEFT JOIN it by row id; return
        the select and the alias ``table``'s columns are read by.

        A stream's output (Spark, PostgreSQL) has every row of the level once, with the
        level's row id, time and keys (:func:`~mlprod.features.streamed.spine_columns`): the
        first one replaces the level's rows instead of being joined to them (one join less).
        """
        if name in {j.alias_or_name for j in select.args.get("joins") or []}:
            return select, name
        query.add(name, table)
        if self.streamed and isinstance(sql.from_of(select), exp.Subquery):
            return select.from_(sql.table(name, PREV)), PREV
        on = exp.EQ(this=sql.col("__row", name), expression=sql.col("__row", PREV))
        return select.join(sql.table(name), on=on, join_type="left"), name

    def _asof(
        self, select: exp.Select, table: str, name: str, offset: timedelta, compiler: MatrixCompiler
    ) -> exp.Select:
        """ASOF-join ``table`` as ``name`` at ``t - offset``, unless it is joined already."""
        if name in {j.alias_or_name for j in select.args.get("joins") or []}:
            return select
        at = sql.minus(sql.col("__t", PREV), offset)
        condition = [
            *compiler.key_condition(name, self.pairs),
            exp.GT(this=at, expression=sql.col("__at", name)),
        ]
        return select.join(sql.table(table, name), on=sql.and_all(condition), join_type="asof left")

    def _difference(self, node: Node, hi: str, lo: str) -> exp.Expr:
        """The count in the window: the running count at its end minus at its start."""
        i = self.value_index(node)
        part = "__n" if i < 0 else f"__c{i}"
        end, start = sql.coalesce0(sql.col(part, hi)), sql.coalesce0(sql.col(part, lo))
        return exp.cast(exp.Sub(this=end, expression=start), exp.DataType.Type.BIGINT)

    def _framed(
        self,
        previous: str,
        lag: timedelta,
        window: timedelta | None,
        nodes: list[Node],
        compiler: MatrixCompiler,
    ) -> exp.Select:
        """Framed aggregates via one stream of source and spine rows per (lag, window).

        The stream is partitioned by key and by block of one window length: each source row
        is placed in its own block and in the next one, and a spine row in the block of its
        cutoff, so every frame lies inside its partition. Partitions stay small even for a
        key with few values (DuckDB's RANGE frames slow down on large partitions). With
        moving aggregates (``window`` None) the stream is partitioned by key alone and holds
        every window of the lag, each feature with its own frame.
        """
        values = self._parsed_values()
        no_row = exp.cast(exp.null(), exp.DataType.Type.BIGINT)
        rows = self._base().select(
            *[sql.alias(v, f"__v{i}") for i, v in enumerate(values)],
            sql.alias(no_row, "__row"),
        )
        cutoff = sql.minus(sql.col("__t", PREV), lag)
        spine = exp.select(
            *[sql.alias(compiler.spine_ref(s), f"__k{i}") for i, (s, _) in enumerate(self.pairs)],
            sql.alias(cutoff, "__at"),
            *[sql.alias(exp.null(), f"__v{i}") for i in range(len(values))],
            sql.alias(sql.col("__row", PREV), "__row"),
        ).from_(sql.table(previous, PREV))
        keys = [sql.col(f"__k{i}") for i in range(len(self.pairs))]
        stream: exp.Select | exp.Union
        if window is None:  # a count of rows counts __one: the spine rows have none
            rows = rows.select(sql.alias(exp.Literal.number(1), "__one"))
            spine = spine.select(sql.alias(exp.null(), "__one"))
            stream = exp.union(rows, spine, distinct=False)
        else:
            copies = [
                exp.select(
                    "*",
                    sql.alias(
                        exp.Add(this=block_of(sql.col("__at"), window), expression=shift), "__part"
                    ),
                ).from_(sql.subquery(rows.copy(), "__rows"))
                for shift in (exp.Literal.number(0), exp.Literal.number(1))
            ]
            spine = spine.select(sql.alias(block_of(cutoff.copy(), window), "__part"))
            stream = exp.union(
                exp.union(copies[0], copies[1], distinct=False), spine, distinct=False
            )
            keys.append(sql.col("__part"))
        outputs: list[exp.Expr] = [sql.col("__row")]
        if self.streamed:
            outputs = spine_columns(self, lag, compiler)
        for node in nodes:
            feature = self._feature(node)
            i = self.value_index(node)
            value = sql.col(f"__v{i}" if i >= 0 else "__one")
            function = _frame_function(feature.function, value, exact=self.moving)
            frame = sql.strictly_before(feature.window)
            result: exp.Expr = sql.window(
                function, [k.copy() for k in keys], sql.col("__at"), frame
            )
            cast_to = _frame_type(feature.function, self.moving)
            if cast_to is not None:
                result = exp.cast(result, cast_to)
            if feature.function == "sum":  # the sum of an empty window is 0
                result = sql.coalesce0(result)
            outputs.append(sql.alias(result, f"__f_{node.name}"))
        return (
            exp.select(*outputs)
            .from_(stream.subquery("__stream"))
            .qualify(exp.not_(exp.Is(this=sql.col("__row"), expression=exp.null())))
        )


def _unnest(*items: exp.Expr) -> exp.Expr:
    """``UNNEST([a, b])``: side by side in one select, the lists unfold together, row by row."""
    return exp.Unnest(expressions=[exp.Array(expressions=list(items))])


def _frame_function(function: str, value: exp.Expr, exact: bool = False) -> exp.Expr:
    """The aggregate over a frame; ``exact``: sums, means and deviations in exact decimals
    (PostgreSQL's ``numeric``, which moving frames update without re-reading them)."""
    if function == "count":
        return exp.Count(this=value)
    kind = exp.DataType.Type.DECIMAL if exact else exp.DataType.Type.DOUBLE
    operand = exp.cast(value.copy(), kind)
    if function == "sum":
        return exp.Sum(this=operand)
    if function == "mean":
        return exp.Avg(this=operand)
    if function == "std":
        return exp.StddevSamp(this=operand)
    if function == "min":
        return exp.Min(this=value)
    return exp.Max(this=value)


def _frame_type(function: str, exact: bool) -> exp.DType | None:
    """The type a framed aggregate's result is cast to (None: it has it already)."""
    if function == "count":
        return exp.DataType.Type.BIGINT
    return exp.DataType.Type.DOUBLE if exact and function in BLOCKED else None


def effective_value(node: Node) -> exp.Expr | None:
    """What a feature aggregates: its value where its filter holds (None: count every row)."""
    if node.filter is None:
        return node.value
    kept = node.value.copy() if node.value is not None else exp.Literal.number(1)
    return exp.paren(sql.case_when(node.filter.copy(), kept), copy=False)


def aggregate_groups(
    nodes: list[Node], graph: FeatureGraph, engine: Engine = "duckdb", framed: Collection[str] = ()
) -> list[AggregateGroup]:
    """Group aggregate features that can share their scans of a source, computed the way
    that suits ``engine``; the groups named in ``framed`` (by prefix) slide frames over
    their rows on Spark (see :meth:`AggregateGroup.window_density`)."""
    groups: dict[tuple[str, Pairs], AggregateGroup] = {}
    for node in nodes:
        feature = node.feature
        assert isinstance(feature, AggregateFeature)
        key = (feature.source, tuple(feature.key_pairs()))
        if key not in groups:
            index = len(groups)
            groups[key] = AggregateGroup(
                index, key[0], key[1], graph, engine=engine, framed=f"__agg_{index}" in framed
            )
        groups[key].add(node)
    return list(groups.values())
