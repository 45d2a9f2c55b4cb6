"""Windowed aggregates for engines without ASOF JOIN: the spine rows join the source's stream.

On DuckDB, running totals are tables read with ASOF joins (:mod:`~mlprod.features.blocked`,
:mod:`~mlprod.features.aggregates`). Spark and PostgreSQL have no ASOF JOIN: each read
would become a stream of its own that sorts the table again (see
:mod:`~mlprod.features.dialects`), once per offset. Here the spine rows enter the source's
stream themselves, at their cutoff ``t - lag``, ordered before source rows of the same time
(strictly before), so one sort gives every total and nothing is looked up by time:

* count and count_distinct, every window of a group at once: each row adds 1 at its time and
  takes it back one window later (a stream per key; integers add up exactly); a distinct
  count adds the arrivals and expiries of
  :meth:`~mlprod.features.aggregates.AggregateGroup.distinct_events`. The running total at a
  spine row is the count.
* sum, mean and std, one stream per window: the same entering and leaving, but restarted
  every block of the window's length (see :mod:`~mlprod.features.blocked`): partitioned by
  key and block, the window at a block's start is the whole previous block, i.e. what leaves
  during this one, and the running total adds what entered and takes what left since. A
  total adds the values of two blocks only, so a large old value cannot round away a small
  window's digits.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    stream: exp.Select | exp.Union | None = None
    for leave in (0, 1):  # each row enters at its time and leaves one window later
        at: exp.Expr = sql.col("__at", "__rows")
        if leave:
            at = exp.Add(this=at, expression=sql.interval(window))
        copy = exp.select(
            *[sql.col(k, "__rows") for k in keys],
            sql.alias(at, "__at"),
            sql.alias(block_of(at.copy(), window), "__blk"),
            sql.alias(exp.Literal.number(1), "__side"),
            sql.alias(exp.cast(exp.null(), BIGINT), "__row"),
            sql.alias(exp.Literal.number(leave), "__leave"),
            *[
                sql.alias(exp.Neg(this=p.copy()) if leave else p.copy(), n)
                for n, p in parts.items()
            ],
        ).from_(sql.subquery(rows.copy(), "__rows"))
        if any(name.startswith("__d") for name in parts):
            on: list[exp.Expr] = [
                exp.EQ(this=sql.col(k, "__rows"), expression=sql.col(k, "__shift")) for k in keys
            ]
            copy = copy.join(
                sql.table(f"{group.prefix}_shift", "__shift"), on=sql.and_all(on), join_type="left"
            )
        copy = _changing(copy, {n: p for n, p in parts.items() if n.startswith(("__n", "__c"))})
        stream = copy if stream is None else exp.union(stream, copy, distinct=False)
    cutoff = sql.minus(sql.col("__t", PREV), lag)
    spine = exp.select(
        *_spine_keys(group, keys, compiler),
        sql.alias(cutoff, "__at"),
        sql.alias(block_of(cutoff.copy(), window), "__blk"),
        sql.alias(exp.Literal.number(0), "__side"),
        sql.alias(sql.col("__row", PREV), "__row"),
        sql.alias(exp.Literal.number(0), "__leave"),
        *[sql.alias(exp.cast(exp.null(), _type(name)), name) for name in parts],
    ).from_(sql.table(previous, PREV))
    assert stream is not None
    stream = exp.union(stream, spine, distinct=False)
    partition: list[exp.Expr] = [*[sql.col(k) for k in keys], sql.col("__blk")]
    order: list[exp.Expr] = [sql.col("__at"), sql.col("__side")]
    leaving = exp.EQ(this=sql.col("__leave"), expression=exp.Literal.number(1))
    read: list[exp.Expr] = [sql.col("__row"), sql.col("__at"), *[sql.col(k) for k in keys]]
    for name in parts:
        # the window at the block's start is the whole previous block: what leaves in this one
        start = exp.Sum(this=sql.case_when(leaving.copy(), sql.col(name)))
        since = exp.Sum(this=sql.col(name))  # entered minus left since the block's start
        total = exp.Sub(
            this=sql.coalesce0(sql.window(since, partition, order, sql.running_total())),
            expression=sql.coalesce0(sql.window(start, partition, order, sql.whole_partition())),
        )
        read.append(sql.alias(total, name))
    windowed = exp.select(*read).from_(stream.subquery("__stream"))
    return (
        exp.select(*spine_columns(group, lag, compiler), *[sql.col(name) for name in parts])
        .from_(sql.subquery(windowed, "__windowed"))
        .where(exp.not_(exp.Is(this=sql.col("__row"), expression=exp.null())))
    )


def counts(
    group: AggregateGroup,
    lag: timedelta,
    nodes: list[Node],
    previous: str,
    compiler: MatrixCompiler,
) -> tuple[exp.Select, dict[str, str]]:
    """Per spine row (``__row``), every count and distinct count of ``nodes`` (all with this
    ``lag``): one stream per key, no blocks, since integers add up exactly. Returns the
    select and each feature's column in it."""
    keys = [f"__k{j}" for j in range(len(group.pairs))]
    column_of: dict[str, str] = {}
    changes: dict[str, tuple[timedelta, exp.Expr]] = {}  # column: (window, change per row)
    distinct: dict[str, tuple[int, timedelta]] = {}
    for node in nodes:
        i, window = group.value_index(node), group.window(node)
        name = f"__{'n' if i < 0 else f'c{i}'}_{window // sql.MICROSECOND}"
        if group.function(node) == "count_distinct":
            name = f"__u{i}_{window // sql.MICROSECOND}"
            distinct[name] = (i, window)
        else:
            changes[name] = (window, window_parts(group, [node])["__n" if i < 0 else f"__c{i}"])
        column_of[node.name] = name
    names = [*changes, *distinct]

    def row(at: exp.Expr, side: int, values: Mapping[str, exp.Expr]) -> list[exp.Expr]:
        return [
            sql.alias(at, "__at"),
            sql.alias(exp.Literal.number(side), "__side"),
            sql.alias(
                sql.col("__row", PREV) if side == 0 else exp.cast(exp.null(), BIGINT), "__row"
            ),
            *[sql.alias(values.get(n, exp.cast(exp.null(), BIGINT)), n) for n in names],
        ]

    rows = group._base().select(
        *[sql.alias(v, f"__v{i}") for i, v in enumerate(group._parsed_values())]
    )
    arrived = sql.col("__at", "__rows")
    source = [sql.col(k, "__rows") for k in keys]
    # each row counts from its time on, and stops counting one window later
    branches: list[exp.Select] = []
    for leaves in [None, *sorted({w for w, _ in changes.values()})]:
        counted = {n: c for n, (w, c) in changes.items() if leaves in (None, w)}
        if not counted:  # distinct counts only: their events are their own
            continue
        at: exp.Expr = arrived.copy()
        if leaves is not None:  # leaving: one window after arriving, taking its count back
            at = exp.Add(this=at, expression=sql.interval(leaves))
            counted = {n: exp.Neg(this=c.copy()) for n, c in counted.items()}
        branch = exp.select(*[s.copy() for s in source], *row(at, 1, counted))
        branches.append(_changing(branch.from_(sql.subquery(rows.copy(), "__rows")), counted))
    for name, (i, window) in distinct.items():
        events = exp.select(
            *[sql.col(k) for k in keys], *row(sql.col("__at"), 1, {name: sql.col("__d")})
        ).from_(sql.subquery(group.distinct_events(i, window), "__events"))
        branches.append(events)
    cutoff = sql.minus(sql.col("__t", PREV), lag)
    spine = exp.select(*_spine_keys(group, keys, compiler), *row(cutoff, 0, {}))
    branches.append(spine.from_(sql.table(previous, PREV)))
    stream = exp.union(*branches, distinct=False)
    partition: list[exp.Expr] = [sql.col(k) for k in keys]
    order: list[exp.Expr] = [sql.col("__at"), sql.col("__side")]
    running = [
        sql.alias(
            exp.cast(
                sql.coalesce0(
                    sql.window(exp.Sum(this=sql.col(n)), partition, order, sql.running_total())
                ),
                BIGINT,
            ),
            n,
        )
        for n in names
    ]
    marked = exp.select(
        sql.col("__row"), sql.col("__at"), *[sql.col(k) for k in keys], *running
    ).from_(stream.subquery("__stream"))
    select = (
        exp.select(*spine_columns(group, lag, compiler), *[sql.col(n) for n in names])
        .from_(sql.subquery(marked, "__marked"))
        .where(exp.not_(exp.Is(this=sql.col("__row"), expression=exp.null())))
    )
    return select, column_of


def _changing(select: exp.Select, changes: Mapping[str, exp.Expr]) -> exp.Select:
    """Only the rows that change a total (``changes``: each total's count of the row, maybe
    negated): a filtered count (e.g. of cancelled flights) streams its own rows, not every
    row of the source, and a row without a value is left out of its sums."""
    counts = [c.this if isinstance(c, exp.Neg) else c for c in changes.values()]
    if any(isinstance(c.unnest(), exp.Literal) for c in counts):
        return select  # a count of rows: every row counts
    differs = [exp.NEQ(this=c.copy(), expression=exp.Literal.number(0)) for c in counts]
    return select.where(exp.or_(*[exp.paren(d, copy=False) for d in differs]))


def _type(part: str) -> exp.DType:
    return BIGINT if part.startswith(("__n", "__c")) else DOUBLE


def spine_columns(
    group: AggregateGroup, lag: timedelta, compiler: MatrixCompiler
) -> list[exp.Expr]:
    """The spine row's own columns, from a stream's spine rows (their ``__row``, cutoff
    ``__at`` and keys ``__k<i>``): row id, time and the keys as the level names them, so the
    stream's output can stand for the level's rows (see ``AggregateGroup._join_row``)."""
    names: dict[str, str] = {}
    for i, (spine, _) in enumerate(group.pairs):
        names.setdefault(compiler.spine_ref(spine).name, f"__k{i}")
    return [
        sql.col("__row"),
        sql.alias(sql.plus(sql.col("__at"), lag), "__t"),
        *[sql.alias(sql.col(key), name) for name, key in names.items()],
    ]


def _spine_keys(group: AggregateGroup, keys: list[str], compiler: MatrixCompiler) -> list[exp.Expr]:
    return [
        sql.alias(compiler.spine_ref(spine), key)
        for key, (spine, _) in zip(keys, group.pairs, strict=True)
    ]
