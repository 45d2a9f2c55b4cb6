"""The fitted pipeline: feature definitions, encoders, model, calibration and threshold as one.

This is what the artefact holds and what batch scoring, the REST server and monitoring load.
It knows its scorer and calibrator only by the protocols below, so this layer never imports
training; its reference statistics describe the training data and the validation scores, so
monitoring can compare live traffic with what the model learned from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from mlprod.artefact.schema import InputSchema, arrow_type, feature_table
from mlprod.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


class Scorer(Protocol):
    """Scores Arrow feature rows: a single encoded model or an ensemble of them (which may
    also score a few rows given as mappings: ``predict_rows(records, schema)``, giving the
    scores of ``pa.Table.from_pylist(records, schema=schema)``, or None to make the table)."""

    def predict_table(self, table: pa.Table) -> np.ndarray: ...


_ROW_SCHEMA = "_row_schema"  # where a pipeline keeps its row schema (not pickled)


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

    def __getstate__(self) -> dict[str, Any]:
        """The fitted state only: the row schema is derived again after loading."""
        state = self.__dict__.copy()
        state.pop(_ROW_SCHEMA, None)
        return state

    def row_schema(self) -> pa.Schema | None:
        """The feature columns' Arrow types, in order, as the model scores them (None for an
        artefact without an input schema)."""
        if _ROW_SCHEMA not in self.__dict__:
            known = self.input_schema
            dtypes = {} if known is None else {c.name: c.dtype for c in known.features}
            self.__dict__[_ROW_SCHEMA] = (
                pa.schema([(name, arrow_type(dtypes[name])) for name in self.features])
                if known is not None and all(name in dtypes for name in self.features)
                else None
            )
        found: pa.Schema | None = self.__dict__[_ROW_SCHEMA]
        return found

    def predict_proba_rows(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``predict_proba`` of ``pa.Table.from_pylist(records, schema=self.row_schema())``:
        the same scores, bit for bit, but a few rows (a REST request's feature values) are
        scored without making the table when the scorer can."""
        schema = self.row_schema()
        if schema is None:
            raise InputError("the model records no input schema: score a table of its features")
        # A scorer may also score a few rows given as mappings (``predict_rows``; None: no).
        predict_rows = getattr(self.scorer, "predict_rows", None)
        scores = None if predict_rows is None else predict_rows(records, schema)
        if scores is None:
            scores = self.raw_scores(pa.Table.from_pylist(list(records), schema=schema))
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
