"""Data quality of a window: missing values, values the model never saw, and traffic volume.

Each is a share of the window's rows (or a relative change), None when the window gives nothing
to divide by, so an empty window reads as "not computable" rather than as perfect data.
"""

from __future__ import annotations

import statistics

from mlprod.monitor.reference import CategoricalReference
from mlprod.monitor.summary import CategoricalSummary, NumericSummary


def null_rate(summary: NumericSummary | CategoricalSummary) -> float | None:
    """Share of the window's rows where the feature is missing."""
    rows = summary.count + summary.nulls
    return summary.nulls / rows if rows else None


def unseen_share(reference: CategoricalReference, summary: CategoricalSummary) -> float | None:
    """Share of the window's non-null values in levels the reference does not know.

    The reference keeps its most common 100 levels, so a rare training level counts as unseen
    too: for the model, which groups rare levels, it is as good as new.
    """
    if summary.count <= 0:
        return None
    known = reference.shares
    unseen = sum(n for level, n in summary.levels.items() if level not in known)
    return unseen / summary.count


def out_of_range_share(summary: NumericSummary) -> float | None:
    """Share of the window's non-null values outside the reference's [minimum, maximum]."""
    if summary.count <= 0:
        return None
    return (summary.below + summary.above) / summary.count


def volume_change(rows: int, previous: list[int]) -> float | None:
    """Rows relative to the median of the previous windows, minus 1 (-0.5: half the usual).

    The median rather than the mean, so one outage or burst does not move the baseline. None
    without previous windows, or when their median is 0 (no baseline to compare with).
    """
    if not previous:
        return None
    baseline = statistics.median(previous)
    return rows / baseline - 1 if baseline > 0 else None
