"""A registered model made ready to score: its artefact, and the features it was trained on.

Everything that shapes a score comes from the artefact: the fitted pipeline and the feature
definitions recorded at training (``pipeline.definitions``), so a later edit of
``mlprod.yaml`` cannot change what a deployed version computes. Only where the data lives
(the project folder, for relative source paths) comes from the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlprod.artefact import load_artefact
from mlprod.errors import ConfigError
from mlprod.features.graph import FeatureGraph
from mlprod.features.requests import RequestField, request_fields
from mlprod.project.config import ProjectConfig
from mlprod.project.loading import parse_config
from mlprod.registry.models import LocatedVersion, locate

_REFERENCE = re.compile(
    r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?:(?P<sep>[@/])(?P<spec>[A-Za-z0-9_]+))?$"
)
DEFAULT_ALIAS = "champion"
SCORE_ROWS = 16_384
"""Rows scored at a time (see ``Deployment.score``)."""


@dataclass(frozen=True)
class ModelReference:
    """``NAME@ALIAS`` or ``NAME/VERSION`` (``NAME`` alone means ``NAME@champion``)."""

    name: str
    spec: str

    def __str__(self) -> str:
        return f"{self.name}/{self.spec}" if self.spec.isdigit() else f"{self.name}@{self.spec}"


def parse_model_reference(text: str) -> ModelReference:
    match = _REFERENCE.match(text.strip())
    if match is None:
        raise ConfigError(
            f"invalid model '{text}': name a model as NAME@ALIAS (flights@champion) or "
            "NAME/VERSION (flights/3)"
        )
    spec = match["spec"] or DEFAULT_ALIAS
    if match["sep"] == "/" and not spec.isdigit():
        raise ConfigError(f"invalid model '{text}': after '/' comes a version number")
    if match["sep"] == "@" and spec.isdigit():
        raise ConfigError(
            f"invalid model '{text}': after '@' comes an alias; for a version write "
            f"{match['name']}/{spec}"
        )
    return ModelReference(match["name"], spec)


@dataclass
class Deployment:
    """One registered version, loaded and verified, with its feature graph."""

    folder: Path  # the project folder: where relative source paths point
    located: LocatedVersion
    pipeline: Any  # the artefact's fitted pipeline

    @classmethod
    def load(cls, folder: Path, tracking_uri: str, reference: ModelReference) -> Deployment:
        located = locate(tracking_uri, reference.name, reference.spec)
        return cls(folder, located, load_artefact(located.path))

    @property
    def name(self) -> str:
        return self.located.name

    @property
    def version(self) -> str:
        return str(self.located.version)

    @property
    def run_id(self) -> str:
        return self.located.run_id

    @cached_property
    def config(self) -> ProjectConfig:
        """The project as it was when the model was trained (sources, spine, features)."""
        return parse_config(
            dict(self.pipeline.definitions), file=f"model {self.name}/{self.version}"
        )

    @cached_property
    def graph(self) -> FeatureGraph:
        return FeatureGraph.build(self.config)

    @property
    def features(self) -> list[str]:
        return list(self.pipeline.features)

    @cached_property
    def request_fields(self) -> list[RequestField]:
        return request_fields(self.graph, self.features)

    @property
    def keys(self) -> list[str]:
        return list(self.config.spine.keys)

    @property
    def threshold(self) -> float:
        return float(self.pipeline.threshold)

    def score(self, features: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated scores and decisions for a table of feature rows.

        A large table is scored :data:`SCORE_ROWS` rows at a time: a row's score does not
        depend on the rows scored with it (tests/test_small_batch_scoring.py), and a linear
        model's dense encoding of that many rows (tens of MB) is memory the allocator reuses,
        where one of a whole batch chunk is mapped afresh, page by page, every time.
        """
        if features.num_rows <= SCORE_ROWS:
            scores = np.asarray(self.pipeline.predict_proba(features), dtype=np.float64)
        else:
            scores = np.concatenate(
                [
                    np.asarray(self.pipeline.predict_proba(features.slice(offset, SCORE_ROWS)))
                    for offset in range(0, features.num_rows, SCORE_ROWS)
                ]
            ).astype(np.float64, copy=False)
        return scores, scores >= self.threshold
