"""The ``engine:`` section of mlprod.yaml: where features are computed, and with how much.

``kind`` picks the engine: DuckDB (embedded, the default), Spark (``master`` and ``conf`` as
for ``spark-submit``) or PostgreSQL (push-down: the features are computed inside the database
that holds the sources). DuckDB takes every core and up to 80% of the RAM by default, and
spills what does not fit into ``.tmp`` under the current folder. A shared machine, a
container with a memory cap or a larger-than-RAM build needs the three set: threads, a memory
limit, and a spill folder on a disk with room.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from mlprod.errors import did_you_mean
from mlprod.project.base import Strict

_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
EXAMPLES = "like '4GB', '512MB' or '1.5GiB'"


def parse_size(text: object) -> int:
    """A size in bytes from ``4GB`` (decimal units) or ``4GiB`` (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        raise ValueError(f"invalid size {text}: a number needs a unit; write it {EXAMPLES}")
    if not isinstance(text, str):
        raise ValueError(f"invalid size {text!r}: expected a string {EXAMPLES}")
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"invalid size '{text}': expected a number and a unit, {EXAMPLES}")
    number, unit = match.groups()
    if unit.lower() not in _UNITS:
        hint = did_you_mean(unit.lower(), _UNITS)
        raise ValueError(f"invalid size '{text}': unknown unit '{unit}'{hint}; write it {EXAMPLES}")
    size = int(float(number) * _UNITS[unit.lower()])
    if size <= 0:
        raise ValueError(f"invalid size '{text}': it must be more than nothing")
    return size


def format_bytes(size: int) -> str:
    """The shortest exact spelling: ``4GiB``, ``512MB``, ``1234B``."""
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "KB"):
        scale = _UNITS[unit.lower()]
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_bytes, return_type=str),
    WithJsonSchema({"type": "string", "description": f"A size, {EXAMPLES}.", "examples": ["4GB"]}),
]


EngineKind = Literal["duckdb", "spark", "postgres"]
# Spark: a frame of this many rows on average costs less re-read per row than the blocked
# streams' two extra copies of every row (planes' 1-day mean, 1.6 rows: 17-21 s framed
# against 35 s blocked at 3.4M flights; see bench/RESULTS.md)
FRAME_ROWS = 32


class EngineConfig(Strict):
    """The engine that builds features, and DuckDB's limits (defaults: DuckDB's own)."""

    kind: EngineKind = Field(
        "duckdb",
        description="duckdb (embedded), spark (a Spark cluster or local Spark) or postgres "
        "(computed inside the PostgreSQL database that holds every source).",
    )
    master: str | None = Field(
        None,
        description='Spark only: the master URL, e.g. "local[2]", "spark://host:7077", "yarn" '
        '(default "local[*]").',
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="Spark only: Spark settings, e.g. {spark.executor.memory: 4g}.",
    )

    frame_rows: int | None = Field(
        None,
        ge=0,
        description="Spark only: windowed sums, means and deviations of a key whose windows "
        f"hold at most this many rows on average slide a frame over its rows (default "
        f"{FRAME_ROWS}); denser ones keep running totals in blocks, linear whatever the "
        "density. 0: always running totals.",
    )
    threads: int | None = Field(None, ge=1, description="Threads to use (default: every core).")
    memory_limit: Size | None = Field(
        None,
        description="Memory DuckDB may hold; past it, it spills to disk (default: 80% of RAM).",
    )
    spill_directory: str | None = Field(
        None,
        description="Folder for spilled data, relative to the project (default: <store>/spill).",
    )

    @model_validator(mode="after")
    def _spark_settings_for_spark(self) -> EngineConfig:
        if self.kind != "spark" and (
            self.master is not None or self.conf or self.frame_rows is not None
        ):
            raise ValueError(
                f"master, conf and frame_rows are Spark settings; engine kind is {self.kind} "
                "(write kind: spark to use them)"
            )
        return self
