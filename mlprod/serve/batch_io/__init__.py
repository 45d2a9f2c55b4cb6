"""Where batch scoring reads its requests from and writes its scores to.

An input (:mod:`.inputs`) is a source of mlprod.yaml, a ``.parquet`` or ``.csv`` file, a DuckDB
table or a PostgreSQL table; an output (:mod:`.outputs`) is a ``.parquet`` file, a Parquet
dataset folder, a DuckDB table or a PostgreSQL table, written all or nothing, one copy per run.
"""

from mlprod.errors import ScoreIOError
from mlprod.serve.batch_io.inputs import (
    DuckDBInput,
    FileInput,
    InputSpec,
    PostgresInput,
    SourceInput,
    parse_input,
    read_input,
)
from mlprod.serve.batch_io.outputs import (
    RUN_ID,
    DuckDBOutput,
    OutputSpec,
    OutputSummary,
    OutputWriter,
    ParquetDatasetOutput,
    ParquetFileOutput,
    PostgresOutput,
    open_output,
    parse_output,
)

__all__ = [
    "RUN_ID",
    "DuckDBInput",
    "DuckDBOutput",
    "FileInput",
    "InputSpec",
    "OutputSpec",
    "OutputSummary",
    "OutputWriter",
    "ParquetDatasetOutput",
    "ParquetFileOutput",
    "PostgresInput",
    "PostgresOutput",
    "ScoreIOError",
    "SourceInput",
    "open_output",
    "parse_input",
    "parse_output",
    "read_input",
]
