"""A variant made ready to score (its policy entry and its loaded service), and the answer of
a routed prediction, which says which variant answered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from mlprod.serve.contract import Prediction
from mlprod.serve.predlog import PredictionRecord
from mlprod.serve.routing.policy import Variant
from mlprod.serve.service import OnlineService


@dataclass(frozen=True)
class Arm:
    """One variant of the live policy with the service that scores it (``model`` is the
    version its reference resolved to, e.g. ``flights/4`` for ``flights@champion``)."""

    variant: Variant
    model: str
    service: OnlineService

    @property
    def name(self) -> str:
        return self.variant.name


@dataclass(frozen=True)
class RoutedPrediction(Prediction):
    """A prediction made within an experiment; its answer names the experiment and variant."""

    experiment: str = ""
    variant: str = ""

    @classmethod
    def of(cls, prediction: Prediction, experiment: str, variant: str) -> RoutedPrediction:
        values = {f.name: getattr(prediction, f.name) for f in fields(Prediction)}
        return cls(**values, experiment=experiment, variant=variant)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "experiment": self.experiment, "variant": self.variant}


def tag(
    records: Sequence[PredictionRecord],
    experiment: str,
    variant: str,
    assignment: str | Sequence[str],
    *,
    served: bool = True,
) -> list[PredictionRecord]:
    """The records with the experiment fields set (one assignment reason, or one per record)."""
    reasons = [assignment] * len(records) if isinstance(assignment, str) else list(assignment)
    return [
        replace(r, experiment=experiment, variant=variant, assignment=a, served=served)
        for r, a in zip(records, reasons, strict=True)
    ]
