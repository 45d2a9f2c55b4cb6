"""Times with a zone become naive UTC as a source is read.

Every time mlprod compares is naive UTC. A file or table may hold times with a zone at any
precision (pandas writes ``timestamp[ns, UTC]`` to Parquet by default, a CSV may carry
``+02:00`` offsets); a declared timestamp column of that kind is converted to the same instant
in UTC without its zone, keeping its precision, so it reads exactly as the naive UTC values
would.
"""

from __future__ import annotations

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.project.config import SourceConfig


def has_zone(duckdb_type: str) -> bool:
    """``TIMESTAMP WITH TIME ZONE``, ``TIMESTAMPTZ_NS``, ... (not ``TIMESTAMP_NS``)."""
    text = duckdb_type.upper()
    return text.startswith("TIMESTAMPTZ") or text.endswith("WITH TIME ZONE")


def as_naive_utc(
    relation: duckdb.DuckDBPyRelation, source: SourceConfig
) -> duckdb.DuckDBPyRelation:
    """``relation`` with each declared timestamp column that has a zone moved to naive UTC."""
    zoned = {
        column
        for column, kind in zip(relation.columns, relation.types, strict=True)
        if column in source.columns
        and source.columns[column].type == "timestamp"
        and has_zone(str(kind))
    }
    if not zoned:
        return relation
    projection = [
        sql.alias(exp.func("timezone", exp.Literal.string("UTC"), sql.col(c)), c)
        if c in zoned
        else sql.col(c)
        for c in relation.columns
    ]
    return relation.project(", ".join(p.sql("duckdb", identify=True) for p in projection))
