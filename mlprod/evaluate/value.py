"""Total business value by threshold: the one implementation behind the threshold the trainer
chooses and the value the report shows.

Acting on a row means its score is at or above the threshold. Each outcome is worth a number,
the same on every row or one per row (``tp: "0.2 * distance"``), and a threshold is worth::

    Σ over acted rows (tp_i if positive else fp_i) + Σ over the rest (fn_i if positive else tn_i)

That is the worth of acting on no row plus, for each acted row, what acting adds to it
(``tp_i - fn_i`` or ``fp_i - tn_i``). One cumulative sum of those gains over the rows ranked by
score prices every threshold at once: O(n log n).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mlprod.errors import EvaluationError
from mlprod.evaluate._checks import FloatArray, IntArray, check_scores, count, subject
from mlprod.project.training import OUTCOMES, ValueConfig, value_column

# Totals closer than this, relative to the sum of every row's gain, are ties: rounding in sums of
# per-row or decimal values (tp: 0.3, fp: -0.1) must not decide between two thresholds.
TIE_TOLERANCE = 1e-9

Amount = float | FloatArray


@dataclass(frozen=True)
class OutcomeValues:
    """What each outcome is worth: one number for every row, or an array with one per row."""

    tp: Amount
    fp: Amount
    fn: Amount
    tn: Amount
    currency: str = ""

    @classmethod
    def of(
        cls, value: ValueConfig | OutcomeValues, per_row: Mapping[str, ArrayLike] | None = None
    ) -> OutcomeValues:
        """The config's numbers, and ``per_row`` arrays for the outcomes it gives as expressions
        (the training matrix's ``value_<outcome>`` columns of the same rows)."""
        if isinstance(value, OutcomeValues):
            return value
        given = per_row or {}
        amounts: dict[str, Amount] = {}
        for outcome in OUTCOMES:
            configured = getattr(value, outcome)
            if isinstance(configured, str):
                if outcome not in given:
                    raise EvaluationError(
                        f"train.value.{outcome} is the expression '{configured}', but no values "
                        f"per row were given for it; pass the training matrix's column "
                        f"'{value_column(outcome)}' of the same rows"
                    )
                amounts[outcome] = np.asarray(given[outcome], dtype=np.float64)
            else:
                amounts[outcome] = float(configured)
        return cls(**amounts, currency=value.currency)


def value_curve(
    y: ArrayLike,
    score: ArrayLike,
    value: ValueConfig | OutcomeValues,
    thresholds: ArrayLike | None = None,
    *,
    split: str | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(thresholds ascending, total value at each).

    By default every distinct score is a threshold, plus one just above the highest score
    (act on no row; finite, so it can be written as JSON), so the maximum of the curve is the
    best any threshold can do.
    """
    labels, scores = check_scores(y, score, split=split)
    gain, nothing = _gains(labels, OutcomeValues.of(value), split)
    cuts = _candidates(scores) if thresholds is None else np.sort(np.asarray(thresholds, float))
    return cuts, _totals(scores, gain, nothing, cuts)


def best_threshold(
    y: ArrayLike,
    score: ArrayLike,
    value: ValueConfig | OutcomeValues,
    *,
    split: str | None = None,
) -> tuple[float, float]:
    """The threshold with the highest total value, and that total.

    Ties (within ``TIE_TOLERANCE``) go to the higher threshold: acting on fewer rows for the
    same value.
    """
    labels, scores = check_scores(y, score, split=split)
    gain, nothing = _gains(labels, OutcomeValues.of(value), split)
    cuts = _candidates(scores)
    totals = _totals(scores, gain, nothing, cuts)
    best = totals.max() - TIE_TOLERANCE * float(np.abs(gain).sum())
    pick = int(np.flatnonzero(totals >= best)[-1])
    return float(cuts[pick]), float(totals[pick])


def value_at(
    y: ArrayLike,
    score: ArrayLike,
    threshold: float,
    value: ValueConfig | OutcomeValues,
    *,
    split: str | None = None,
) -> float:
    """The total value of acting on the rows with ``score >= threshold``."""
    _, totals = value_curve(y, score, value, [threshold], split=split)
    return float(totals[0])


def _candidates(scores: FloatArray) -> FloatArray:
    distinct = np.unique(scores)
    return np.append(distinct, np.nextafter(distinct[-1], np.inf))


def _totals(scores: FloatArray, gain: FloatArray, nothing: float, cuts: FloatArray) -> FloatArray:
    """The total at each cut: acting on no row, plus the gains of the rows scored >= cut."""
    order = np.argsort(-scores, kind="stable")
    gained = np.concatenate([[0.0], np.cumsum(gain[order])])
    # Rows scored >= cut come first in descending order; count them on the ascending scores.
    acted = len(scores) - np.searchsorted(scores[order][::-1], cuts, side="left")
    totals: FloatArray = nothing + gained[acted]
    return totals


def _gains(labels: IntArray, worth: OutcomeValues, split: str | None) -> tuple[FloatArray, float]:
    """What acting adds on each row, and the total of acting on no row."""
    n = len(labels)
    tp, fp, fn, tn = (_per_row(getattr(worth, o), o, n, split) for o in OUTCOMES)
    positive = labels == 1
    gain: FloatArray = np.where(positive, tp - fn, fp - tn)
    return gain, float(np.sum(np.where(positive, fn, tn)))


def _per_row(amount: Amount, outcome: str, rows: int, split: str | None) -> FloatArray:
    values = np.asarray(amount, dtype=np.float64)
    if values.ndim == 0:
        return np.full(rows, float(values))
    who = subject(split)
    if values.shape != (rows,):
        raise EvaluationError(
            f"{who} has {count(rows, 'row')} but {count(values.size, 'value')} of {outcome}; "
            "give one value per row"
        )
    missing = ~np.isfinite(values)
    if missing.any():
        raise EvaluationError(
            f"{who} has {count(int(missing.sum()), 'row')} whose value of {outcome} is missing "
            f"or infinite, among {count(rows, 'row')}; every row needs a value"
        )
    return values
