"""The Python API for notebooks and scripts; the CLI is a thin shell over it.

>>> import mlprod
>>> project = mlprod.Project.load("examples/flights")
>>> matrix = project.build_features()          # a pyarrow.Table
>>> print(project.feature_sql("carrier_origin_mean_delay_7d"))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from mlprod.data.baselines import save_baselines
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.graph import FeatureGraph
from mlprod.features.matrix import Matrix, build_matrix
from mlprod.features.typecheck import check_types
from mlprod.project.config import ProjectConfig
from mlprod.project.loading import load_config

FAR_FUTURE = datetime(9999, 1, 1)


@dataclass(frozen=True)
class BuildSummary:
    """What ``mlprod features build`` reports."""

    rows: int
    columns: int
    seconds: float
    path: str
    metadata_path: str
    events: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "seconds": round(self.seconds, 3),
            "path": self.path,
            "metadata_path": self.metadata_path,
            "events": self.events,
        }


class Project:
    """A project folder with its ``mlprod.yaml``."""

    def __init__(self, folder: Path, config: ProjectConfig) -> None:
        self.folder = folder
        self.config = config

    @classmethod
    def load(cls, path: str | os.PathLike[str] = ".") -> Project:
        """Load and validate the project in ``path`` (a folder, or its mlprod.yaml)."""
        folder = Path(path)
        if folder.is_file():
            folder = folder.parent
        return cls(folder, load_config(folder))

    @cached_property
    def graph(self) -> FeatureGraph:
        """The resolved features; building it checks every reference in the config."""
        return FeatureGraph.build(self.config)

    def check(self) -> dict[str, str]:
        """Validate the whole configuration without reading any data.

        Returns each feature's SQL type, found by binding its query to the contracts' types.
        """
        return check_types(self.graph)

    @property
    def store(self) -> Path:
        return self.folder / self.config.store

    @property
    def matrix_path(self) -> Path:
        return self.store / "features" / "training.parquet"

    def feature_sql(self, name: str | None = None, as_of: datetime | None = None) -> str:
        """The SQL that computes one feature (with what it depends on), or all of them."""
        return MatrixCompiler(self.graph).sql(as_of or FAR_FUTURE, [name] if name else None)

    def build_matrix(
        self,
        as_of: datetime | None = None,
        features: list[str] | None = None,
        progress: Progress | None = None,
    ) -> Matrix:
        """Build the training matrix in memory, with its lineage and statistics."""
        return build_matrix(self.folder, self.graph, as_of, features, progress)

    def build_features(
        self, as_of: datetime | None = None, features: list[str] | None = None
    ) -> pa.Table:
        """The training matrix as an Arrow table (``.to_pandas()`` for a DataFrame)."""
        return self.build_matrix(as_of, features).table

    def write_features(
        self,
        as_of: datetime | None = None,
        progress: Progress | None = None,
        features: list[str] | None = None,
    ) -> BuildSummary:
        """Build the training matrix and write it with its metadata under the store.

        The sources' profiles become the baseline that the next build is compared with.
        """
        matrix = self.build_matrix(as_of, features, progress)
        path = self.matrix_path
        meta_path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda tmp: pq.write_table(matrix.table, tmp))
        metadata = matrix.metadata(self.graph)
        metadata["path"] = str(path)
        _write_atomic(meta_path, lambda tmp: tmp.write_text(json.dumps(metadata, indent=2) + "\n"))
        save_baselines(self.store, list(matrix.sources.values()))
        return BuildSummary(
            matrix.table.num_rows,
            matrix.table.num_columns,
            matrix.seconds,
            str(path),
            str(meta_path),
            matrix.events,
        )


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
