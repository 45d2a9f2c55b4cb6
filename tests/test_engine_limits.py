"""`engine:` limits what a build may take of the machine, and never what it computes.

The flights build runs under a memory limit far below what it uses unlimited, on one thread,
spilling into the project's store, and must give the same matrix; under a limit it cannot
live with, it stops with a message that says which limit and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from expect import raises

from mlprod import Project
from mlprod.data.sources import connect
from mlprod.errors import ConfigError, FeatureError
from mlprod.project.engine import EngineConfig, format_bytes, parse_size
from mlprod.project.loading import parse_config
from mlprod.train.trainer import config_hash

AS_OF = datetime(2013, 12, 31, 12, 0)
MakeProject = Callable[[dict[str, Any]], Project]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GB", 4_000_000_000),
        ("4 gib", 4 * 1024**3),
        ("512MB", 512_000_000),
        ("1.5GiB", 3 * 512 * 1024**2),
        ("300000B", 300_000),
    ],
)
def test_sizes_are_read_in_decimal_or_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_bytes(size)) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "4 gigs",
            "mlprod.yaml: engine.memory_limit: invalid size '4 gigs': unknown unit 'gigs'; "
            "write it like '4GB', '512MB' or '1.5GiB'",
        ),
        (
            "4GBB",
            "mlprod.yaml: engine.memory_limit: invalid size '4GBB': unknown unit 'GBB' "
            "(did you mean 'gb'?); write it like '4GB', '512MB' or '1.5GiB'",
        ),
        (
            4,
            "mlprod.yaml: engine.memory_limit: invalid size 4: a number needs a unit; "
            "write it like '4GB', '512MB' or '1.5GiB'",
        ),
        (
            "0MB",
            "mlprod.yaml: engine.memory_limit: invalid size '0MB': it must be more than nothing",
        ),
    ],
)
def test_a_bad_memory_limit_is_explained(
    make_project: MakeProject, flights_config: dict[str, Any], value: object, message: str
) -> None:
    flights_config["engine"] = {"memory_limit": value}
    with raises(ConfigError, message):
        make_project(flights_config)


def test_a_misspelt_engine_key_gets_a_suggestion(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["engine"] = {"memory_limt": "4GB"}
    with raises(
        ConfigError,
        "mlprod.yaml: engine.memory_limt: unknown key 'memory_limt' (did you mean 'memory_limit'?)",
    ):
        make_project(flights_config)


def test_connections_take_the_limits(tmp_path: Path) -> None:
    engine = EngineConfig.model_validate({"threads": 1, "memory_limit": "300MiB"})
    con = connect(engine, tmp_path / "spill")
    try:
        settings = con.sql(
            "SELECT current_setting('threads'), current_setting('memory_limit'), "
            "current_setting('temp_directory')"
        ).fetchall()
    finally:
        con.close()
    assert settings == [(1, "300.0 MiB", str(tmp_path / "spill"))]


def test_a_tight_memory_limit_spills_and_gives_the_same_matrix(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    free = make_project(flights_config).build_matrix(as_of=AS_OF)
    flights_config["engine"] = {"threads": 1, "memory_limit": "250MB"}
    limited = make_project(flights_config).build_matrix(as_of=AS_OF)
    assert limited.table.num_rows == free.table.num_rows == 336_072
    assert limited.table.equals(free.table)


def test_a_limit_the_build_cannot_live_with_is_explained(
    make_project: MakeProject, flights_config: dict[str, Any]
) -> None:
    flights_config["engine"] = {"memory_limit": "48MB"}
    project = make_project(flights_config)
    with pytest.raises(FeatureError) as info:
        project.build_matrix(as_of=AS_OF)
    message = str(info.value)
    assert message.startswith(
        "computing the features ran out of memory: the build needs more than "
        "engine.memory_limit (48MB) allows, even spilling to disk (Out of Memory Error: "
    )
    assert message.endswith(
        "Raise engine.memory_limit in mlprod.yaml, or build fewer features at once "
        "(features build --feature NAME)."
    )


def test_limits_are_not_part_of_a_models_lineage(flights_config: dict[str, Any]) -> None:
    before = config_hash(parse_config(flights_config))
    flights_config["engine"] = {"threads": 1, "memory_limit": "2GB", "spill_directory": "/x"}
    assert config_hash(parse_config(flights_config)) == before
    flights_config["features"].pop()
    assert config_hash(parse_config(flights_config)) != before
