"""Check a source against its declared schema contract before anything is built from it.

An upstream change (a dropped or renamed column, a changed type, a jump in nulls, a value
outside the allowed categories) stops the run with a message that names the source, the
column and what changed, instead of quietly producing a different training matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.types import accepts, type_family
from mlprod.errors import ContractError, SourceError, did_you_mean, one_of
from mlprod.project.config import SourceConfig


@dataclass(frozen=True)
class SourceProfile:
    """What a source looked like when it was read: for lineage and fingerprints.

    ``fingerprints`` hash each declared column's values (as a multiset: row order does not
    count) and, under ``ROWS``, the rows as a whole; a model's lineage keeps them so that
    ``reproduce`` can name the source and the columns whose data changed.
    """

    name: str
    rows: int
    types: dict[str, str]
    null_rates: dict[str, float]
    fingerprints: dict[str, str] = field(default_factory=dict)


# The key of the whole-row fingerprint among a profile's column fingerprints.
ROWS = "*"


def check_schema(
    name: str, source: SourceConfig, found: dict[str, str], names_only: bool = False
) -> None:
    """Compare declared columns with the source's real columns (and, unless told, types)."""
    undeclared = [c for c in found if c not in source.columns]
    for column, contract in source.columns.items():
        if column not in found:
            renamed = did_you_mean(column, undeclared).replace("did you mean", "renamed to")
            hint = renamed or (
                f" (columns the contract does not declare: {one_of(undeclared, 8)})"
                if undeclared
                else ""
            )
            raise ContractError(
                f"source '{name}': column '{column}' is declared in the contract but missing from "
                f"the data{hint}"
            )
        if names_only:
            continue
        family = type_family(found[column])
        if not accepts(contract.type, family):
            raise ContractError(
                f"source '{name}': column '{column}' changed type: the contract says "
                f"{contract.type} (sources.{name}.columns.{column}.type), the data has "
                f"{found[column]} ({family or 'unsupported'}); correct the declared type if "
                "the data is right"
            )


def profile_and_check(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, types: dict[str, str]
) -> SourceProfile:
    """Count rows, nulls and out-of-contract values in one scan; raise on a broken promise.

    The same scan fingerprints each column: the sum of its values' hashes, which does not
    depend on the order DuckDB reads rows in and costs little beside the counts.
    """
    cursor = con.execute(profile_query(name, source).sql("duckdb", identify=True))
    row = cursor.fetchall()[0]
    result = dict(zip([d[0] for d in cursor.description or []], row, strict=True))
    return judge_profile(name, source, types, result)


def profile_query(name: str, source: SourceConfig) -> exp.Select:
    """The one scan of :func:`profile_and_check`, over the source's view ``name``."""
    columns = list(source.columns)
    select = exp.select(
        sql.alias(exp.Count(this=exp.Star()), "__rows"),
        sql.alias(_hash_sum(*[sql.col(c) for c in columns]), "__hash_rows"),
    )
    for i, column in enumerate(columns):
        null = exp.Is(this=sql.col(column), expression=exp.null())
        select = select.select(
            sql.alias(exp.func("count_if", null), f"__nulls{i}"),
            sql.alias(_hash_sum(sql.col(column)), f"__hash{i}"),
        )
        categories = source.columns[column].categories
        if categories is not None:
            allowed = exp.In(
                this=sql.col(column), expressions=[exp.Literal.string(c) for c in categories]
            )
            outside = exp.and_(exp.not_(null.copy()), exp.not_(allowed))
            select = select.select(
                sql.alias(exp.func("count_if", outside), f"__outside{i}"),
                sql.alias(
                    exp.func("min", sql.case_when(outside.copy(), sql.col(column))), f"__example{i}"
                ),
            )
    return select.from_(sql.table(name))


def judge_profile(
    name: str, source: SourceConfig, types: dict[str, str], result: dict[str, object]
) -> SourceProfile:
    """Raise on a broken promise of the contract; else the source's profile."""
    columns = list(source.columns)
    rows = int(result["__rows"])  # type: ignore[call-overload]
    if rows == 0:
        raise SourceError(f"source '{name}' is empty: {describe_location(source)} has 0 rows")
    null_rates: dict[str, float] = {}
    for i, column in enumerate(columns):
        contract = source.columns[column]
        nulls = int(result[f"__nulls{i}"] or 0)  # type: ignore[call-overload]
        rate = nulls / rows
        null_rates[column] = rate
        if nulls and not contract.nullable:
            raise ContractError(
                f"source '{name}': column '{column}' has {_count(nulls, 'null value')} "
                f"({rate:.2%} of {rows} rows), but the contract says nullable: false"
            )
        if contract.max_null_rate is not None and rate > contract.max_null_rate:
            raise ContractError(
                f"source '{name}': column '{column}' is {rate:.2%} null ({nulls} of {rows} "
                f"rows), above its max_null_rate of {contract.max_null_rate:.2%} "
                "(an upstream change?)"
            )
        n_outside = int(result.get(f"__outside{i}") or 0)  # type: ignore[call-overload]
        if contract.categories is not None and n_outside:
            example = ("" if n_outside == 1 else "e.g. ") + f"'{result[f'__example{i}']}'"
            raise ContractError(
                f"source '{name}': column '{column}' has {_count(n_outside, 'value')} outside its "
                f"categories ({example}); add it to sources.{name}.columns.{column}.categories "
                "if it is expected"
            )
    fingerprints = {ROWS: _digest(result["__hash_rows"])}
    fingerprints.update({c: _digest(result[f"__hash{i}"]) for i, c in enumerate(columns)})
    return SourceProfile(name, rows, types, null_rates, fingerprints)


def _hash_sum(*values: exp.Expr) -> exp.Expr:
    """``sum(hash(values...) + 1)``: an order-independent fingerprint of a column (or of
    rows). DuckDB hashes zero values (0, 0.0, false, the epoch) to 0, so each hash is moved
    by one to make a row of zeros count."""
    hashed = exp.cast(exp.func("hash", *values), exp.DataType.build("hugeint"))
    return exp.func("sum", exp.Add(this=hashed, expression=exp.Literal.number(1)))


def _digest(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def describe_location(source: SourceConfig) -> str:
    location = source.location
    if location.kind in ("csv", "parquet"):
        return f"{location.kind} file '{location.path}'"  # type: ignore[union-attr]
    if location.kind == "duckdb":
        return f"table '{location.table}' in '{location.path}'"  # type: ignore[union-attr]
    if location.kind == "spark":
        table, reader = location.table, location.format  # type: ignore[union-attr]
        return f"Spark table '{table}'" if table else f"Spark {reader} source"
    return f"PostgreSQL table '{location.db_schema}.{location.table}'"  # type: ignore[union-attr]
