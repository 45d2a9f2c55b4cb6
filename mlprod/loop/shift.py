"""Injected changes for a simulation: ``--shift 'dep_delay*2 where carrier=UA'``.

A shift rewrites one column of the replayed rows, so that what the server sees (the events
pushed to its online store, the fields of prediction requests and the outcomes that follow)
drifts in a way the monitoring should notice. The grammar is deliberately small, so a spec
can be checked against the source contracts and explained when it is wrong::

    SPEC   := [SOURCE "."] COLUMN OP VALUE [ "where" TEST { "and" TEST } ]
    OP     := "*" | "+" | "-" | "="
    TEST   := [SOURCE "."] COLUMN ("=" | "!=") VALUE
    VALUE  := a number | 'text' (quotes optional for a bare word) | true | false | null

Examples: ``dep_delay*2 where carrier='UA'``, ``dep_delay+30 where origin=EWR and
carrier=UA``, ``weather.visib=0``, ``carrier='AA' where carrier='US'``.

An unqualified column belongs to the spine source when it has one of that name, else to
the one other replayed source that has it. ``*``, ``+`` and ``-`` change numbers (an int
column stays an int, rounded); ``=`` sets numbers, text and booleans. Keys of the spine and
time columns cannot be shifted: those would make other events, not changed ones. A shift
can be limited to rows whose event time (the source's ``time``) is in ``[start, end)``.

The change is applied in SQL, as a ``CASE`` over the source's rows, before the source's
times, the spine's time, label and label availability are computed: doubling a delay also
delays the row's availability and changes its label, as it would in the world.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.errors import SimulationError, did_you_mean, one_of
from mlprod.features.events import timestamp_literal
from mlprod.project.config import ColumnContract, ProjectConfig

Value = float | int | str | bool | None
Operation = Literal["*", "+", "-", "="]


@dataclass(frozen=True)
class Test:
    """``column = value`` (or ``!=``) on the shifted row; NULL never matches."""

    column: str
    equal: bool
    value: Value


@dataclass(frozen=True)
class Shift:
    """One parsed change of one column of one source."""

    text: str  # the spec as given
    source: str
    column: str
    operation: Operation
    value: Value
    where: tuple[Test, ...] = ()
    start: datetime | None = None  # rows whose event time is on or after this
    end: datetime | None = None  # rows whose event time is before this

    def describe(self) -> str:
        """The spec with its source and window spelt out, for a summary."""
        text = f"{self.source}.{self.column}{self.operation}{_shown(self.value)}"
        if self.where:
            tests = " and ".join(
                f"{t.column}{'=' if t.equal else '!='}{_shown(t.value)}" for t in self.where
            )
            text += f" where {tests}"
        if self.start is not None:
            text += f" from {self.start.isoformat(sep=' ')}"
        if self.end is not None:
            text += f" to {self.end.isoformat(sep=' ')}"
        return text


def _shown(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


# --- parsing --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|'(?P<quoted>(?:[^']|'')*)'"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)|(?P<op>!=|==|[*+=-]))"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, quoted, name, op
    text: str


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            rest = text[position:].strip()
            raise SimulationError(f"shift: cannot read '{rest[:20]}' in '{text}'; {_GRAMMAR}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        found.append(_Token(kind, value.replace("''", "'") if kind == "quoted" else value))
        position = match.end()
    return found


_GRAMMAR = (
    "expected COLUMN OP VALUE [where COLUMN=VALUE [and ...]] with OP one of *, +, -, =, "
    "e.g. dep_delay*2 where carrier='UA'"
)


def parse_shift(
    text: str,
    config: ProjectConfig,
    sources: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> Shift:
    """Parse ``text`` and check it against the contracts of the replayed ``sources``."""
    tokens = _tokens(text)
    if len(tokens) < 3 or tokens[0].kind != "name":
        raise SimulationError(f"shift: cannot read '{text}'; {_GRAMMAR}")
    source, column = _resolve(tokens[0].text, config, sources, text)
    contract = config.sources[source].columns[column]
    operation = tokens[1].text
    if tokens[1].kind != "op" or operation not in ("*", "+", "-", "=", "=="):
        raise SimulationError(
            f"shift: expected an operation (*, +, -, =) after '{tokens[0].text}' in "
            f"'{text}', got '{tokens[1].text}'"
        )
    op: Operation = "=" if operation == "==" else operation  # type: ignore[assignment]
    _check_operation(source, column, contract, op, config, text)
    value = _value(tokens[2], source, column, contract, text)
    if value is None and (op != "=" or not contract.nullable):
        raise SimulationError(
            f"shift: '{op} null' is not a change; use '= null'"
            if op != "="
            else f"shift: {source}.{column} may not be null (its contract says nullable: false)"
        )
    where = _tests(tokens[3:], source, config, sources, text)
    if start is not None and end is not None and start >= end:
        raise SimulationError(
            f"shift: it starts at {start} but ends at {end}; give --shift-from before --shift-to"
        )
    return Shift(text, source, column, op, value, tuple(where), start, end)


def _resolve(
    name: str, config: ProjectConfig, sources: Sequence[str], text: str
) -> tuple[str, str]:
    """The source and column a (possibly qualified) name means."""
    spine = config.spine.source
    if "." in name:
        source, column = name.split(".", 1)
        if source not in sources:
            raise SimulationError(
                f"shift: unknown source '{source}'{did_you_mean(source, sources)}; "
                f"the simulation replays {one_of(sources)}"
            )
        columns = config.sources[source].columns
        if column not in columns:
            raise SimulationError(
                f"shift: source '{source}' has no column '{column}'{did_you_mean(column, columns)}"
            )
        return source, column
    owners = [s for s in sources if name in config.sources[s].columns]
    if spine in owners:
        return spine, name
    if len(owners) == 1:
        return owners[0], name
    if owners:
        choices = " or ".join(f"'{s}.{name}'" for s in sorted(owners))
        raise SimulationError(f"shift: '{name}' is a column of several sources; write {choices}")
    home = spine if spine in sources else sources[0]
    hint = did_you_mean(name, config.sources[home].columns)
    if not hint:  # a close name in another source, qualified
        qualified = {c: f"{s}.{c}" for s in sources for c in config.sources[s].columns}
        close = did_you_mean(name, qualified)
        hint = close and f" (did you mean '{qualified[close.split(chr(39))[1]]}'?)"
    raise SimulationError(f"shift: source '{home}' has no column '{name}'{hint}")


def _value(token: _Token, source: str, column: str, contract: ColumnContract, text: str) -> Value:
    """A literal, typed by the column it is compared with or assigned to."""
    where = f"{source}.{column}"
    if token.kind == "op":
        raise SimulationError(f"shift: expected a value after the operation, got '{token.text}'")
    lowered = token.text.lower()
    if token.kind == "name" and lowered == "null":
        return None
    kind = contract.type
    if kind in ("int", "float"):
        if token.kind != "number":
            raise SimulationError(f"shift: {where} is a number column, got '{token.text}'")
        integral = re.fullmatch(r"-?\d+", token.text) is not None
        return int(token.text) if integral else float(token.text)
    if kind == "bool":
        if lowered not in ("true", "false") or token.kind == "quoted":
            raise SimulationError(
                f"shift: {where} is a boolean column, expected true or false, got '{token.text}'"
            )
        return lowered == "true"
    if kind == "string":
        if token.kind == "number":
            raise SimulationError(
                f"shift: {where} is a text column; quote the value: '{token.text}'"
            )
        if contract.categories is not None and token.text not in contract.categories:
            raise SimulationError(
                f"shift: '{token.text}' is not a category of {where}"
                f"{did_you_mean(token.text, contract.categories)}; it is one of "
                f"{one_of(contract.categories)}"
            )
        return token.text
    raise SimulationError(
        f"shift: {where} is a {kind} column; a shift changes numbers, text and "
        "booleans (shift what the times are computed from instead, e.g. a delay)"
    )


def _check_operation(
    source: str,
    column: str,
    contract: ColumnContract,
    op: Operation,
    config: ProjectConfig,
    text: str,
) -> None:
    if source == config.spine.source and column in config.spine.keys:
        raise SimulationError(
            f"shift: {column} is a key of the spine; changing it would make other "
            "events rather than change these"
        )
    if op != "=" and contract.type not in ("int", "float"):
        raise SimulationError(
            f"shift: {source}.{column} is a {contract.type} column; only '=' can "
            f"set it (got '{op}')"
        )


def _tests(
    tokens: list[_Token], source: str, config: ProjectConfig, sources: Sequence[str], text: str
) -> list[Test]:
    if not tokens:
        return []
    if tokens[0].kind != "name" or tokens[0].text.lower() != "where":
        raise SimulationError(
            f"shift: expected 'where' after the change in '{text}', got '{tokens[0].text}'"
        )
    tests: list[Test] = []
    rest = tokens[1:]
    while True:
        if len(rest) < 3 or rest[0].kind != "name" or rest[1].text not in ("=", "==", "!="):
            raise SimulationError(
                f"shift: expected COLUMN=VALUE (or COLUMN!=VALUE) after 'where'/'and' in '{text}'"
            )
        name = rest[0].text
        if "." in name and name.split(".", 1)[0] != source:
            raise SimulationError(
                f"shift: the condition reads '{name}', but the change is to source "
                f"'{source}'; a condition can only read the changed row"
            )
        column = name.split(".", 1)[-1]
        columns = config.sources[source].columns
        if column not in columns:
            raise SimulationError(
                f"shift: source '{source}' has no column '{column}'{did_you_mean(column, columns)}"
            )
        value = _value(rest[2], source, column, columns[column], text)
        tests.append(Test(column, rest[1].text != "!=", value))
        rest = rest[3:]
        if not rest:
            return tests
        if rest[0].kind != "name" or rest[0].text.lower() != "and":
            raise SimulationError(f"shift: expected 'and' between conditions, got '{rest[0].text}'")
        rest = rest[1:]


# --- applying -------------------------------------------------------------------------------


def literal(value: Value) -> exp.Expr:
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, str):
        return exp.Literal.string(value)
    return exp.Literal.number(value)


def shifted_columns(
    config: ProjectConfig, source: str, shifts: Sequence[Shift], time: exp.Expr | None
) -> list[exp.Expr]:
    """The select list of ``source``'s contract columns with ``shifts`` applied in order
    (a later shift sees the earlier ones' results); ``time`` is the source's event time,
    for shifts limited to a window."""
    contracts = config.sources[source].columns
    columns: dict[str, exp.Expr] = {name: sql.col(name) for name in contracts}
    for shift in shifts:
        if shift.source != source:
            continue
        current = columns[shift.column]
        changed = _changed(current.copy(), shift, contracts[shift.column])
        conditions = [_test(columns[t.column].copy(), t) for t in shift.where]
        if time is not None and shift.start is not None:
            conditions.append(
                exp.GTE(this=_at(time, columns), expression=timestamp_literal(shift.start))
            )
        if time is not None and shift.end is not None:
            conditions.append(
                exp.LT(this=_at(time, columns), expression=timestamp_literal(shift.end))
            )
        columns[shift.column] = (
            exp.Case(ifs=[exp.If(this=sql.and_all(conditions), true=changed)], default=current)
            if conditions
            else changed
        )
    return [sql.alias(expression, name) for name, expression in columns.items()]


def _at(time: exp.Expr, columns: dict[str, exp.Expr]) -> exp.Expr:
    """The event time over the columns as shifted so far (a shift of what the time is
    computed from moves it)."""
    moved = time.copy().transform(
        lambda node: (
            columns[node.name].copy()
            if isinstance(node, exp.Column) and node.name in columns
            else node
        )
    )
    return sql.timestamp(exp.paren(moved, copy=False))


def _changed(current: exp.Expr, shift: Shift, contract: ColumnContract) -> exp.Expr:
    if shift.operation == "=":
        return literal(shift.value)
    operations = {"*": exp.Mul, "+": exp.Add, "-": exp.Sub}
    result: exp.Expr = operations[shift.operation](
        this=exp.paren(current, copy=False), expression=literal(shift.value)
    )
    if contract.type == "int" and isinstance(shift.value, float):
        result = exp.cast(exp.func("round", result), exp.DataType.Type.BIGINT)
    return result


def _test(current: exp.Expr, test: Test) -> exp.Expr:
    if test.value is None:
        check: exp.Expr = exp.Is(this=current, expression=exp.null())
        return check if test.equal else exp.not_(check)
    compare = exp.EQ if test.equal else exp.NEQ
    return compare(this=exp.paren(current, copy=False), expression=literal(test.value))
