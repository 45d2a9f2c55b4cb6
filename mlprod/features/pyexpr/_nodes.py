"""What the compiler builds: a compiled node (its closure and static type) and the static
types known before a row arrives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlglot import exp

from mlprod.errors import FeatureError
from mlprod.features.pyexpr._values import _RowError

Row = Mapping[str, Any]
RowFunction = Callable[[Row], Any]


class UnsupportedExpression(FeatureError):
    """The expression uses a construct that has no online evaluator; evaluate it in DuckDB."""


# Static types, as far as they are known before a row arrives. ANY is a column (its kind is
# read from the row value); NULL is the NULL literal.
BOOL, INT, BIGINT, DOUBLE, FLOAT, DECIMAL = (
    "BOOLEAN",
    "INTEGER",
    "BIGINT",
    "DOUBLE",
    "FLOAT",
    "DECIMAL",
)
TEXT, TS, DATE, IVL, NULL, ANY = "VARCHAR", "TIMESTAMP", "DATE", "INTERVAL", "NULL", "ANY"
_NUMERIC = {INT, BIGINT, DOUBLE, DECIMAL}


class _Node(NamedTuple):
    fn: RowFunction
    type: str
    const: bool = False
    scale: int = 0  # digits after the point of a DECIMAL, as DuckDB's type has it


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Func):
        return f"function '{node.sql_name().lower()}'"
    return f"'{node.key}' expressions"


def _known_null(node: _Node) -> bool:
    """NULL whatever the row: DuckDB then folds a NULL-propagating operator to NULL unseen."""
    return node.type == NULL or (node.const and node.fn({}) is None)


def _const(value: Any, kind: str) -> _Node:
    return _Node(lambda row: value, kind, True)


def _fold(fn: RowFunction, kind: str, children: Sequence[_Node]) -> _Node:
    """Evaluate now when every input is a constant (unless it fails: then DuckDB fails too)."""
    if children and all(c.const for c in children):
        try:
            return _const(fn({}), kind)
        except (_RowError, TypeError, ValueError, ArithmeticError):
            pass
    return _Node(fn, kind)
