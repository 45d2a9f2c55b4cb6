"""Where prediction events come from: the spine (to train) or a table of requests (to score).

The compiler computes features for *events*: rows with an id (``__row``), a prediction time
(``__t``) and the spine-source columns that features read. Training takes them from the
spine source, keeps only events whose label is known, and carries the label, its
availability time and the per-row values of ``train.value`` to the matrix. Scoring takes
them from the rows to score, as they are, and carries only their position. Either way the
features are compiled from the same definitions by the same compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.errors import ConfigError
from mlprod.features.expressions import check_columns, parse_expression
from mlprod.features.graph import FeatureGraph
from mlprod.project.loading import CONFIG_FILE
from mlprod.project.training import value_column

REQUEST_TABLE = "__requests"
REQUEST_ROW = "__request_row"
PREDICTION_TIME = "prediction_time"


@dataclass(frozen=True)
class Events:
    """A select of events for the compiler, and what the result carries besides features.

    ``select`` gives ``__row``, the spine columns features read, ``__t`` and the ``carry``
    columns; ``order`` is the final order of the rows.
    """

    select: exp.Select
    carry: tuple[tuple[str, str], ...] = ()  # (column of select, column of the result)
    order: tuple[str, ...] = ("__t", "__row")


@dataclass
class TrainingEvents:
    """The spine's events whose label is known, with label and per-row values carried along."""

    graph: FeatureGraph
    values: Mapping[str, str] = field(default_factory=dict)  # train.value outcome -> expression
    value_exprs: dict[str, exp.Expr] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        spine = self.graph.config.spine
        for outcome, text in self.values.items():
            where = f"{CONFIG_FILE}: train.value.{outcome}"
            tree = parse_expression(text, where)
            check_columns(tree, self.graph.spine_columns, where, f"source '{spine.source}'")
            self.value_exprs[outcome] = tree
        columns = {value_column(outcome): outcome for outcome in self.value_exprs}
        for index, feature in enumerate(self.graph.config.features):
            if feature.name in columns:
                raise ConfigError(
                    f"{CONFIG_FILE}: features[{index}].name: '{feature.name}' is a column of the "
                    f"training matrix already (the per-row value of train.value."
                    f"{columns[feature.name]}); choose another name"
                )

    def events(self, columns: list[str], as_of: datetime) -> Events:
        exprs = self.graph.spine_exprs
        spine = self.graph.config.spine
        time = sql.timestamp(exprs["time"].copy())
        label_at = sql.timestamp(exprs["label_available_at"].copy())
        conditions: list[exp.Expr] = [
            exp.not_(exp.Is(this=time.copy(), expression=exp.null())),
            exp.not_(exp.Is(this=exprs["label"].copy(), expression=exp.null())),
            exp.LT(this=label_at.copy(), expression=timestamp_literal(as_of)),
        ]
        if "filter" in exprs:
            conditions.insert(0, exprs["filter"].copy())
        select = (
            exp.select(
                sql.alias(sql.window(exp.func("row_number"), []), "__row"),
                *[sql.col(c) for c in columns],
                sql.alias(time, "__t"),
                sql.alias(exprs["label"].copy(), "__label"),
                sql.alias(label_at, "__label_at"),
                *[
                    sql.alias(exp.cast(tree.copy(), exp.DataType.Type.DOUBLE), _value(outcome))
                    for outcome, tree in self.value_exprs.items()
                ],
            )
            .from_(sql.table(spine.source))
            .where(sql.and_all(conditions))
        )
        carry = (
            ("__label", "label"),
            ("__label_at", "label_available_at"),
            *[(_value(o), value_column(o)) for o in self.value_exprs],
        )
        return Events(select, carry, ("__t", *spine.keys, "__row"))

    def counts_query(self, as_of: datetime) -> exp.Select:
        """How many events there are, and how many are left out and why."""
        exprs = self.graph.spine_exprs
        label_at = sql.timestamp(exprs["label_available_at"].copy())
        pending = exp.func(
            "count_if", exp.not_(exp.LT(this=label_at, expression=timestamp_literal(as_of)))
        )
        select = exp.select(
            sql.alias(exp.Count(this=exp.Star()), "events"),
            sql.alias(
                exp.func("count_if", exp.Is(this=exprs["time"].copy(), expression=exp.null())),
                "no_time",
            ),
            sql.alias(pending, "label_pending"),
            sql.alias(
                exp.func("count_if", exp.Is(this=exprs["label"].copy(), expression=exp.null())),
                "label_missing",
            ),
        ).from_(sql.table(self.graph.config.spine.source))
        if "filter" in exprs:
            select = select.where(exprs["filter"].copy())
        return select


def request_events(columns: list[str], table: str = REQUEST_TABLE) -> Events:
    """Rows to score, from ``table``: each has ``__request_row`` (its position), its
    ``prediction_time`` and the request fields. The result keeps their order."""
    select = exp.select(
        sql.alias(sql.col(REQUEST_ROW), "__row"),
        *[sql.col(c) for c in columns],
        sql.alias(sql.timestamp(sql.col(PREDICTION_TIME)), "__t"),
    ).from_(sql.table(table))
    return Events(select, (("__row", REQUEST_ROW),), ("__row",))


def _value(outcome: str) -> str:
    return f"__value_{outcome}"


def timestamp_literal(value: datetime) -> exp.Expr:
    text = value.replace(tzinfo=None).isoformat(sep=" ")
    return exp.cast(exp.Literal.string(text), exp.DataType.Type.TIMESTAMP)
