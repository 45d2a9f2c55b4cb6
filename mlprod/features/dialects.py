"""The feature query for engines other than DuckDB: Spark SQL and PostgreSQL.

The compiler writes one query for DuckDB; here the same plan is rewritten for an engine that
lacks some of its constructs, choosing another strategy that gives the same values, bit for
bit where the engines' arithmetic allows:

* ``ASOF LEFT JOIN`` (neither engine has it): the probe's rows and the table's rows in one
  stream per key, ordered by time with the probe's rows first among equal times (which keeps
  the strict ``available_at < t`` rule); a running maximum of the table's times gives each
  probe row the time of its match, and the table is joined back on keys and that time. Every
  table the compiler as-of joins has one row per key and time (they are grouped so), so the
  join back finds exactly the row ASOF would have chosen.
* ``UNNEST([a, b])`` side by side in one select: one select per element, UNION ALL.
* ``RANGE`` frames with interval bounds: ordered by the epoch in microseconds with integer
  bounds (Spark refuses two interval bounds of different types; the integer form is exact).
* DuckDB's functions and operators with their DuckDB meaning: ``epoch_us``, ``to_minutes``
  and friends, ``//`` (truncating), ``/`` (NULL for a zero divisor), ``dayofweek`` (Sunday is
  0), date parts as integers, ``make_date``, ``median``, ``row_number() OVER ()``.

A function this module does not know is refused with the feature's engine named, rather than
handed to an engine that might give it another meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.errors import FeatureError

Engine = Literal["duckdb", "spark", "postgres"]
Statement = TypeVar("Statement", bound=exp.Expr)
ENGINES: tuple[Engine, ...] = ("duckdb", "spark", "postgres")
_SPANS = {
    "to_weeks": "WEEK",
    "to_days": "DAY",
    "to_hours": "HOUR",
    "to_minutes": "MINUTE",
    "to_seconds": "SECOND",
    "to_milliseconds": "MILLISECOND",
    "to_microseconds": "MICROSECOND",
}
_PARTS: dict[type[exp.Expr], str] = {
    exp.Year: "YEAR",
    exp.Quarter: "QUARTER",
    exp.Month: "MONTH",
    exp.Day: "DAY",
    exp.Hour: "HOUR",
    exp.Minute: "MINUTE",
    exp.Second: "SECOND",
    exp.DayOfWeek: "DOW",
    exp.DayOfYear: "DOY",
}


def for_engine(query: Statement, engine: Engine) -> Statement:
    """The DuckDB feature query rewritten for ``engine`` (DuckDB's own is returned as is)."""
    if engine == "duckdb":
        return query
    query = query.copy()
    for select in list(query.find_all(exp.Select)):
        if any(_is_asof(j) for j in select.args.get("joins") or []):
            _asof_as_streams(select, engine)
    for select in list(query.find_all(exp.Select)):
        if any(isinstance(e.unalias(), exp.Unnest) for e in select.expressions):
            select.replace(_unnest_as_union(select))
    for window in list(query.find_all(exp.Window)):
        _numeric_frame(window)
    _functions(query, engine)
    if engine == "spark":
        for cte in query.find_all(exp.CTE):
            cte.set("materialized", None)
    return query


def render(query: exp.Expr, engine: Engine, pretty: bool = False) -> str:
    """The statement as ``engine``'s SQL (each engine's name is its sqlglot dialect)."""
    return query.sql(dialect=engine, pretty=pretty, identify=True)


# --- as-of joins ---------------------------------------------------------------------------


def _is_asof(join: exp.Join) -> bool:
    return str(join.args.get("method") or "").upper() == "ASOF"


def _asof_as_streams(select: exp.Select, engine: Engine) -> None:
    """Replace each ASOF LEFT JOIN of ``select`` by a match stream and a plain LEFT JOIN
    (Spark: the stream carries the matched row itself, see :func:`_latest_stream`; a select
    that only reads its probe and one as-of match reads both from the stream, see
    :func:`_asof_from_stream`)."""
    probe = sql.from_of(select)  # the probe: a subquery with __row, __t and the keys, as __p
    probe_alias = probe.alias_or_name
    if engine == "spark" and len(select.args["joins"]) == 1:
        _asof_from_stream(select, probe, probe_alias, select.args["joins"][0])
        return
    joins: list[exp.Join] = []
    for join in select.args.get("joins") or []:
        if not _is_asof(join):
            joins.append(join)
            continue
        name = join.this.alias_or_name
        table = join.this.name
        equal, at = _split_condition(join.args["on"], name)
        if engine == "spark":
            read = sorted({c.name for c in select.find_all(exp.Column) if c.table == name})
            latest = _latest_stream(probe, probe_alias, table, equal, at, read)
            on = exp.EQ(this=sql.col("__row", name), expression=sql.col("__row", probe_alias))
            joins.append(exp.Join(this=sql.subquery(latest, name), side="LEFT", on=on))
            continue
        match = f"{name}__match"
        stream = _match_stream(probe, probe_alias, table, equal, at)
        on_row = exp.EQ(this=sql.col("__row", match), expression=sql.col("__row", probe_alias))
        joins.append(exp.Join(this=sql.subquery(stream, match), side="LEFT", on=on_row))
        back: list[exp.Expr] = [
            exp.EQ(this=right.copy(), expression=left.copy()) for right, left in equal
        ]
        back.append(exp.EQ(this=sql.col("__at", name), expression=sql.col("__m", match)))
        joins.append(exp.Join(this=join.this.copy(), side="LEFT", on=sql.and_all(back)))
    select.set("joins", joins)


def _asof_from_stream(
    select: exp.Select, probe: exp.Expr, probe_alias: str, join: exp.Join
) -> None:
    """Spark: the probe's rows carry the columns ``select`` reads of them through the stream
    (as the struct ``__q``), next to their match (``__m``), so the select reads the stream
    alone and nothing is joined back by row id (one shuffle join less)."""
    name = join.this.alias_or_name
    equal, at = _split_condition(join.args["on"], name)
    select.set("joins", None)
    columns = [c for c in select.find_all(exp.Column) if c.table in (probe_alias, name)]
    carried = sorted({c.name for c in columns if c.table == probe_alias})
    read = sorted({c.name for c in columns if c.table == name})
    own = exp.Struct(expressions=[sql.alias(sql.col(c, probe_alias), c) for c in carried])
    matched = _stream(probe, probe_alias, join.this.name, equal, at, *_latest(read), own)
    for column in columns:
        struct = "__q" if column.table == probe_alias else "__m"
        field = exp.Dot(this=sql.col(struct, probe_alias), expression=column.this.copy())
        column.replace(field)
    probe.replace(sql.subquery(matched, probe_alias))


def _split_condition(on: exp.Expr, name: str) -> tuple[list[tuple[exp.Column, exp.Expr]], exp.Expr]:
    """The equalities (table column, probe expression) and the probe time of an ASOF
    condition ``k = e AND ... AND at > name.__at``."""
    equal: list[tuple[exp.Column, exp.Expr]] = []
    at: exp.Expr | None = None
    for part in on.flatten() if isinstance(on, exp.And) else [on]:
        part = part.unnest()
        if isinstance(part, exp.EQ):
            left, right = part.this, part.expression
            if isinstance(right, exp.Column) and right.table == name:
                left, right = right, left
            assert isinstance(left, exp.Column) and left.table == name, part.sql()
            equal.append((left, right))
        else:
            assert isinstance(part, exp.GT) and part.expression.name == "__at", part.sql()
            at = part.this
    assert at is not None, on.sql()
    return equal, at


def _match_stream(
    probe: exp.Expr,
    probe_alias: str,
    table: str,
    equal: list[tuple[exp.Column, exp.Expr]],
    at: exp.Expr,
) -> exp.Select:
    """Each probe row's ``__row`` and the time ``__m`` of its as-of match (NULL: none)."""
    return _stream(
        probe, probe_alias, table, equal, at, sql.col("__at"), exp.Max(this=sql.col("__m"))
    )


def _latest_stream(
    probe: exp.Expr,
    probe_alias: str,
    table: str,
    equal: list[tuple[exp.Column, exp.Expr]],
    at: exp.Expr,
    read: list[str],
) -> exp.Select:
    """Each probe row's ``__row`` and the columns ``read`` of its as-of match (NULL: none).

    The table's rows carry themselves as one struct, and the latest non-null struct before
    each probe row is its match (a NULL value in the match stays NULL), so nothing is joined
    back (Spark's ``last(...) IGNORE NULLS``).
    """
    select = _stream(probe, probe_alias, table, equal, at, *_latest(read))
    fields = [
        sql.alias(exp.Dot(this=sql.col("__m"), expression=exp.to_identifier(c, quoted=True)), c)
        for c in read
    ]
    return exp.select(sql.col("__row"), *fields).from_(sql.subquery(select, "__matched"))


def _latest(read: list[str]) -> tuple[exp.Expr, exp.Expr]:
    """A table row carried as one struct of ``read``, and the latest non-null one so far."""
    row = exp.Struct(expressions=[sql.alias(sql.col(c), c) for c in read])
    return row, exp.IgnoreNulls(this=exp.Last(this=sql.col("__m")))


def _stream(
    probe: exp.Expr,
    probe_alias: str,
    table: str,
    equal: list[tuple[exp.Column, exp.Expr]],
    at: exp.Expr,
    carried: exp.Expr,
    running: exp.Expr,
    own: exp.Expr | None = None,
) -> exp.Select:
    """The probe's rows and the table's (``carried`` as ``__m``; NULL on probe rows) in one
    stream per key, by time, probe rows first among equal times; ``running`` (over ``__m``)
    read at each probe row as ``__m``, with its ``__row`` (and ``own`` of the probe row, as
    ``__q``)."""
    keys = [f"__e{i}" for i in range(len(equal))]
    probe_rows = exp.select(
        sql.alias(sql.col("__row", probe_alias), "__row"),
        *[sql.alias(left.copy(), key) for key, (_, left) in zip(keys, equal, strict=True)],
        sql.alias(at.copy(), "__at"),
        sql.alias(exp.Literal.number(0), "__side"),
        sql.alias(exp.null(), "__m"),
    ).from_(probe.copy())
    if own is not None:
        probe_rows = probe_rows.select(sql.alias(own, "__q"))
    table_rows = exp.select(
        sql.alias(exp.cast(exp.null(), exp.DataType.Type.BIGINT), "__row"),
        *[sql.alias(sql.col(right.name), key) for key, (right, _) in zip(keys, equal, strict=True)],
        sql.alias(sql.col("__at"), "__at"),
        sql.alias(exp.Literal.number(1), "__side"),
        sql.alias(carried, "__m"),
    ).from_(sql.table(table))
    if own is not None:
        table_rows = table_rows.select(sql.alias(exp.null(), "__q"))
    for right, _ in equal:
        table_rows = table_rows.where(
            exp.not_(exp.Is(this=sql.col(right.name), expression=exp.null()))
        )
    stream = exp.union(probe_rows, table_rows, distinct=False)
    order = exp.Order(
        expressions=[
            exp.Ordered(this=sql.col("__at"), nulls_first=False),
            exp.Ordered(this=sql.col("__side"), nulls_first=False),
        ]
    )
    window = exp.Window(
        this=running,
        partition_by=[sql.col(k) for k in keys],
        order=order,
        spec=sql.running_total(),
        over="OVER",
    )
    kept = [sql.col("__row"), *([sql.col("__q")] if own is not None else [])]
    marked = exp.select(*kept, sql.col("__side"), sql.alias(window, "__m")).from_(
        stream.subquery(exp.to_identifier("__stream", quoted=True))
    )
    side = exp.EQ(this=sql.col("__side"), expression=exp.Literal.number(0))
    return (
        exp.select(*[k.copy() for k in kept], sql.col("__m"))
        .from_(sql.subquery(marked, "__marked"))
        .where(side)
    )


# --- lists unfolded side by side -------------------------------------------------------------


def _unnest_as_union(select: exp.Select) -> exp.Expr:
    """``SELECT k, UNNEST([a, b]) AS x, UNNEST([c, d]) AS y FROM t`` as the union of
    ``SELECT k, a AS x, c AS y FROM t`` and ``SELECT k, b AS x, d AS y FROM t``."""
    lengths = {
        len(e.unalias().expressions[0].expressions)
        for e in select.expressions
        if isinstance(e.unalias(), exp.Unnest)
    }
    assert len(lengths) == 1, select.sql()
    parts = []
    for index in range(lengths.pop()):
        part = select.copy()
        columns = []
        for e in part.expressions:
            inner = e.unalias()
            if isinstance(inner, exp.Unnest):
                item = inner.expressions[0].expressions[index].copy()
                e = sql.alias(item, e.alias)
            columns.append(e)
        part.set("expressions", columns)
        parts.append(part)
    union: exp.Select | exp.Union = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    return exp.select(exp.Star()).from_(
        union.subquery(exp.to_identifier("__unfolded", quoted=True))
    )


# --- window frames ---------------------------------------------------------------------------


def _numeric_frame(window: exp.Window) -> None:
    """A RANGE frame with interval bounds, ordered by a time: the same frame over the epoch
    in microseconds, with integer bounds."""
    spec = window.args.get("spec")
    if spec is None or str(spec.args.get("kind") or "").upper() != "RANGE":
        return
    bounds = [spec.args.get("start"), spec.args.get("end")]
    if not any(isinstance(b, exp.Interval) for b in bounds):
        return
    order = window.args["order"]
    for ordered in order.expressions:
        ordered.set("this", exp.func("epoch_us", ordered.this))
    for key in ("start", "end"):
        bound = spec.args.get(key)
        if isinstance(bound, exp.Interval):
            spec.set(key, exp.Literal.number(_micros(bound)))


def _micros(interval: exp.Interval) -> int:
    amount = int(interval.this.name)
    unit = interval.args["unit"].name.upper()
    per = {"DAY": 86_400_000_000, "HOUR": 3_600_000_000, "MINUTE": 60_000_000}
    per |= {"SECOND": 1_000_000, "MICROSECOND": 1}
    return amount * per[unit]


# --- functions -------------------------------------------------------------------------------


def _functions(query: exp.Expr, engine: Engine) -> None:
    """Give DuckDB's functions their DuckDB meaning in ``engine``, innermost first."""
    for node in list(query.walk(bfs=False))[::-1]:
        replacement = _function(node, engine)
        if replacement is not None and replacement is not node:
            node.replace(replacement)


def _function(node: exp.Expr, engine: Engine) -> exp.Expr | None:
    if isinstance(node, exp.Anonymous):
        return _anonymous(node, engine)
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.INT128:
        return exp.DataType.build("numeric" if engine == "postgres" else "decimal(38, 0)")
    handler = _HANDLERS.get(type(node))
    return handler(node, engine) if handler is not None else None


def _anonymous(node: exp.Anonymous, engine: Engine) -> exp.Expr:
    name = node.name.lower()
    args = node.expressions
    if name == "epoch_us" and len(args) == 1:
        return _epoch_us(args[0], engine)
    if name in _SPANS and len(args) == 1:
        return _span(args[0], _SPANS[name])
    if name == "hash" and engine == "postgres":  # fingerprints: any stable 64-bit hash
        row = exp.cast(exp.Tuple(expressions=list(args)), exp.DataType.Type.TEXT)
        if len(args) == 1:
            row = exp.cast(args[0], exp.DataType.Type.TEXT)
        return exp.Anonymous(this="hashtextextended", expressions=[row, exp.Literal.number(0)])
    if name == "hash" and engine == "spark":
        return exp.Anonymous(this="xxhash64", expressions=list(args))
    if name in {"monotonically_increasing_id"}:
        return node
    raise FeatureError(
        f"the function {node.name}() has no translation for the {engine} engine yet; "
        "compute the feature with engine kind duckdb, or write it with other functions"
    )


def _span(amount: exp.Expr, unit: str) -> exp.Expr:
    """``to_minutes(x)`` and friends: ``x`` times an interval of one unit."""
    if unit == "WEEK":
        one = exp.Interval(this=exp.Literal.string("7"), unit=exp.Var(this="DAY"))
    else:
        one = exp.Interval(this=exp.Literal.string("1"), unit=exp.Var(this=unit))
    return exp.Mul(this=exp.paren(amount), expression=one)


def _epoch_us(time: exp.Expr, engine: Engine) -> exp.Expr:
    if engine == "spark":
        return exp.func("unix_micros", exp.cast(time, exp.DataType.build("TIMESTAMP_LTZ")))
    seconds = exp.Extract(this=exp.Var(this="EPOCH"), expression=time)
    micros = exp.Mul(this=seconds, expression=exp.Literal.number(1_000_000))
    return exp.cast(micros, exp.DataType.Type.BIGINT)


def _part(node: exp.Expr, engine: Engine) -> exp.Expr | None:
    """Date parts as integers; ``dayofweek`` counts from Sunday = 0 as in DuckDB."""
    part = _PARTS[type(node)]
    value = node.this
    if engine == "spark":  # Spark's functions of these names, as BIGINT like DuckDB's
        if part == "DOW":
            shifted = exp.Sub(this=exp.func("dayofweek", value), expression=exp.Literal.number(1))
            return exp.cast(shifted, exp.DataType.Type.BIGINT)
        if isinstance(node.parent, exp.Cast):
            return None
        return exp.cast(node, exp.DataType.Type.BIGINT)
    extracted = exp.Extract(this=exp.Var(this=part), expression=value)
    return exp.cast(exp.func("floor", extracted), exp.DataType.Type.BIGINT)


def _make_date(node: exp.Expr, engine: Engine) -> exp.Expr | None:
    if engine == "spark":
        return None
    parts = [exp.cast(node.args[k], exp.DataType.Type.INT) for k in ("year", "month", "day")]
    return exp.Anonymous(this="make_date", expressions=parts)  # PostgreSQL's takes integers


def _divide(node: exp.Div, engine: Engine) -> exp.Expr:
    """``a / b`` as DuckDB divides: in doubles, by IEEE rules (``x / 0`` is infinite or NaN,
    where both engines raise)."""
    numerator = exp.cast(node.this, exp.DataType.Type.DOUBLE)
    divisor = exp.cast(node.expression, exp.DataType.Type.DOUBLE)

    def special(name: str) -> exp.Expr:
        return exp.cast(exp.Literal.string(name), exp.DataType.Type.DOUBLE)

    zero = exp.Literal.number(0)
    by_zero = exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=numerator.copy(), expression=exp.null()), true=exp.null()),
            exp.If(this=exp.GT(this=numerator.copy(), expression=zero), true=special("Infinity")),
            exp.If(
                this=exp.LT(this=numerator.copy(), expression=zero.copy()),
                true=special("-Infinity"),
            ),
        ],
        default=special("NaN"),
    )
    return exp.Case(
        ifs=[exp.If(this=exp.EQ(this=divisor.copy(), expression=zero.copy()), true=by_zero)],
        default=exp.Div(this=numerator, expression=divisor),
    )


def _integer_divide(node: exp.IntDiv, engine: Engine) -> exp.Expr | None:
    """``a // b``: truncated toward zero (a zero divisor raises, as in DuckDB)."""
    if engine == "spark":
        return None  # sqlglot writes DIV, which truncates
    quotient = exp.Anonymous(this="div", expressions=[node.this, node.expression])
    return exp.cast(quotient, exp.DataType.Type.BIGINT)  # PostgreSQL's div() is numeric


def _round(node: exp.Round, engine: Engine) -> exp.Expr | None:
    """``round(x)`` halves away from zero (PostgreSQL's round of a double halves to even):
    the truncated value plus the sign where the fraction is a half or more, exact for
    doubles and decimals alike, and of the argument's type as in DuckDB."""
    if engine != "postgres" or node.args.get("decimals") is not None:
        return None
    value = node.this
    whole = exp.func("trunc", value.copy())
    fraction = exp.func("abs", exp.Sub(this=value.copy(), expression=whole.copy()))
    up = exp.Case(
        ifs=[
            exp.If(
                this=exp.GTE(this=fraction, expression=exp.Literal.number(0.5)),
                true=exp.func("sign", value.copy()),
            )
        ],
        default=exp.Literal.number(0),
    )
    return exp.paren(exp.Add(this=whole, expression=up))


def _whole(node: exp.Floor | exp.Ceil, engine: Engine) -> exp.Expr | None:
    """``floor(x)``, ``ceil(x)`` of the argument's type (Spark's return BIGINT for a double):
    ``x - (x - floor(x))``, exact, since a double's fraction is exact."""
    if engine != "spark" or node.args.get("decimals") is not None:
        return None
    value = node.this
    rounded = type(node)(this=value.copy())
    return exp.paren(
        exp.Sub(this=value.copy(), expression=exp.paren(exp.Sub(this=value, expression=rounded)))
    )


def _row_number(node: exp.Window, engine: Engine) -> exp.Expr | None:
    """``row_number() OVER ()``, which Spark refuses without an order: the rows' own order."""
    if engine != "spark" or not isinstance(node.this, exp.RowNumber) or node.args.get("order"):
        return None
    if node.args.get("partition_by"):
        return None
    alias = node.parent.alias if isinstance(node.parent, exp.Alias) else ""
    identity = exp.Anonymous(this="monotonically_increasing_id", expressions=[])
    if alias == "__row":  # an identity only: any unique number will do
        return identity
    order = exp.Order(expressions=[exp.Ordered(this=identity, nulls_first=False)])
    return exp.Window(this=exp.RowNumber(), order=order, over="OVER")


_Handler = Callable[[exp.Expr, Engine], "exp.Expr | None"]
_HANDLERS: dict[type[exp.Expr], _Handler] = {
    **dict.fromkeys(_PARTS, _part),
    exp.DateFromParts: _make_date,
    exp.ToDays: lambda node, engine: _span(node.this, "DAY"),
    exp.Div: _divide,  # type: ignore[dict-item]
    exp.IntDiv: _integer_divide,  # type: ignore[dict-item]
    exp.Round: _round,  # type: ignore[dict-item]
    exp.Floor: _whole,  # type: ignore[dict-item]
    exp.Ceil: _whole,  # type: ignore[dict-item]
    exp.Window: _row_number,  # type: ignore[dict-item]
}
