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
from mlprod.features.graph import ROW_NUMBER, FeatureGraph
from mlprod.project.loading import CONFIG_FILE
from mlprod.project.training import value_column

REQUEST_TABLE = "__requests"
REQUEST_ROW = "__request_row"
PREDICTION_TIME = "prediction_time"
NO_TIME = datetime(1970, 1, 1)  # every event's time when the spine has none (see _time)


@dataclass(frozen=True)
class Events:
    """A select of events for the compiler, and what the result carries besides features.

    ``select`` gives ``__row``, the spine columns features read, ``__t`` and the ``carry``
    columns; ``order`` is the final order of the rows.
    """

    select: exp.Select
    carry: tuple[tuple[str, str], ...] = ()  # (column of select, column of the result)
    order: tuple[str, ...] = ("__t", "__row")
    keys: tuple[str, ...] | None = None  # the result's first columns; None: the spine keys


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
        for index, feature in enumerate(self.graph.config.feature_definitions):
            if feature.name in columns:
                raise ConfigError(
                    f"{CONFIG_FILE}: features[{index}].name: '{feature.name}' is a column of the "
                    f"training matrix already (the per-row value of train.value."
                    f"{columns[feature.name]}); choose another name"
                )

    def events(self, columns: list[str], as_of: datetime) -> Events:
        exprs = self.graph.spine_exprs
        time = self._time("time")
        label_at = self._time("label_available_at")
        conditions: list[exp.Expr] = [
            exp.not_(exp.Is(this=time.copy(), expression=exp.null())),
            exp.not_(exp.Is(this=exprs["label"].copy(), expression=exp.null())),
        ]
        if "label_available_at" in exprs:
            conditions.append(exp.LT(this=label_at.copy(), expression=timestamp_literal(as_of)))
        if "filter" in exprs:
            conditions.insert(0, exprs["filter"].copy())
        select = (
            exp.select(
                sql.alias(sql.window(exp.func("row_number"), []), "__row"),
                *[sql.col(c) for c in [*self._numbered(), *columns]],
                sql.alias(time, "__t"),
                sql.alias(exprs["label"].copy(), "__label"),
                sql.alias(label_at, "__label_at"),
                *[
                    sql.alias(exp.cast(tree.copy(), exp.DataType.Type.DOUBLE), _value(outcome))
                    for outcome, tree in self.value_exprs.items()
                ],
            )
            .from_(self._source())
            .where(sql.and_all(conditions))
        )
        carry = (
            ("__label", "label"),
            ("__label_at", "label_available_at"),
            *[(_value(o), value_column(o)) for o in self.value_exprs],
        )
        keys = tuple(self.graph.keys)
        return Events(select, carry, ("__t", *keys, "__row"), keys)

    def counts_query(self, as_of: datetime) -> exp.Select:
        """How many events there are, and how many are left out and why."""
        exprs = self.graph.spine_exprs
        label_at = self._time("label_available_at")
        pending: exp.Expr = exp.Literal.number(0)  # without a label time, none is pending
        if "label_available_at" in exprs:
            # A null label time is never known: counted here, as the build leaves it out.
            known = exp.LT(this=label_at, expression=timestamp_literal(as_of))
            pending = exp.func("count_if", exp.not_(exp.func("coalesce", known, exp.false())))
        select = exp.select(
            sql.alias(exp.Count(this=exp.Star()), "events"),
            sql.alias(
                exp.func("count_if", exp.Is(this=self._time("time"), expression=exp.null())),
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

    def _time(self, key: str) -> exp.Expr:
        """The spine's ``time`` or ``label_available_at`` as a timestamp, or :data:`NO_TIME`.

        Without a spine time every event gets the same constant prediction time (and label
        time). That is exact, not an approximation: the config loader refuses everything that
        would read it (as-of joins, aggregates, lookups into timed tables, out-of-time splits),
        so no feature value depends on it. A fixed constant rather than the build's ``as_of``
        keeps the matrix, and so its fingerprint and its test set's, the same build after build.
        """
        if key in self.graph.spine_exprs:
            return sql.timestamp(self.graph.spine_exprs[key].copy())
        return timestamp_literal(NO_TIME)

    def _numbered(self) -> list[str]:
        """The row-number key when the spine has no keys (computed by :meth:`_source`)."""
        return [ROW_NUMBER] if self.graph.numbered else []

    def _source(self) -> exp.Expr:
        """The spine source; without keys, with each row's number in the source's order.

        Numbered before any row is filtered out, so ``row_number`` is the row's position in
        the source itself (DuckDB numbers ``row_number() OVER ()`` in scan order, which keeps
        a file's or table's row order).
        """
        source = self.graph.config.spine.source
        if not self.graph.numbered:
            return sql.table(source)
        numbered = exp.select(
            exp.Star(), sql.alias(sql.window(exp.func("row_number"), []), ROW_NUMBER)
        ).from_(sql.table(source))
        return sql.subquery(numbered, source)


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
