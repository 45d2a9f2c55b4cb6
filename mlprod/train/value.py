"""The decision threshold that is worth the most, from what each outcome is worth.

Acting on a row means its score is at or above the threshold. A true positive is worth
``tp``, a false positive ``fp``, a positive left alone ``fn`` and a negative left alone ``tn``;
the total over the (validation) rows is what a threshold is worth.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mlprod.project.training import ValueConfig

# Totals closer than this (relative to the value matrix's size) are ties, so that rounding in
# decimal values such as tp: 0.3, fp: -0.1 cannot decide between two thresholds.
TIE_TOLERANCE = 1e-9


def choose_threshold(
    y: npt.ArrayLike, score: npt.ArrayLike, value: ValueConfig
) -> tuple[float, float]:
    """The threshold with the highest total value on these rows, and that total.

    Every distinct score is a candidate (acting on the rows scored at or above it; the lowest
    acts on all rows), and so is the next float above the highest score, which acts on none
    (finite, so it can be written as JSON). Ties go to the higher threshold: acting on fewer
    rows for the same value. Sorting once makes it O(n log n).
    """
    labels, scores = _inputs(y, score)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    positives = np.cumsum(labels[order], dtype=np.int64)
    negatives = np.arange(1, len(ranked) + 1, dtype=np.int64) - positives
    # The last row of each run of equal scores: acting on that score acts on the whole run.
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    nothing = np.nextafter(ranked[0], math.inf)
    thresholds = np.concatenate([[nothing], ranked[last]])
    acted_positive = np.concatenate([[0], positives[last]])
    acted_negative = np.concatenate([[0], negatives[last]])
    totals = _total(acted_positive, acted_negative, int(positives[-1]), len(ranked), value)
    best = totals.max() - TIE_TOLERANCE * _scale(value)
    pick = int(np.flatnonzero(totals >= best)[0])  # thresholds run high to low
    return float(thresholds[pick]), float(totals[pick])


def expected_value(
    y: npt.ArrayLike, score: npt.ArrayLike, threshold: float, value: ValueConfig
) -> float:
    """The total value of acting on the rows with ``score >= threshold``."""
    labels, scores = _inputs(y, score)
    act = scores >= threshold
    acted_positive = np.array([np.count_nonzero(act & labels)], dtype=np.int64)
    acted_negative = np.array([np.count_nonzero(act & ~labels)], dtype=np.int64)
    totals = _total(acted_positive, acted_negative, int(labels.sum()), len(labels), value)
    return float(totals[0])


def _total(
    acted_positive: npt.NDArray[np.int64],
    acted_negative: npt.NDArray[np.int64],
    positives: int,
    rows: int,
    value: ValueConfig,
) -> npt.NDArray[np.float64]:
    """Total value for each (acted positives, acted negatives) pair; one formula for both uses."""
    missed = positives - acted_positive
    passed = (rows - positives) - acted_negative
    total: npt.NDArray[np.float64] = (
        value.tp * acted_positive
        + value.fp * acted_negative
        + value.fn * missed
        + value.tn * passed
    )
    return total


def _scale(value: ValueConfig) -> float:
    return abs(value.tp - value.fn) + abs(value.fp - value.tn)


def _inputs(
    y: npt.ArrayLike, score: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    labels = np.asarray(y)
    scores = np.asarray(score, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"y and score must be 1-D and of the same length; got {labels.shape} and {scores.shape}"
        )
    if len(labels) == 0:
        raise ValueError("no rows to choose a threshold on")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    if labels.dtype != np.bool_:
        if not np.isin(labels, [0, 1]).all():
            raise ValueError("y must be boolean or 0/1")
        labels = labels == 1
    return labels, scores
