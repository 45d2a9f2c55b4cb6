"""Small sqlglot builders shared by the feature compiler; every identifier is quoted."""

from __future__ import annotations

from datetime import timedelta

from sqlglot import exp

MICROSECOND = timedelta(microseconds=1)
_UNITS = (
    ("DAY", timedelta(days=1)),
    ("HOUR", timedelta(hours=1)),
    ("MINUTE", timedelta(minutes=1)),
    ("SECOND", timedelta(seconds=1)),
    ("MICROSECOND", MICROSECOND),
)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def alias(expression: exp.Expr, name: str) -> exp.Expr:
    return exp.alias_(expression, name, quoted=True)


def table(name: str, alias_name: str | None = None) -> exp.Table:
    node = exp.to_table(name, quoted=True)
    if alias_name:
        node.set("alias", exp.TableAlias(this=exp.to_identifier(alias_name, quoted=True)))
    return node


def subquery(select: exp.Select, alias_name: str) -> exp.Subquery:
    return select.subquery(exp.to_identifier(alias_name, quoted=True))


def interval(value: timedelta) -> exp.Interval:
    """An exact interval literal in the largest unit that divides it."""
    for unit, size in _UNITS:
        if value % size == timedelta(0):
            return exp.Interval(
                this=exp.Literal.string(str(value // size)), unit=exp.Var(this=unit)
            )
    raise AssertionError(value)  # pragma: no cover - MICROSECOND divides every timedelta


def minus(time: exp.Expr, offset: timedelta) -> exp.Expr:
    """``time - offset``, or ``time`` itself for a zero offset."""
    return time if offset == timedelta(0) else exp.Sub(this=time, expression=interval(offset))


def plus(time: exp.Expr, offset: timedelta) -> exp.Expr:
    """``time + offset``, or ``time`` itself for a zero offset."""
    return time if offset == timedelta(0) else exp.Add(this=time, expression=interval(offset))


def from_of(select: exp.Select) -> exp.Expr:
    """What a select reads: the table or subquery of its FROM (sqlglot names the argument
    ``from_`` or ``from`` by version)."""
    clause = select.args.get("from_") or select.args.get("from")
    assert clause is not None, select.sql()
    source: exp.Expr = clause.this
    return source


def timestamp(value: exp.Expr) -> exp.Expr:
    """Normalise a time to TIMESTAMP (microseconds, no time zone, UTC by convention)."""
    return exp.cast(value, exp.DataType.Type.TIMESTAMP)


def and_all(conditions: list[exp.Expr]) -> exp.Expr:
    return exp.and_(*[exp.paren(c, copy=False) for c in conditions])


def coalesce0(value: exp.Expr) -> exp.Expr:
    return exp.func("coalesce", value, exp.Literal.number(0))


def window(
    function: exp.Expr,
    partition: list[exp.Expr],
    order: exp.Expr | list[exp.Expr] | None = None,
    frame: exp.WindowSpec | None = None,
    descending: bool = False,
) -> exp.Window:
    ordered = None
    if order is not None:
        items = order if isinstance(order, list) else [order]
        ordered = exp.Order(
            expressions=[exp.Ordered(this=o, desc=descending, nulls_first=False) for o in items]
        )
    return exp.Window(this=function, partition_by=partition, order=ordered, spec=frame, over="OVER")


def running_total() -> exp.WindowSpec:
    return exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")


def whole_partition() -> exp.WindowSpec:
    return exp.WindowSpec(
        kind="ROWS",
        start="UNBOUNDED",
        start_side="PRECEDING",
        end="UNBOUNDED",
        end_side="FOLLOWING",
    )


def strictly_before(span: timedelta) -> exp.WindowSpec:
    """The frame [t - span, t): inclusive start, exclusive end at microsecond resolution."""
    return exp.WindowSpec(
        kind="RANGE",
        start=interval(span),
        start_side="PRECEDING",
        end=interval(MICROSECOND),
        end_side="PRECEDING",
    )


def case_when(condition: exp.Expr, value: exp.Expr) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=condition, true=value)])
