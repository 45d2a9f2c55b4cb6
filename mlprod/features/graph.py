"""Resolve a project's feature definitions into a checked, ordered dependency graph.

Here every name in the config is checked against what it may refer to (sources, their
contract columns, spine columns, other features) and cycles are found, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from mlprod.errors import ConfigError, FeatureError, UnknownColumnError, did_you_mean
from mlprod.features.expressions import check_columns, column_names, parse_expression
from mlprod.project.config import (
    AggregateFeature,
    AsofFeature,
    ExprFeature,
    Feature,
    LookupFeature,
    ProjectConfig,
    SourceConfig,
)
from mlprod.project.loading import CONFIG_FILE

RESERVED = frozenset({"prediction_time", "label", "label_available_at"})
ROW_NUMBER = "row_number"  # the key of a spine without keys: the event's row in its source


INTERNAL_PREFIX = "__"  # the compiled query's own tables and columns: __spine, __row, __t, ..


def _check_not_internal(name: str, where: str) -> None:
    if name.startswith(INTERNAL_PREFIX):
        raise ConfigError(
            f"{CONFIG_FILE}: {where}: names starting with '{INTERNAL_PREFIX}' are kept for "
            f"mlprod's own tables and columns; rename '{name}'"
        )


@dataclass(frozen=True)
class SourceTimes:
    """A source's parsed event time and availability time (None for static tables)."""

    time: exp.Expr | None
    available_at: exp.Expr | None


@dataclass(frozen=True)
class Node:
    """One feature with its parsed expressions and the features it depends on."""

    feature: Feature
    index: int
    deps: tuple[str, ...]
    level: int
    expr: exp.Expr | None = None
    value: exp.Expr | None = None
    filter: exp.Expr | None = None

    @property
    def name(self) -> str:
        return self.feature.name


@dataclass
class FeatureGraph:
    """The project's features in dependency order, with levels for staged evaluation."""

    config: ProjectConfig
    nodes: dict[str, Node] = field(default_factory=dict)
    times: dict[str, SourceTimes] = field(default_factory=dict)
    spine_exprs: dict[str, exp.Expr] = field(default_factory=dict)

    @classmethod
    def build(cls, config: ProjectConfig) -> FeatureGraph:
        graph = cls(config)
        graph._resolve()
        return graph

    @property
    def spine_columns(self) -> list[str]:
        return list(self.config.sources[self.config.spine.source].columns)

    @property
    def late_columns(self) -> set[str]:
        """Spine-source columns known only at their row's availability: never a prediction input."""
        columns = self.config.sources[self.config.spine.source].columns
        return {name for name, contract in columns.items() if contract.known == "at_availability"}

    def spine_columns_read(self, names: list[str] | None = None) -> list[str]:
        """The spine-source columns that features (and what they depend on) read from the
        event's own row: the inputs a prediction request must carry, besides the keys."""
        wanted = self.closure(names) if names else list(self.nodes)
        columns: list[str] = []
        for name in wanted:
            node = self.nodes[name]
            if node.expr is not None:
                columns += [c for c in column_names(node.expr) if self._is_spine_ref(c, name)]
            elif not isinstance(node.feature, ExprFeature):
                columns += [s for s, _ in node.feature.key_pairs() if self._is_spine_ref(s, name)]
        return list(dict.fromkeys(columns))

    def _is_spine_ref(self, column: str, own: str) -> bool:
        """Whether ``column`` in feature ``own`` means a spine column (not another feature)."""
        return column not in self.config_feature_names or column == own

    @property
    def config_feature_names(self) -> set[str]:
        return {feature.name for feature in self.config.feature_definitions}

    @property
    def keys(self) -> list[str]:
        """The training matrix's key columns: the spine keys, or ``row_number`` without them."""
        return list(self.config.spine.keys) or [ROW_NUMBER]

    @property
    def numbered(self) -> bool:
        """Whether events are identified by their row number (the spine declares no keys)."""
        return not self.config.spine.keys

    @property
    def timed(self) -> bool:
        """Whether events have a prediction time (``spine.time``); see :mod:`.events`."""
        return "time" in self.spine_exprs

    def notes(self) -> list[str]:
        """What a training report should say about how events are identified and timed."""
        source = self.config.spine.source
        notes = []
        if self.numbered:
            notes.append(
                f"The spine declares no keys: each event is identified by its row number in "
                f"source '{source}' ({ROW_NUMBER}, from 1, in the source's row order)."
            )
        if not self.timed:
            notes.append(
                "The spine declares no time: the rows do not depend on when they happened, so "
                "the split draws rows at random and every feature reads the event's own row or "
                "tables without time."
            )
        return notes

    def closure(self, names: list[str]) -> list[str]:
        """``names`` and everything they depend on, in dependency order."""
        for name in names:
            if name not in self.nodes:
                raise FeatureError(f"unknown feature '{name}'{did_you_mean(name, self.nodes)}")
        wanted: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.nodes[name].deps)
        return [name for name in self.nodes if name in wanted]

    # --- resolution ---------------------------------------------------------------------

    def _resolve(self) -> None:
        config = self.config
        for name, source in config.sources.items():
            _check_not_internal(name, f"sources.{name}")
            self.times[name] = self._source_times(name, source)
        self._resolve_spine()
        reserved = RESERVED
        seen: dict[str, int] = {}
        features = config.feature_definitions
        for index, feature in enumerate(features):
            if feature.name in seen:
                raise ConfigError(
                    f"{CONFIG_FILE}: features[{index}].name: feature '{feature.name}' is "
                    f"already defined at features[{seen[feature.name]}]"
                )
            _check_not_internal(feature.name, f"features[{index}].name")
            if feature.name in reserved or feature.name in self.keys:
                raise ConfigError(
                    f"{CONFIG_FILE}: features[{index}].name: '{feature.name}' is a column of the "
                    "training matrix already (a spine key or one of "
                    f"{', '.join(sorted(reserved))}); choose another name"
                )
            seen[feature.name] = index
        deps = {f.name: self._dependencies(i, f, seen) for i, f in enumerate(features)}
        order = _topological_order(deps)
        levels: dict[str, int] = {}
        for name in order:
            levels[name] = 1 + max((levels[d] for d in deps[name]), default=0)
        for name in order:
            index = seen[name]
            self.nodes[name] = self._node(index, features[index], deps[name], levels[name])

    def _source_times(self, name: str, source: SourceConfig) -> SourceTimes:
        columns = list(source.columns)
        parsed: dict[str, exp.Expr | None] = {}
        for key in ("time", "available_at"):
            text = getattr(source, key)
            if text is None:
                parsed[key] = None
                continue
            where = f"{CONFIG_FILE}: sources.{name}.{key}"
            tree = parse_expression(text, where)
            check_columns(tree, columns, where, f"source '{name}'", source=name)
            parsed[key] = tree
        return SourceTimes(parsed["time"], parsed["available_at"] or parsed["time"])

    def _resolve_spine(self) -> None:
        spine = self.config.spine
        if spine.source not in self.config.sources:
            raise ConfigError(
                f"{CONFIG_FILE}: spine.source: unknown source '{spine.source}'"
                f"{did_you_mean(spine.source, self.config.sources)}"
            )
        columns = self.spine_columns
        for key in spine.keys:
            if key not in columns:
                raise ConfigError(
                    f"{CONFIG_FILE}: spine.keys: source '{spine.source}' has no column "
                    f"'{key}'{did_you_mean(key, columns)}"
                )
        if self.numbered and ROW_NUMBER in columns:
            raise ConfigError(
                f"{CONFIG_FILE}: spine.keys: not declared, so events are numbered as "
                f"'{ROW_NUMBER}', but source '{spine.source}' has a column of that name; "
                "declare spine.keys"
            )
        for key in ("time", "label", "label_available_at", "filter"):
            text = getattr(spine, key)
            if text is not None:
                where = f"{CONFIG_FILE}: spine.{key}"
                tree = parse_expression(text, where)
                check_columns(tree, columns, where, f"source '{spine.source}'", source=spine.source)
                self.spine_exprs[key] = tree
        for key in spine.keys:
            self._check_known(key, "spine.keys")
        if "filter" in self.spine_exprs:
            for column in column_names(self.spine_exprs["filter"]):
                self._check_known(column, "spine.filter")

    def _check_known(self, column: str, where: str) -> None:
        """Refuse a prediction input that is only known once the event has happened (a leak)."""
        if column in self.late_columns:
            source = self.config.spine.source
            raise FeatureError(
                f"{CONFIG_FILE}: {where} reads '{column}' of the spine source '{source}', which "
                f"is known only at the row's availability (sources.{source}.columns.{column}."
                "known: at_availability); a prediction cannot see it. Aggregate it over earlier "
                "rows instead"
            )

    def _dependencies(self, index: int, feature: Feature, names: dict[str, int]) -> tuple[str, ...]:
        where = f"feature '{feature.name}'"
        visible = set(self.spine_columns) | set(names)
        if isinstance(feature, ExprFeature):
            tree = parse_expression(feature.expr, where)
            refs = column_names(tree)
            # A feature's own name in its expression means the spine column of that name.
            deps = [r for r in refs if r in names and r != feature.name]
            if feature.name not in self.spine_columns:
                visible.discard(feature.name)
            scope, spine = "the spine (and the other features)", self.config.spine.source
            check_columns(tree, visible, where, scope, source=spine)
            for ref in refs:
                if ref not in names or ref == feature.name:
                    self._check_known(ref, where)
            return tuple(deps)
        if feature.source not in self.config.sources:
            raise ConfigError(
                f"{CONFIG_FILE}: features[{index}].source: unknown source '{feature.source}'"
                f"{did_you_mean(feature.source, self.config.sources)}"
            )
        deps = []
        for spine_name, _ in feature.key_pairs():
            if spine_name not in visible:
                raise FeatureError(
                    f"{where}: key '{spine_name}' is neither a column of the spine source "
                    f"'{self.config.spine.source}' nor a feature{did_you_mean(spine_name, visible)}"
                )
            if spine_name in names and spine_name != feature.name:
                deps.append(spine_name)
            else:
                self._check_known(spine_name, f"{where} key")
        return tuple(deps)

    def _node(self, index: int, feature: Feature, deps: tuple[str, ...], level: int) -> Node:
        where = f"feature '{feature.name}'"
        if isinstance(feature, ExprFeature):
            return Node(feature, index, deps, level, expr=parse_expression(feature.expr, where))
        source = self.config.sources[feature.source]
        scope = f"source '{feature.source}'"
        columns = list(source.columns)
        for _, column in feature.key_pairs():
            if column not in columns:
                raise UnknownColumnError(
                    f"{where}: {scope} has no column '{column}'{did_you_mean(column, columns)}",
                    where,
                    feature.source,
                    column,
                )
        times = self.times[feature.source]
        if isinstance(feature, AsofFeature | AggregateFeature) and times.available_at is None:
            raise FeatureError(
                f"{where}: {scope} has no time, so it cannot be used by an {feature.kind} feature; "
                f"declare sources.{feature.source}.time (or use a lookup)"
            )
        value = filter_ = None
        value_text = feature.value
        if isinstance(feature, AggregateFeature):
            if value_text is None and feature.function != "count":
                raise FeatureError(
                    f"{where}: function '{feature.function}' needs a 'value' to aggregate"
                )
            if feature.window.total_seconds() <= 0:
                raise FeatureError(f"{where}: window must be longer than zero")
            if feature.filter is not None:
                filter_ = parse_expression(feature.filter, f"{where} filter")
                check_columns(filter_, columns, where, scope, source=feature.source)
        if value_text is not None:
            value = parse_expression(value_text, where)
            check_columns(value, columns, where, scope, source=feature.source)
        if isinstance(feature, LookupFeature | AsofFeature | AggregateFeature):
            return Node(feature, index, deps, level, value=value, filter=filter_)
        raise AssertionError(feature)  # pragma: no cover


def _topological_order(deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Order features so each comes after its dependencies; report a cycle by its path."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise FeatureError(
                f"feature cycle: {' -> '.join(cycle)}; a feature cannot depend on itself"
            )
        state[name] = 1
        for dep in deps[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in deps:
        visit(name, [])
    return order
