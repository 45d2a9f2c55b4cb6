"""Turn the training matrix into model inputs, with everything learned from training rows only.

Two encodings, chosen by the model:

* ``native`` (gradient boosting): numbers as they are, categoricals as integer codes of the
  levels seen in training (rare and unknown levels get their own codes), nulls as NaN;
* ``dense`` (linear models, SVMs, neural networks): numbers imputed with the training median,
  with a missing-value indicator, and scaled; categoricals one-hot encoded.

The fitted encoder travels inside the model artefact, so scoring applies the very same levels,
medians and scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.features.categorical import CategoryEncoder
from mlprod.project.config import CategoricalSpec

Encoding = Literal["native", "dense"]


@dataclass
class TabularEncoder:
    """Fitted on training rows; ``transform`` gives a float64 matrix."""

    features: list[str]
    categorical: dict[str, CategoricalSpec]
    encoding: Encoding
    levels_: dict[str, CategoryEncoder] = field(default_factory=dict)
    medians_: dict[str, float] = field(default_factory=dict)
    means_: dict[str, float] = field(default_factory=dict)
    scales_: dict[str, float] = field(default_factory=dict)
    columns_: list[str] = field(default_factory=list)

    def fit(self, table: pa.Table) -> TabularEncoder:
        for name in self.features:
            column = table.column(name)
            if name in self.categorical or pa.types.is_string(column.type):
                spec = self.categorical.get(name, CategoricalSpec())
                self.levels_[name] = CategoryEncoder.fit(column, spec)
                continue
            if self.encoding == "native":  # trees take numbers as they are
                continue
            values = _numbers(column)
            finite = values[~np.isnan(values)]
            self.medians_[name] = float(np.median(finite)) if finite.size else 0.0
            filled = np.where(np.isnan(values), self.medians_[name], values)
            self.means_[name] = float(filled.mean()) if filled.size else 0.0
            std = float(filled.std()) if filled.size else 0.0
            self.scales_[name] = std if std > 0 else 1.0
        self.columns_ = self._output_columns()
        return self

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of categorical codes in a native matrix (for LightGBM)."""
        return [i for i, name in enumerate(self.features) if name in self.levels_]

    def transform(self, table: pa.Table) -> np.ndarray:
        parts: list[np.ndarray] = []
        for name in self.features:
            column = table.column(name)
            if name in self.levels_:
                parts.extend(self._categorical(name, column))
            elif self.encoding == "native":
                parts.append(_numbers(column))
            else:
                values = _numbers(column)
                missing = np.isnan(values)
                filled = np.where(missing, self.medians_[name], values)
                parts.append((filled - self.means_[name]) / self.scales_[name])
                parts.append(missing.astype(np.float64))
        return np.column_stack(parts) if parts else np.empty((table.num_rows, 0))

    def _categorical(self, name: str, column: pa.ChunkedArray) -> list[np.ndarray]:
        encoder = self.levels_[name]
        mapped = encoder.transform(column)
        vocabulary = self._vocabulary(name)
        codes = pc.index_in(mapped, value_set=pa.array(vocabulary, pa.string()))
        as_float = codes.to_numpy(zero_copy_only=False).astype(np.float64)
        if self.encoding == "native":
            return [as_float]
        return [(as_float == i).astype(np.float64) for i in range(len(vocabulary))]

    def _vocabulary(self, name: str) -> list[str]:
        encoder = self.levels_[name]
        return [*encoder.levels_, encoder.spec.rare, encoder.spec.unknown]

    def _output_columns(self) -> list[str]:
        columns: list[str] = []
        for name in self.features:
            if name in self.levels_ and self.encoding == "dense":
                columns += [f"{name}={level}" for level in self._vocabulary(name)]
            elif self.encoding == "dense":
                columns += [name, f"{name}__missing"]
            else:
                columns.append(name)
        return columns


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric, boolean or time column as float64 with NaN for nulls."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
    as_float = pc.cast(column, pa.float64())
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
