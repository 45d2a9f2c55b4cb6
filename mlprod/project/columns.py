"""Expand ``kind: columns`` entries into one plain feature per spine-source column.

``{kind: columns, columns: all, except: [x]}`` stands for ``{name: c, kind: expr, expr: c}``
for each chosen column ``c`` of the spine source, in the contract's order, categorical for
string columns. What would be a mistake as a feature is left out of ``all`` on its own: the
keys, the columns the label and the spine's times read (the label itself would be a perfect
leak), columns known only at availability, and timestamps. A column named by another feature
is left to that feature, so one column can be given a definition of its own.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from mlprod.errors import ConfigError, did_you_mean
from mlprod.project.config import (
    ColumnsFeature,
    ExprFeature,
    FeatureEntry,
    ProjectConfig,
)


def expand_columns(config: ProjectConfig, file: str = "mlprod.yaml") -> ProjectConfig:
    """``config`` with every ``kind: columns`` entry replaced by its plain features."""
    if not any(isinstance(f, ColumnsFeature) for f in config.features):
        return config
    source = config.sources.get(config.spine.source)
    if source is None:  # reported, with "did you mean", by the feature graph
        return config
    named = {f.name for f in config.features if not isinstance(f, ColumnsFeature)}
    taken: dict[str, int] = {}
    expanded: list[FeatureEntry] = []
    for index, entry in enumerate(config.features):
        if not isinstance(entry, ColumnsFeature):
            expanded.append(entry)
            continue
        for column in _chosen(config, f"{file}: features[{index}]", entry, named):
            if column in taken:
                raise ConfigError(
                    f"{file}: features[{index}].columns: column '{column}' is already a feature "
                    f"of features[{taken[column]}]; name it once"
                )
            taken[column] = index
            string = source.columns[column].type == "string"
            categorical = entry.categorical if string else None
            expanded.append(
                ExprFeature(kind="expr", name=column, expr=_quoted(column), categorical=categorical)
            )
    return config.model_copy(update={"features": expanded})


def _chosen(config: ProjectConfig, where: str, entry: ColumnsFeature, named: set[str]) -> list[str]:
    spine = config.spine
    contracts = config.sources[spine.source].columns
    for key, names in (("columns", entry.columns), ("except", entry.except_)):
        for name in names if isinstance(names, list) else []:
            if name not in contracts:
                raise ConfigError(
                    f"{where}.{key}: the spine source '{spine.source}' has no column "
                    f"'{name}'{did_you_mean(name, contracts)}"
                )
    label = _columns_read(spine.label)
    if isinstance(entry.columns, list):
        for name in entry.columns:
            if name in named:
                raise ConfigError(
                    f"{where}.columns: '{name}' is also defined by a feature of its own; leave "
                    "it out of the list"
                )
            if name in label or name in spine.keys:
                what = "spine.label reads it" if name in label else "it is a spine key"
                raise ConfigError(
                    f"{where}.columns: '{name}' cannot be a feature: {what}; leave it out of "
                    "the list"
                )
        return list(entry.columns)
    left_out = set(entry.except_) | set(spine.keys) | named | label
    for text in (spine.time, spine.label_available_at):
        left_out |= _columns_read(text)
    return [
        name
        for name, contract in contracts.items()
        if name not in left_out
        and contract.known == "at_prediction"
        and contract.type not in ("timestamp", "date")
    ]


def _columns_read(text: str | None) -> set[str]:
    """The columns an expression reads (none when it does not parse: the graph says why)."""
    if text is None:
        return set()
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except ParseError:
        return set()
    return {column.name for column in tree.find_all(exp.Column)}


def _quoted(column: str) -> str:
    """The column as an expression: quoted, so a name like ``order`` stays a column."""
    return exp.to_identifier(column, quoted=True).sql("duckdb")
