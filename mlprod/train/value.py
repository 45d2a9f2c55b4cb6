"""The decision threshold worth the most on the validation rows, from ``train.value``.

The arithmetic is :mod:`mlprod.evaluate.value`'s, shared with the report. Here the config meets
the training matrix: an outcome given as an expression (``tp: "0.2 * distance"``) is worth the
matrix's ``value_tp`` on each row, so the rows of a split carry their own values with them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import TrainError
from mlprod.evaluate.value import OutcomeValues, best_threshold, value_at
from mlprod.project.loading import CONFIG_FILE
from mlprod.project.training import ValueConfig, value_column


def check_values(value: ValueConfig, table: pa.Table) -> None:
    """Every row of the matrix needs a value: a null is refused, not read as worth nothing."""
    for outcome, text in value.expressions().items():
        column = table.column(value_column(outcome))
        where = f"{CONFIG_FILE}: train.value.{outcome}: '{text}'"
        rows = f"of {table.num_rows:,} rows of the training matrix; every row needs a value"
        if column.null_count:
            raise TrainError(
                f"{where} is null on {column.null_count:,} {rows} (write coalesce({text}, 0) "
                "if a missing value is worth nothing)"
            )
        infinite = len(column) - (pc.sum(pc.is_finite(column)).as_py() or 0)
        if infinite:
            raise TrainError(f"{where} is NaN or infinite on {infinite:,} {rows}")


def outcome_values(value: ValueConfig, table: pa.Table) -> OutcomeValues:
    """What each outcome is worth on each row of ``table`` (rows of the training matrix)."""
    per_row = {
        outcome: np.asarray(
            table.column(value_column(outcome)).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        for outcome in value.expressions()
    }
    return OutcomeValues.of(value, per_row)


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


# How the threshold was chosen, as the report and the summary say it.
VALUE_RULE = "the highest total value on validation (train.value)"
F1_RULE = "maximum F1 on validation (no train.value section)"


def f1_threshold(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """The validation threshold with the highest F1: without a value matrix, a fixed 0.5
    flags no row when positives are rare and scores are calibrated to their rate.

    Ties go to the higher threshold: acting on fewer rows for the same F1.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])
