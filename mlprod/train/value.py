"""The decision threshold worth the most on the validation rows, from ``train.value``.

The arithmetic is :mod:`mlprod.evaluate.value`'s, shared with the report.
"""

from __future__ import annotations

import numpy.typing as npt

from mlprod.evaluate.value import OutcomeValues, best_threshold, value_at
from mlprod.project.training import ValueConfig


def choose_threshold(
    y: npt.ArrayLike, score: npt.ArrayLike, value: ValueConfig | OutcomeValues
) -> tuple[float, float]:
    """The validation threshold with the highest total value, and that total.

    Every distinct score is a candidate (acting on the rows scored at or above it; the lowest
    acts on all rows), and so is the next float above the highest score, which acts on none.
    Ties go to the higher threshold: acting on fewer rows for the same value.
    """
    return best_threshold(y, score, value, split="validation")


def expected_value(
    y: npt.ArrayLike, score: npt.ArrayLike, threshold: float, value: ValueConfig | OutcomeValues
) -> float:
    """The total value of acting on the rows with ``score >= threshold``."""
    return value_at(y, score, threshold, value)
