"""Features that alone predict the label almost perfectly: most often a leak, never silent.

A feature computed from the label itself, or from something known only after the
prediction time, gives a validation AUC near 1 on its own. Each feature is scored alone on
the validation rows: a number by its value (a missing value ranks lowest), a category by the
positive rate of its category on the training rows. One at or above ``LEAK_AUC`` gets a
warning that names it, shown first in the CLI output, the report and ``--json``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.evaluate.metrics import separation

LEAK_AUC = 0.99


def single_feature_auc(train: pa.Table, valid: pa.Table, feature: str) -> float | None:
    """How well ``feature`` alone ranks the validation rows (0.5 to 1, either direction);
    None when validation holds one class only."""
    y = np.asarray(valid.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    if y.min() == y.max():
        return None
    column = valid.column(feature)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        x = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    elif pa.types.is_boolean(column.type):
        x = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    else:
        x = _category_rates(train, feature, column)
    missing = ~np.isfinite(x)
    if missing.all():
        return None
    x = np.where(missing, x[~missing].min() - 1.0, x)
    auc = separation(y, x)
    return max(auc, 1.0 - auc)


def _category_rates(train: pa.Table, feature: str, valid: pa.ChunkedArray) -> np.ndarray:
    """Each validation row's category, as the positive rate of that category in training
    (a category training has not seen, or a missing one: the overall rate)."""
    y = pd.Series(train.column("label").to_numpy(zero_copy_only=False), dtype=np.float64)
    categories = train.column(feature).to_pandas().astype("string")
    rates = y.groupby(categories.to_numpy(), dropna=True).mean()
    overall = float(y.mean()) if len(y) else 0.0
    found = valid.to_pandas().astype("string").map(rates)
    values: np.ndarray = found.fillna(overall).to_numpy(dtype=np.float64)
    return values


def leak_warnings(train: pa.Table, valid: pa.Table, features: list[str]) -> list[str]:
    """A warning for each feature whose single-feature validation AUC is ``LEAK_AUC`` or more."""
    found = []
    for feature in features:
        auc = single_feature_auc(train, valid, feature)
        if auc is not None and auc >= LEAK_AUC:
            found.append(
                f"possible leak: feature '{feature}' alone predicts the label with AUC "
                f"{auc:.4f} on validation (>= {LEAK_AUC}); check that it is known before the "
                "prediction time and is not the label itself"
            )
    return found
