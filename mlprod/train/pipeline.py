"""The fitted pipeline: feature definitions, encoders, model, calibration and threshold as one.

This is what the artefact holds and what batch scoring, the REST server and monitoring load.
Its reference statistics describe the training data and the validation scores, so monitoring
can compare live traffic with what the model learned from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Scorer(Protocol):
    """Scores Arrow feature rows: a single encoded model or an ensemble of them."""

    def predict_table(self, table: pa.Table) -> np.ndarray: ...


class Calibration(Protocol):
    def transform(self, score: np.ndarray) -> np.ndarray: ...


@dataclass
class FittedPipeline:
    """Everything needed to turn feature rows into a score and a decision."""

    project: str
    definitions: dict[str, Any]
    features: list[str]
    scorer: Scorer
    model_name: str
    calibrator: Calibration | None
    threshold: float
    reference: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def raw_scores(self, table: pa.Table) -> np.ndarray:
        return self.scorer.predict_table(table)

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        """Calibrated P(label = 1) for feature rows (an Arrow table or a pandas DataFrame)."""
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        scores = self.raw_scores(table)
        return self.calibrator.transform(scores) if self.calibrator is not None else scores

    def decide(self, table: pa.Table) -> np.ndarray:
        """Act (True) where the calibrated score reaches the value-maximising threshold."""
        return self.predict_proba(table) >= self.threshold


def reference_statistics(
    table: pa.Table, features: list[str], scores: np.ndarray
) -> dict[str, Any]:
    """Per feature: null rate and deciles (numbers) or level shares (categories); the scores."""
    stats: dict[str, Any] = {"rows": table.num_rows, "features": {}}
    for name in features:
        column = table.column(name)
        entry: dict[str, Any] = {"null_rate": column.null_count / max(table.num_rows, 1)}
        if pa.types.is_string(column.type) or pa.types.is_boolean(column.type):
            counts = pc.value_counts(pc.drop_null(pc.cast(column, pa.string())))
            total = max(sum(counts.field("counts").to_pylist()), 1)
            levels, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
            shares = {str(v): c / total for v, c in zip(levels, numbers, strict=True)}
            entry["shares"] = dict(sorted(shares.items(), key=lambda item: -item[1])[:100])
        else:
            values = np.asarray(pc.cast(pc.drop_null(column), pa.float64()).to_numpy(), dtype=float)
            if values.size:
                entry["deciles"] = np.quantile(values, np.linspace(0, 1, 11)).tolist()
                entry["mean"] = float(values.mean())
                entry["std"] = float(values.std())
        stats["features"][name] = entry
    stats["score"] = {
        "deciles": np.quantile(scores, np.linspace(0, 1, 11)).tolist() if scores.size else [],
        "mean": float(scores.mean()) if scores.size else None,
    }
    return stats
