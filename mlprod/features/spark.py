"""Build the feature matrix on Spark: the same plan, in Spark SQL, written by Spark.

The sources are checked by DuckDB as for every build (contracts, profiles, keys). Spark reads
a Parquet source itself; any other source (a DuckDB file, CSV, a PostgreSQL table read for
DuckDB) is handed over through Arrow. Each stage of the plan is computed once and kept
(``localCheckpoint``: its row ids must not be drawn twice), and the matrix is written as
Parquet by Spark itself, not collected to the driver.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlprod.errors import FeatureError
from mlprod.features.dialects import render
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import ParquetLocation, ProjectConfig
from mlprod.project.engine import EngineConfig

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

    from mlprod.features.compiler import StagedQuery
    from mlprod.features.matrix import StagedRun, StepTime

# Times are UTC and without a time zone everywhere in mlprod; Arrow moves the sources.
DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.legacy.parquet.nanosAsLong": "false",
}


def session(engine: EngineConfig) -> SparkSession:
    """The Spark session for ``engine`` (one per process, as Spark has it)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise FeatureError(
            "engine kind spark needs PySpark: pip install 'mlprod[spark]' (and Java 17+)"
        ) from None
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(engine.master or "local[*]").appName("mlprod")
    for key, value in {**DEFAULTS, **engine.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_on_spark(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    config: ProjectConfig,
    sources: list[str],
    query: StagedQuery,
    output: Path,
    progress: ProgressCallback = NO_PROGRESS,
) -> StagedRun:
    """Run the staged plan on Spark; ``output`` receives the matrix as Parquet."""
    from mlprod.features.matrix import StagedRun, StepTime

    spark = session(config.engine)
    started = time.perf_counter()
    views = [_register(spark, con, folder, config, name) for name in sources]
    handed = StepTime("sources to Spark", time.perf_counter() - started, (), True)
    try:
        times = run_stages(spark, query, output, progress)
    finally:
        for name in views:
            spark.catalog.dropTempView(name)
    return StagedRun(read_matrix(output), [handed, *times])


def run_stages(
    spark: SparkSession,
    query: StagedQuery,
    output: Path,
    progress: ProgressCallback = NO_PROGRESS,
) -> list[StepTime]:
    """Run the stages over the sources' temporary views; write the matrix to ``output``."""
    from mlprod.features.matrix import StepTime

    task = progress.start("computing features on Spark", total=len(query.stages) + 1)
    kept: dict[str, Any] = {}
    times: list[StepTime] = []
    try:
        for stage in query.stages:
            started = time.perf_counter()
            frame = _sql(spark, render(stage.select, "spark")).localCheckpoint(eager=True)
            frame.createOrReplaceTempView(stage.name)
            kept[stage.name] = frame
            times.append(
                StepTime(stage.name, time.perf_counter() - started, stage.features, stage.prepares)
            )
            for name in stage.drop_after:
                _forget(spark, kept, name)
            task.advance()
        started = time.perf_counter()
        if output.exists():
            shutil.rmtree(output)
        _sql(spark, render(query.final, "spark")).write.parquet(str(output))
        times.append(StepTime("result", time.perf_counter() - started, query.final_features, False))
    finally:
        for name in list(kept):
            _forget(spark, kept, name)
    task.finish("features computed on Spark")
    return times


def read_matrix(output: Path) -> pa.Table:
    """The matrix Spark wrote: its part files in order (Spark's sort spans them in name
    order), times as mlprod keeps them (UTC, no time zone)."""
    parts = sorted(output.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(part) for part in parts]) if parts else None
    if table is None:
        table = pq.read_table(output)
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = table.column(index).cast(pa.timestamp(field.type.unit))
            table = table.set_column(index, field.name, naive)
    return table


def _register(
    spark: SparkSession,
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    config: ProjectConfig,
    name: str,
) -> str:
    location = config.sources[name].location
    if isinstance(location, ParquetLocation):
        frame = spark.read.parquet(str(folder / location.path))
    else:
        frame = spark.createDataFrame(con.table(name).to_arrow_table())
    frame.createOrReplaceTempView(name)
    return name


def _sql(spark: SparkSession, text: str) -> Any:
    from pyspark.errors import PySparkException

    try:
        return spark.sql(text)
    except PySparkException as exc:
        raise FeatureError(f"computing the features on Spark failed: {_first_line(exc)}") from None


def _forget(spark: SparkSession, kept: dict[str, Any], name: str) -> None:
    frame = kept.pop(name, None)
    if frame is not None:
        spark.catalog.dropTempView(name)
        frame.unpersist()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
