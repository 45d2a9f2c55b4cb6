"""Bind every feature's SQL against the contracts' column types, reading no data.

Empty tables with the declared column types stand in for the sources, and DuckDB binds the
compiled query of each feature against them. An unknown function, a type mismatch, a time
that is not a timestamp or a per-row value (``train.value``) that is not a number is found by
``mlprod config check`` in milliseconds, instead of halfway through a build, and each
feature's output type is known up front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import duckdb
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.contracts import describe_location
from mlprod.data.sources import data_types
from mlprod.data.types import accepts, type_family
from mlprod.errors import FeatureError
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.events import TrainingEvents
from mlprod.features.graph import FeatureGraph, Node
from mlprod.project.config import AggregateFeature, ColumnType

SQL_TYPES: dict[ColumnType, str] = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}
NUMERIC_FUNCTIONS = frozenset({"sum", "mean", "std"})
_PROBE_TIME = datetime(9999, 1, 1)
# What a check's message names before its reason: a feature, or a key of mlprod.yaml.
_WHERE = re.compile(r"(feature '\w+'|mlprod\.yaml: [\w.\[\]]+): ")
# Declared string, guessed bool: 'Yes'/'No' or 'true'/'false' in a CSV may well be meant as text.
_TEXT = frozenset({("string", "bool")})
Retyped = Mapping[tuple[str, str], ColumnType]  # (source, column) -> the type to bind it as


def check_types(
    graph: FeatureGraph, training: TrainingEvents | None = None, folder: Path | None = None
) -> dict[str, str]:
    """Check all expressions (times, label, values) and features; return each feature's SQL type.

    The whole matrix query is bound once; only when that fails is each feature bound on its
    own, in dependency order, so that the message names the first broken one. Given the
    project ``folder``, a failure is explained by a declared type the data contradicts, if
    one is its cause.
    """
    training = training or TrainingEvents(graph)
    try:
        return _bind(graph, training)
    except FeatureError as exc:
        if folder is None:
            raise
        raise _blame_declared_type(folder, graph, training, exc) from None


def _blame_declared_type(
    folder: Path, graph: FeatureGraph, training: TrainingEvents, error: FeatureError
) -> FeatureError:
    """The error to show: about the declared type of a column whose data has another type,
    when binding that column with the data's type makes the failed check pass; else ``error``."""
    where = _WHERE.match(str(error))
    if where is None:
        return error
    config = graph.config
    for source, declared in config.sources.items():
        found = data_types(folder, config, source) or {}
        for column, contract in declared.columns.items():
            family = type_family(found.get(column, ""))
            if family is None or accepts(contract.type, family) or (contract.type, family) in _TEXT:
                continue
            try:
                _bind(graph, training, {(source, column): family})
            except FeatureError as again:
                if str(again).startswith(where.group(0)):
                    continue  # the same check fails with the data's type too
            return FeatureError(
                f"{where.group(0)}column '{column}' is declared {contract.type} "
                f"(sources.{source}.columns.{column}.type), but {describe_location(declared)} "
                f"holds {family} values ({found[column]}); correct the declared type"
            )
    return error


def _bind(
    graph: FeatureGraph, training: TrainingEvents, retyped: Retyped | None = None
) -> dict[str, str]:
    """Bind everything against empty sources of the declared types (or ``retyped``)."""
    con = duckdb.connect()
    try:
        _create_empty_sources(con, graph, retyped or {})
        _check_times(con, graph)
        _check_values(con, graph, training)
        compiler = MatrixCompiler(graph)
        query = compiler.training_query(_PROBE_TIME, training=training)
        try:
            relation = con.sql(query.sql("duckdb", identify=True))
        except duckdb.Error as exc:
            for name in graph.nodes:
                _check_feature(con, compiler, name)
            # Each binds alone, yet not all together: say so rather than let the build fail.
            raise FeatureError(f"the feature query does not bind: {duckdb_message(exc)}") from None
        types = dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))
        for name in graph.nodes:
            _check_numeric(con, graph.nodes[name])
        return {name: types[name] for name in graph.nodes}
    finally:
        con.close()


def _check_feature(con: duckdb.DuckDBPyConnection, compiler: MatrixCompiler, name: str) -> None:
    """Bind one feature (and what it needs) alone."""
    _check_numeric(con, compiler.graph.nodes[name])
    query = compiler.training_query(_PROBE_TIME, [name]).sql("duckdb", identify=True)
    try:
        con.sql(query)
    except duckdb.Error as exc:
        raise FeatureError(f"feature '{name}': {duckdb_message(exc)}") from None


def _check_numeric(con: duckdb.DuckDBPyConnection, node: Node) -> None:
    feature = node.feature
    if isinstance(feature, AggregateFeature) and feature.function in NUMERIC_FUNCTIONS:
        assert node.value is not None
        found = _type_of(con, feature.source, node.value, f"feature '{node.name}'")
        if type_family(found) not in ("int", "float", "bool"):
            raise FeatureError(
                f"feature '{node.name}': function '{feature.function}' needs a number, but "
                f"value '{feature.value}' is {found}"
            )


def duckdb_message(exc: duckdb.Error) -> str:
    """DuckDB's first line (and its "Did you mean" hint), without the query excerpt."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hints = [line for line in lines[1:] if line.lower().startswith("did you mean")]
    return " ".join(lines[:1] + hints[:1])


def _create_empty_sources(
    con: duckdb.DuckDBPyConnection, graph: FeatureGraph, retyped: Retyped
) -> None:
    for name, source in graph.config.sources.items():
        columns = [
            exp.ColumnDef(
                this=exp.to_identifier(column, quoted=True),
                kind=exp.DataType.build(
                    SQL_TYPES[retyped.get((name, column), contract.type)], dialect="duckdb"
                ),
            )
            for column, contract in source.columns.items()
        ]
        schema = exp.Schema(this=sql.table(name), expressions=columns)
        con.execute(exp.Create(this=schema, kind="TABLE").sql("duckdb"))


def _type_of(con: duckdb.DuckDBPyConnection, source: str, tree: exp.Expr, where: str) -> str:
    probe = exp.select(tree.copy()).from_(sql.table(source)).limit(0)
    try:
        return str(con.sql(probe.sql("duckdb", identify=True)).types[0])
    except duckdb.Error as exc:
        raise FeatureError(f"{where}: {duckdb_message(exc)}") from None


def _check_times(con: duckdb.DuckDBPyConnection, graph: FeatureGraph) -> None:
    """Prediction, label and availability times must be timestamps (or dates)."""
    config = graph.config
    checks: list[tuple[str, str, str, exp.Expr]] = []
    for key in ("time", "label_available_at"):
        text = getattr(config.spine, key)
        if text is not None:  # a spine without time has neither
            checks.append((f"spine.{key}", config.spine.source, text, graph.spine_exprs[key]))
    for name, declared in config.sources.items():
        for key in ("time", "available_at"):
            text = getattr(declared, key)
            if text is not None:
                tree = graph.times[name].time if key == "time" else graph.times[name].available_at
                assert tree is not None
                checks.append((f"sources.{name}.{key}", name, text, tree))
    for where, source, text, tree in checks:
        found = _type_of(con, source, tree, f"mlprod.yaml: {where}")
        if type_family(found) not in ("timestamp", "date"):
            raise FeatureError(
                f"mlprod.yaml: {where}: '{text}' gives {found}, expected a timestamp (UTC)"
            )
    for key in ("label", "filter"):
        if key in graph.spine_exprs:
            where = f"mlprod.yaml: spine.{key}"
            found = _type_of(con, config.spine.source, graph.spine_exprs[key], where)
            if key == "label":
                check_label_type(config.spine.label, found)


def _check_values(
    con: duckdb.DuckDBPyConnection, graph: FeatureGraph, training: TrainingEvents
) -> None:
    """What an outcome is worth per row must be a number (a bool or a string is a mistake)."""
    texts = training.values
    for outcome, tree in training.value_exprs.items():
        where = f"mlprod.yaml: train.value.{outcome}"
        found = _type_of(con, graph.config.spine.source, tree, where)
        if type_family(found) not in ("int", "float"):
            raise FeatureError(f"{where}: '{texts[outcome]}' gives {found}, expected a number")


def check_label_type(text: str, found: str) -> None:
    """A label is a boolean or a 0/1 integer: a string, a number or a time is refused here,
    not halfway through training (the values of an integer are checked by the build)."""
    if type_family(found) not in ("bool", "int"):
        raise FeatureError(
            f"mlprod.yaml: spine.label: '{text}' gives {found}, expected a boolean or a 0/1 "
            'integer; write a condition, e.g. "churned = \'Yes\'" or "amount > 0"'
        )
