"""Windowed sum, mean and std from running totals that restart every window length.

A window ``[lo, hi)`` of length W, cut into blocks of length W aligned on the epoch, always
spans exactly two adjacent blocks: its sum is the rest of ``lo``'s block after ``lo`` plus the
start of ``hi``'s block before ``hi``, i.e. ``T(block(lo)) - R(lo) + R(hi)``, where ``R`` is a
running total within a block (read with an ASOF join) and ``T`` a block's total. Because the
totals restart every block, the rounding error is that of the values in those two blocks, not
of the key's whole history (a plain running total loses a small window's digits once its
total is large). Standard deviations sum values shifted by the key's median, so values far
from zero (timestamps, large amounts) keep their precision. Linear in the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlglot import exp

from mlprod import sqlparts as sql

if TYPE_CHECKING:
    from mlprod.features.aggregates import AggregateGroup, CteSink
    from mlprod.features.compiler import MatrixCompiler

BLOCKED = frozenset({"sum", "mean", "std"})
_BEFORE_YEAR_1 = 62_135_596_800_000_000  # microseconds from 0001-01-01 to 1970-01-01
PREV = "__p"


@dataclass
class BlockedTotals:
    """The block tables of one aggregate group for one window length."""

    group: AggregateGroup
    window: timedelta
    values: list[int]  # value indices summed
    shifted: list[int]  # value indices that also need shifted sums (std)

    @property
    def name(self) -> str:
        return f"{self.group.prefix}_blocks{self.window // sql.MICROSECOND}"

    def block_of(self, time: exp.Expr) -> exp.Expr:
        return block_of(time, self.window)

    def add_ctes(self, query: CteSink) -> None:
        keys = [sql.col(f"__k{i}") for i in range(len(self.group.pairs))]
        values = self.group._parsed_values()
        base = self.group._base()
        for i in self.values:
            base = base.select(sql.alias(values[i], f"__v{i}"))
        if self.shifted:
            query.add(f"{self.name}_shift", key_medians(self.group, self.shifted))
        per_time = exp.select(
            *[k.copy() for k in keys],
            sql.col("__at"),
            sql.alias(self.block_of(sql.col("__at")), "__blk"),
        ).from_(sql.subquery(base, "__rows"))
        for i in self.values:
            value = exp.cast(sql.col(f"__v{i}"), exp.DataType.Type.DOUBLE)
            per_time = per_time.select(
                sql.alias(exp.Count(this=sql.col(f"__v{i}")), f"__c{i}"),
                sql.alias(exp.Sum(this=value), f"__s{i}"),
            )
            if i in self.shifted:
                shifted = exp.paren(
                    exp.Sub(this=value.copy(), expression=sql.col(f"__m{i}", "__shift"))
                )
                per_time = per_time.select(
                    sql.alias(exp.Sum(this=shifted), f"__d{i}"),
                    sql.alias(
                        exp.Sum(this=exp.Mul(this=shifted, expression=shifted.copy())), f"__q{i}"
                    ),
                )
        if self.shifted:
            on = sql.and_all(
                [
                    exp.EQ(
                        this=sql.col(f"__k{i}", "__rows"), expression=sql.col(f"__k{i}", "__shift")
                    )
                    for i in range(len(keys))
                ]
            )
            per_time = per_time.join(sql.table(f"{self.name}_shift", "__shift"), on=on)
            per_time.set(
                "expressions",
                [_qualify(e, "__rows", len(keys)) for e in per_time.expressions],
            )
        per_time = per_time.group_by(
            *[sql.col(f"__k{i}", "__rows") for i in range(len(keys))], sql.col("__at", "__rows")
        )
        parts = self.parts()
        running = exp.select(
            *[k.copy() for k in keys],
            sql.col("__at"),
            sql.col("__blk"),
            *[
                sql.alias(
                    sql.window(
                        exp.Sum(this=sql.col(p)),
                        [*[k.copy() for k in keys], sql.col("__blk")],
                        sql.col("__at"),
                        sql.running_total(),
                    ),
                    p,
                )
                for p in parts
            ],
        ).from_(sql.subquery(per_time, "__per_time"))
        query.add(f"{self.name}_running", running)
        totals = (
            exp.select(
                *[k.copy() for k in keys],
                sql.col("__blk"),
                *[sql.alias(exp.Sum(this=sql.col(p)), p) for p in parts],
            )
            .from_(sql.subquery(per_time.copy(), "__per_time"))
            .group_by(*[k.copy() for k in keys], sql.col("__blk"))
        )
        query.add(f"{self.name}_totals", totals)

    def parts(self) -> list[str]:
        names = []
        for i in self.values:
            names += [f"__c{i}", f"__s{i}"]
            if i in self.shifted:
                names += [f"__d{i}", f"__q{i}"]
        return names

    def join(
        self, select: exp.Select, lag: timedelta, previous: str, compiler: MatrixCompiler
    ) -> tuple[exp.Select, dict[str, exp.Expr]]:
        """Join R(hi), R(lo) and T(block(lo)); return each part's window total."""
        tag = f"{self.name}_{lag // sql.MICROSECOND}_{previous}"
        hi = sql.minus(sql.col("__t", PREV), lag)
        lo = sql.minus(sql.col("__t", PREV), lag + self.window)
        for alias_name, at in ((f"{tag}_hi", hi), (f"{tag}_lo", lo)):
            condition = [
                *compiler.key_condition(alias_name, self.group.pairs),
                exp.EQ(this=sql.col("__blk", alias_name), expression=self.block_of(at.copy())),
                exp.GT(this=at.copy(), expression=sql.col("__at", alias_name)),
            ]
            select = select.join(
                sql.table(f"{self.name}_running", alias_name),
                on=sql.and_all(condition),
                join_type="asof left",
            )
        block = f"{tag}_block"
        condition = [
            *compiler.key_condition(block, self.group.pairs),
            exp.EQ(this=sql.col("__blk", block), expression=self.block_of(lo.copy())),
        ]
        select = select.join(
            sql.table(f"{self.name}_totals", block), on=sql.and_all(condition), join_type="left"
        )
        totals: dict[str, exp.Expr] = {
            part: exp.paren(
                exp.Add(
                    this=exp.Sub(
                        this=sql.coalesce0(sql.col(part, block)),
                        expression=sql.coalesce0(sql.col(part, f"{tag}_lo")),
                    ),
                    expression=sql.coalesce0(sql.col(part, f"{tag}_hi")),
                )
            )
            for part in self.parts()
        }
        return select, totals


def key_medians(group: AggregateGroup, indices: list[int]) -> exp.Select:
    """Each key's median of the values ``indices`` (``__m<i>``): the shift of their sums."""
    keys = [sql.col(f"__k{i}") for i in range(len(group.pairs))]
    values = group._parsed_values()
    rows = group._base().select(*[sql.alias(values[i], f"__v{i}") for i in indices])
    medians = [sql.alias(exp.func("median", sql.col(f"__v{i}")), f"__m{i}") for i in indices]
    return (
        exp.select(*keys, *medians)
        .from_(sql.subquery(rows, "__rows"))
        .group_by(*[k.copy() for k in keys])
    )


def block_of(time: exp.Expr, window: timedelta) -> exp.Expr:
    """The number of the block of length ``window`` (aligned on the epoch) holding ``time``.

    Rounded down, also before 1970: ``//`` truncates toward zero, so the epoch microseconds
    are first moved by a multiple of the width that makes every time from year 1 on positive
    (otherwise block 0 would span two widths, and a window across the epoch add up wrong).
    """
    width = window // sql.MICROSECOND
    blocks = -(-_BEFORE_YEAR_1 // width)  # whole blocks covering every time from year 1
    moved = exp.Add(this=exp.func("epoch_us", time), expression=exp.Literal.number(blocks * width))
    quotient = exp.IntDiv(this=exp.paren(moved), expression=exp.Literal.number(width))
    return exp.Sub(this=quotient, expression=exp.Literal.number(blocks))


def blocked_value(function: str, i: int, totals: dict[str, exp.Expr]) -> exp.Expr:
    """sum, mean or std of value ``i`` from its window totals."""
    count, total = totals[f"__c{i}"], totals[f"__s{i}"]
    zero, one = exp.Literal.number(0), exp.Literal.number(1)
    if function == "sum":
        return exp.cast(total, exp.DataType.Type.DOUBLE)
    if function == "mean":
        return sql.case_when(
            exp.GT(this=count.copy(), expression=zero), exp.Div(this=total, expression=count)
        )
    shifted, squares = totals[f"__d{i}"], totals[f"__q{i}"]
    numerator = exp.Sub(
        this=squares,
        expression=exp.Div(
            this=exp.Mul(this=shifted, expression=shifted.copy()), expression=count.copy()
        ),
    )
    variance = exp.Div(
        this=exp.paren(numerator), expression=exp.paren(exp.Sub(this=count.copy(), expression=one))
    )
    std = exp.func("sqrt", exp.func("greatest", variance, zero.copy()))
    return sql.case_when(exp.GT(this=count.copy(), expression=one.copy()), std)


def _qualify(expression: exp.Expr, table: str, keys: int) -> exp.Expr:
    """Qualify the rows' own columns once the shift table is joined (both have the keys)."""
    own = {f"__k{i}" for i in range(keys)} | {"__at"}

    def visit(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and not node.table and node.name in own:
            return sql.col(node.name, table)
        return node

    return expression.transform(visit)
