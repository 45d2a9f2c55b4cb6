"""The champion a retrain compares with: found by its alias, where its training ended, and its
scores of the comparison window computed with its own feature definitions."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mlprod.errors import RegistryError, TrainError

if TYPE_CHECKING:
    from mlprod.api import Project
    from mlprod.artefact import FittedPipeline
    from mlprod.features.matrix import Matrix
    from mlprod.progress import ProgressCallback
    from mlprod.registry.models import LocatedVersion

CHAMPION = "champion"


def find_champion(uri: str, name: str) -> LocatedVersion:
    """The version at alias ``champion``; without one, a retrain has nothing to beat."""
    from mlprod.registry.models import locate

    try:
        return locate(uri, name, CHAMPION)
    except RegistryError as exc:
        raise RegistryError(
            f"retrain compares a challenger with the champion, but none was found ({exc}); "
            f"promote a version first, e.g. 'mlprod models promote {name} 1'"
        ) from None


def validation_end(pipeline: FittedPipeline, version: int) -> datetime:
    """Where the version's training and validation end, from its lineage's split summary."""
    splits = pipeline.lineage.get("splits") or {}
    end = (splits.get("valid") or {}).get("end")
    if not end:
        method = splits.get("method", "unknown")
        raise TrainError(
            f"version {version} records no end of its validation window (split method "
            f"'{method}'), so no window it has not trained on can be found; retrain needs a "
            "champion trained with an out_of_time or time_series_cv split"
        )
    return datetime.fromisoformat(str(end))


def champion_scores(
    project: Project,
    pipeline: FittedPipeline,
    matrix: Matrix,
    rows: pa.Table,
    progress: ProgressCallback,
) -> np.ndarray:
    """The champion's scores of the window's rows, its features computed with its own
    definitions: from the matrix when they are today's, else from a matrix of its recorded
    definitions, matched to the window's rows by key and prediction time."""
    schema = pipeline.input_schema
    if schema is not None and all(
        matrix.hashes.get(column.name) == column.definition_hash for column in schema.features
    ):
        scores: np.ndarray = pipeline.predict_proba(rows)
        return scores
    from mlprod.api import Project as ProjectClass
    from mlprod.project.loading import parse_config
    from mlprod.train.trainer import RESOURCES

    resources = project.config.model_dump(mode="json", by_alias=True, include=set(RESOURCES))
    config = parse_config(
        {**pipeline.definitions, **resources}, file="the champion's recorded definitions"
    )
    own = ProjectClass(project.folder, config)
    built = own.build_matrix(matrix.as_of, list(pipeline.features), progress)
    keys = [*own.graph.keys, "prediction_time"]
    aligned = align(rows, built.table, keys)
    scores = pipeline.predict_proba(aligned)
    return scores


def align(rows: pa.Table, other: pa.Table, keys: list[str]) -> pa.Table:
    """The rows of ``other`` with the keys of ``rows``, in ``rows``' order."""
    position = "__mlprod_position"
    wanted = rows.select(keys).append_column(position, pa.array(np.arange(rows.num_rows)))
    joined = wanted.join(other, keys, join_type="inner").sort_by(position)
    if joined.num_rows != rows.num_rows:
        raise TrainError(
            f"the champion's own features cover {joined.num_rows:,} of the comparison "
            f"window's {rows.num_rows:,} events; its spine differs from today's, so the two "
            "models cannot be compared on the same rows"
        )
    return joined
