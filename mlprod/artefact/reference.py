"""What the model learned from, for monitoring to compare live traffic with.

Per feature, the null rate and deciles (numbers) or level shares (categories) of the training
rows; the deciles and mean of the validation scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
