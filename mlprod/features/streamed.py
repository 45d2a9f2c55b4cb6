"""Windowed count, sum, mean, std and count_distinct for engines without ASOF JOIN.

On DuckDB, running totals are tables read with ASOF joins (:mod:`~mlprod.features.blocked`,
:mod:`~mlprod.features.aggregates`). Spark and PostgreSQL have no ASOF JOIN: each read
would become a stream of its own that sorts the table again (see
:mod:`~mlprod.features.dialects`), once per offset. Here the spine rows enter the source's
stream themselves, at the cutoffs they need, so one sort per window gives every total and
no join looks anything up by time:

* count, sum, mean and std over ``[lo, hi)``: the window spans two blocks of its length (see
  :mod:`~mlprod.features.blocked`). A spine row enters at ``hi`` in ``hi``'s block and at
  ``lo`` in ``lo``'s. Partitioned by key and block and ordered by time, spine rows first at
  equal times, the running total at the ``hi`` row is the block's rows before ``hi``; at the
  ``lo`` row, the block's total minus the running total is its rows from ``lo`` on. Their
  sum per row id is the window's total, rounded within two blocks as on DuckDB.
* count_distinct: the arrivals (+1) and expiries (-1) of
  :meth:`~mlprod.features.aggregates.AggregateGroup.distinct_events` with the spine rows at
  their cutoffs; the running total at a spine row is the count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.features.blocked import block_of

if TYPE_CHECKING:
    from mlprod.features.aggregates import AggregateGroup
    from mlprod.features.compiler import MatrixCompiler
    from mlprod.features.graph import Node

PREV = "__p"
STREAMED = frozenset({"count", "sum", "mean", "std"})
BIGINT = exp.DataType.Type.BIGINT
DOUBLE = exp.DataType.Type.DOUBLE
INT = exp.DataType.Type.INT


def window_parts(group: AggregateGroup, nodes: list[Node]) -> dict[str, exp.Expr]:
    """The totals ``nodes`` read, each with its value on a source row: ``__n`` counts rows,
    ``__c<i>`` non-null values, ``__s<i>`` sums them, ``__d<i>``/``__q<i>`` sum them shifted
    by the key's median and their squares (std)."""
    parts: dict[str, exp.Expr] = {}
    for node in nodes:
        function, i = group.function(node), group.value_index(node)
        if i < 0:
            parts["__n"] = exp.Literal.number(1)
            continue
        value = sql.col(f"__v{i}", "__rows")
        present = exp.not_(exp.Is(this=value.copy(), expression=exp.null()))
        parts[f"__c{i}"] = exp.Case(
            ifs=[exp.If(this=present, true=exp.Literal.number(1))],
            default=exp.Literal.number(0),
        )
        if function != "count":
            parts[f"__s{i}"] = exp.cast(value.copy(), DOUBLE)
        if function == "std":
            median = sql.col(f"__m{i}", "__shift")
            shifted = exp.paren(exp.Sub(this=exp.cast(value.copy(), DOUBLE), expression=median))
            parts[f"__d{i}"] = shifted
            parts[f"__q{i}"] = exp.Mul(this=shifted.copy(), expression=shifted.copy())
    return dict(sorted(parts.items()))


def window_totals(
    group: AggregateGroup,
    window: timedelta,
    lag: timedelta,
    nodes: list[Node],
    previous: str,
    compiler: MatrixCompiler,
) -> exp.Select:
    """Per spine row (``__row``), the totals of ``nodes`` over ``[t - lag - window, t - lag)``."""
    parts = window_parts(group, nodes)
    keys = [f"__k{i}" for i in range(len(group.pairs))]
    values = group._parsed_values()
    rows = group._base().select(*[sql.alias(v, f"__v{i}") for i, v in enumerate(values)])
    source = exp.select(
        *[sql.col(k, "__rows") for k in keys],
        sql.col("__at", "__rows"),
        sql.alias(block_of(sql.col("__at", "__rows"), window), "__blk"),
        sql.alias(exp.Literal.number(1), "__side"),
        sql.alias(exp.cast(exp.null(), BIGINT), "__row"),
        sql.alias(exp.cast(exp.null(), INT), "__hi"),
        *[sql.alias(part, name) for name, part in parts.items()],
    ).from_(sql.subquery(rows, "__rows"))
    if any(name.startswith("__d") for name in parts):
        on: list[exp.Expr] = [
            exp.EQ(this=sql.col(k, "__rows"), expression=sql.col(k, "__shift")) for k in keys
        ]
        source = source.join(
            sql.table(f"{group.prefix}_shift", "__shift"), on=sql.and_all(on), join_type="left"
        )
    stream: exp.Select | exp.Union = source
    for hi, offset in ((1, lag), (0, lag + window)):
        at = sql.minus(sql.col("__t", PREV), offset)
        spine = exp.select(
            *_spine_keys(group, keys, compiler),
            sql.alias(at, "__at"),
            sql.alias(block_of(at.copy(), window), "__blk"),
            sql.alias(exp.Literal.number(0), "__side"),
            sql.alias(sql.col("__row", PREV), "__row"),
            sql.alias(exp.Literal.number(hi), "__hi"),
            *[sql.alias(exp.cast(exp.null(), _type(name)), name) for name in parts],
        ).from_(sql.table(previous, PREV))
        stream = exp.union(stream, spine, distinct=False)
    partition: list[exp.Expr] = [*[sql.col(k) for k in keys], sql.col("__blk")]
    order: list[exp.Expr] = [sql.col("__at"), sql.col("__side")]
    windowed = exp.select(sql.col("__row"), sql.col("__hi")).from_(stream.subquery("__stream"))
    read: list[exp.Expr] = [sql.col("__row")]
    upper = exp.EQ(this=sql.col("__hi"), expression=exp.Literal.number(1))
    for name in parts:
        total = exp.Sum(this=sql.col(name))
        before, block = f"{name}_before", f"{name}_block"
        windowed = windowed.select(
            sql.alias(sql.window(total, partition, order, sql.running_total()), before),
            sql.alias(sql.window(total.copy(), partition, order, sql.whole_partition()), block),
        )
        # at hi: the block's rows before hi; at lo: the block's rows from lo on
        after = exp.Sub(
            this=sql.coalesce0(sql.col(block)), expression=sql.coalesce0(sql.col(before))
        )
        value = exp.Case(
            ifs=[exp.If(this=upper.copy(), true=sql.coalesce0(sql.col(before)))], default=after
        )
        read.append(sql.alias(exp.Sum(this=value), name))
    return (
        exp.select(*read)
        .from_(sql.subquery(windowed, "__windowed"))
        .where(exp.not_(exp.Is(this=sql.col("__row"), expression=exp.null())))
        .group_by(sql.col("__row"))
    )


def distinct_counts(
    group: AggregateGroup,
    i: int,
    window: timedelta,
    lag: timedelta,
    previous: str,
    compiler: MatrixCompiler,
) -> exp.Select:
    """Per spine row (``__row``), the distinct count ``__d`` of value ``i`` in its window."""
    keys = [f"__k{j}" for j in range(len(group.pairs))]
    events = exp.select(
        *[sql.col(k) for k in keys],
        sql.col("__at"),
        sql.alias(exp.Literal.number(1), "__side"),
        sql.alias(exp.cast(exp.null(), BIGINT), "__row"),
        sql.col("__d"),
    ).from_(sql.subquery(group.distinct_events(i, window), "__events"))
    spine = exp.select(
        *_spine_keys(group, keys, compiler),
        sql.alias(sql.minus(sql.col("__t", PREV), lag), "__at"),
        sql.alias(exp.Literal.number(0), "__side"),
        sql.alias(sql.col("__row", PREV), "__row"),
        sql.alias(exp.cast(exp.null(), BIGINT), "__d"),
    ).from_(sql.table(previous, PREV))
    stream = exp.union(events, spine, distinct=False)
    running = sql.window(
        exp.Sum(this=sql.col("__d")),
        [sql.col(k) for k in keys],
        [sql.col("__at"), sql.col("__side")],
        sql.running_total(),
    )
    marked = exp.select(
        sql.col("__row"), sql.alias(exp.cast(sql.coalesce0(running), BIGINT), "__d")
    ).from_(stream.subquery("__stream"))
    return (
        exp.select(sql.col("__row"), sql.col("__d"))
        .from_(sql.subquery(marked, "__marked"))
        .where(exp.not_(exp.Is(this=sql.col("__row"), expression=exp.null())))
    )


def _type(part: str) -> exp.DType:
    return BIGINT if part.startswith(("__n", "__c")) else DOUBLE


def _spine_keys(group: AggregateGroup, keys: list[str], compiler: MatrixCompiler) -> list[exp.Expr]:
    return [
        sql.alias(compiler.spine_ref(spine), key)
        for key, (spine, _) in zip(keys, group.pairs, strict=True)
    ]
