"""User expressions from mlprod.yaml, parsed into sqlglot trees and checked.

An expression is DuckDB SQL for one value per row: columns, literals, operators, functions,
CASE and CAST. It may not contain a query, a table, a star or a qualified column; those would
let a config reach around the point-in-time rule. Column names are checked against what the
expression is allowed to see, with "did you mean" for misspellings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from mlprod.errors import FeatureError, UnknownColumnError, did_you_mean

DIALECT = "duckdb"
_FORBIDDEN = (exp.Query, exp.Table, exp.Star, exp.Subquery, exp.Command, exp.Window, exp.AggFunc)


def parse_expression(text: str, where: str) -> exp.Expr:
    """Parse one scalar expression; ``where`` names it in errors (``feature 'x'``)."""
    try:
        parsed = sqlglot.parse(text, read=DIALECT)
    except ParseError as exc:
        raise FeatureError(
            f"{where}: cannot parse expression '{text}': {_parse_problem(exc)}"
        ) from None
    if len(parsed) != 1 or parsed[0] is None:
        raise FeatureError(f"{where}: expected one expression, found '{text}'")
    tree = parsed[0]
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            what = (
                "an aggregate or window function"
                if isinstance(node, exp.AggFunc | exp.Window)
                else "a query or table"
            )
            raise FeatureError(
                f"{where}: expression '{text}' contains {what}; a row expression may only use "
                "the columns of its own row (declare an aggregate feature instead)"
            )
        if isinstance(node, exp.Column) and node.table:
            raise FeatureError(
                f"{where}: expression '{text}' refers to '{node.sql(DIALECT)}'; write column "
                "names without a table prefix"
            )
    # Parenthesised, so it keeps its meaning wherever the compiler embeds it.
    return (
        tree
        if isinstance(tree, exp.Column | exp.Literal | exp.Paren)
        else exp.paren(tree, copy=False)
    )


def _parse_problem(exc: ParseError) -> str:
    """sqlglot's description, unless it speaks of its own classes rather than of SQL."""
    error = exc.errors[0] if exc.errors else {}
    description = str(error.get("description") or exc)
    if "<class" in description or "Required keyword" in description:
        description = "it is not complete SQL"
    column = error.get("col")
    return f"{description} (near character {column})" if column else description


def column_names(tree: exp.Expr) -> list[str]:
    """The distinct column names an expression reads, in order of appearance."""
    return list(dict.fromkeys(col.name for col in tree.find_all(exp.Column)))


def check_columns(
    tree: exp.Expr,
    allowed: Collection[str],
    where: str,
    scope: str,
    source: str | None = None,
) -> None:
    """Raise for the first column not in ``allowed``; ``scope`` says whose columns they are.

    With ``source`` (whose declared columns are among ``allowed``), the error is an
    ``UnknownColumnError``, which a caller that can look at the data may explain better.
    """
    for name in column_names(tree):
        if name not in allowed:
            message = f"{where}: {scope} has no column '{name}'{did_you_mean(name, allowed)}"
            if source is not None:
                raise UnknownColumnError(message, where, source, name)
            raise FeatureError(message)


def rewrite_columns(tree: exp.Expr, replace: Callable[[str], exp.Expr]) -> exp.Expr:
    """A copy of ``tree`` with every column replaced by ``replace(name)``."""

    def visit(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column):
            return replace(node.name)
        return node

    return tree.copy().transform(visit)


def qualified(table: str, column: str) -> exp.Column:
    return exp.column(column, table=table, quoted=True)
