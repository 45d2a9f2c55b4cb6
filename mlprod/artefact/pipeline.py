"""The fitted pipeline: feature definitions, encoders, model, calibration and threshold as one.

This is what the artefact holds and what batch scoring, the REST server and monitoring load.
It knows its scorer and calibrator only by the protocols below, so this layer never imports
training; its reference statistics describe the training data and the validation scores, so
monitoring can compare live traffic with what the model learned from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from mlprod.artefact.schema import InputSchema, feature_table
from mlprod.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


class Scorer(Protocol):
    """Scores Arrow feature rows: a single encoded model or an ensemble of them."""

    def predict_table(self, table: pa.Table) -> np.ndarray: ...


class Calibration(Protocol):
    """Maps raw scores to calibrated probabilities."""

    def transform(self, score: np.ndarray) -> np.ndarray: ...


@dataclass
class FittedPipeline:
    """Everything needed to turn feature rows into a score and a decision.

    Scoring takes an Arrow table or a pandas DataFrame holding (at least) the feature
    columns: other columns (keys, times, the label) are ignored, a missing feature column or
    one of an incompatible type is an :class:`~mlprod.errors.InputError` naming it, and a
    compatible type is cast (an int64 column for a double feature; an all-null column).
    """

    project: str
    definitions: dict[str, Any]
    features: list[str]
    scorer: Scorer
    model_name: str
    calibrator: Calibration | None
    threshold: float
    reference: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    # None for artefacts saved before input schemas were recorded (format 0).
    input_schema: InputSchema | None = None

    def raw_scores(self, table: pa.Table | pd.DataFrame) -> np.ndarray:
        """The scorer's scores, before calibration."""
        return self.scorer.predict_table(self.feature_rows(table))

    def predict_proba(self, table: pa.Table | pd.DataFrame) -> np.ndarray:
        """Calibrated P(label = 1) for feature rows (an Arrow table or a pandas DataFrame)."""
        scores = self.raw_scores(table)
        return self.calibrator.transform(scores) if self.calibrator is not None else scores

    def decide(self, table: pa.Table | pd.DataFrame) -> np.ndarray:
        """Act (True) where the calibrated score reaches the value-maximising threshold."""
        return self.predict_proba(table) >= self.threshold

    def feature_rows(self, table: pa.Table | pd.DataFrame) -> pa.Table:
        """The feature columns of ``table`` checked against the input schema, in order."""
        if not isinstance(table, pa.Table):
            try:
                table = pa.Table.from_pandas(table, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InputError(f"the rows cannot be read as a table: {exc}") from None
        return feature_table(table, self.features, self.input_schema)
