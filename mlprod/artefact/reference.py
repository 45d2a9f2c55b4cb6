"""What the model learned from, for monitoring to compare live traffic with.

Per feature, the null rate and deciles (numbers) or level shares (categories) of the training
rows; the deciles and mean of the validation scores. Numbers and scores also keep a histogram
on their own percentile edges (``edges``: the distinct 1st..99th percentiles; ``shares``: the
share of values in each bin ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, inf)``), which is what
monitoring compares live windows with (PSI, KS, Wasserstein).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PERCENTILES = np.arange(1, 100) / 100


def histogram(values: np.ndarray) -> dict[str, Any]:
    """Percentile edges of ``values`` and the share of them in each bin between the edges."""
    edges = np.unique(np.quantile(values, PERCENTILES))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    deciles = np.quantile(values, np.arange(1, 10) / 10)  # the same floats as 10/100, 20/100...
    cuts = np.unique(np.searchsorted(edges, deciles, side="left") + 1)
    return {
        "edges": edges.tolist(),
        "psi_cuts": cuts.tolist(),  # the bins where a decile bin starts (for PSI)
        "shares": (counts / max(values.size, 1)).tolist(),
        "min": float(values.min()),
        "max": float(values.max()),
        "count": int(values.size),
    }


def reference_statistics(
    table: pa.Table, features: list[str], scores: np.ndarray, threshold: float | None = None
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
                entry.update(histogram(values))
        stats["features"][name] = entry
    stats["score"] = {
        "deciles": np.quantile(scores, np.linspace(0, 1, 11)).tolist() if scores.size else [],
        "mean": float(scores.mean()) if scores.size else None,
    }
    if scores.size:
        stats["score"].update(histogram(np.asarray(scores, dtype=float)))
        if threshold is not None:
            stats["score"]["decision_rate"] = float(np.mean(scores >= threshold))
    return stats
