"""Champion against challenger on the same labelled rows: a paired bootstrap of AUC and value.

Both models score the same rows, so their errors are correlated; resampling the rows once and
scoring both models on each resample keeps that pairing, and the interval of the difference is
much narrower than two independent intervals would suggest. Each resample draws ``n`` row
numbers with replacement; AUC is counted on score levels (:mod:`mlprod.evaluate._ranks`, one
``bincount`` per chunk of resamples) and value is the sum of each drawn row's worth at the
model's own deployed threshold, so 1,000 resamples of 20,000 rows take a fraction of a second.

Intervals are percentile intervals of the resampled values. ``P(challenger better)`` is the
share of resamples in which the challenger's number is higher (ties count half); a policy asks
for ``P(gain > minimum)`` with :meth:`Difference.probability_above`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mlprod.errors import EvaluationError
from mlprod.evaluate._checks import FloatArray, IntArray, check_scores, need_both_classes
from mlprod.evaluate._ranks import Levels, auc_from_counts, exact_auc, levels
from mlprod.evaluate.value import OutcomeValues, value_at
from mlprod.project.training import OUTCOMES, ValueConfig

N_BOOT = 1000
LEVEL = 0.95
_CHUNK = 25  # resamples drawn at once: ~_CHUNK * rows * 20 bytes of memory


@dataclass(frozen=True)
class Difference:
    """One metric of both models, the challenger's gain over the champion, and its spread."""

    metric: str
    champion: float
    challenger: float
    champion_ci: tuple[float, float]
    challenger_ci: tuple[float, float]
    difference: float  # challenger - champion, on the rows themselves
    ci: tuple[float, float]  # percentile interval of the resampled differences
    p_better: float  # share of resamples where the challenger is higher (ties: half)
    draws: FloatArray = field(repr=False, compare=False)  # the resampled differences

    def probability_above(self, minimum: float) -> float:
        """The share of resamples in which the gain exceeds ``minimum`` (ties count half)."""
        return float(np.mean(self.draws > minimum) + 0.5 * np.mean(self.draws == minimum))

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "champion": self.champion,
            "challenger": self.challenger,
            "champion_ci": list(self.champion_ci),
            "challenger_ci": list(self.challenger_ci),
            "difference": self.difference,
            "ci": list(self.ci),
            "p_better": self.p_better,
        }


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of two models on ``rows`` labelled rows."""

    rows: int
    positives: int
    auc: Difference
    value: Difference | None  # None without a value matrix
    champion_threshold: float
    challenger_threshold: float
    n_boot: int
    level: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "positives": self.positives,
            "auc": self.auc.to_dict(),
            "value": self.value.to_dict() if self.value is not None else None,
            "champion_threshold": self.champion_threshold,
            "challenger_threshold": self.challenger_threshold,
            "n_boot": self.n_boot,
            "level": self.level,
            "seed": self.seed,
        }


def compare(
    y: ArrayLike,
    champion: ArrayLike,
    challenger: ArrayLike,
    *,
    champion_threshold: float,
    challenger_threshold: float,
    value: ValueConfig | OutcomeValues | None = None,
    per_row: dict[str, ArrayLike] | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Comparison:
    """Compare two models' scores of the same rows (labels ``y``).

    Value is taken at each model's own threshold (acting where its score reaches it);
    ``per_row`` gives the values of outcomes the config writes as expressions (the matrix's
    ``value_<outcome>`` columns of the same rows).
    """
    if n_boot < 2:
        raise EvaluationError(f"the comparison needs at least 2 resamples, got {n_boot}")
    if not 0 < level < 1:
        raise EvaluationError(f"the interval level must be between 0 and 1, got {level}")
    split = "comparison"
    labels, first = check_scores(y, champion, split=split)
    _, second = check_scores(labels, challenger, split=split)
    need_both_classes(labels, "a comparison of AUC", split)
    worth = OutcomeValues.of(value, per_row) if value is not None else None
    thresholds = (champion_threshold, challenger_threshold)
    ranked = (levels(first), levels(second))
    rows_worth = (
        tuple(
            _worth(labels, scores, levelled, threshold, worth)
            for scores, levelled, threshold in zip((first, second), ranked, thresholds, strict=True)
        )
        if worth is not None
        else None
    )
    aucs, values = _resample(labels, ranked, rows_worth, n_boot, seed)
    exact = [exact_auc(labels, levelled) for levelled in ranked]
    auc = _difference("auc", exact, aucs, level)
    difference = None
    if worth is not None and values is not None:
        totals = [
            value_at(labels, scores, threshold, worth, split=split)
            for scores, threshold in zip((first, second), thresholds, strict=True)
        ]
        difference = _difference("value", totals, values, level)
    return Comparison(
        rows=len(labels),
        positives=int(labels.sum()),
        auc=auc,
        value=difference,
        champion_threshold=float(champion_threshold),
        challenger_threshold=float(challenger_threshold),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


def _row_worth(
    labels: IntArray, scores: FloatArray, threshold: float, worth: OutcomeValues
) -> FloatArray:
    """What each row is worth when the model acts where its score reaches ``threshold``."""
    tp, fp, fn, tn = (np.broadcast_to(getattr(worth, o), labels.shape) for o in OUTCOMES)
    acted, positive = scores >= threshold, labels == 1
    rows: FloatArray = np.where(positive, np.where(acted, tp, fn), np.where(acted, fp, tn))
    return rows.astype(np.float64)


def _resample(
    labels: IntArray,
    ranked: tuple[Levels, Levels],
    worth: tuple[_Worth, ...] | None,
    n_boot: int,
    seed: int,
) -> tuple[FloatArray, FloatArray | None]:
    """Both models' AUC (and value) on ``n_boot`` row resamples, one column per model; every
    resample's rows are drawn once and scored by both.

    Each row has a code per model, ``2 * level + label``; one unweighted ``bincount`` of the
    drawn rows' codes (offset per resample) counts the positives and negatives of every score
    level in every resample of a chunk at once. Constant outcome values are priced from those
    counts too; values per row are summed over the drawn rows.
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    codes = [(2 * levelled.of_row + labels).astype(np.int64) for levelled in ranked]
    aucs = np.empty((n_boot, 2))
    values = np.empty((n_boot, 2)) if worth is not None else None
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        rows = rng.integers(0, n, size=(size, n), dtype=np.int32)
        for column, (code, levelled) in enumerate(zip(codes, ranked, strict=True)):
            bins = 2 * len(levelled.unique)
            keys = code[rows] + (np.arange(size) * bins)[:, None]
            counted = (
                np.bincount(keys.ravel(), minlength=size * bins)
                .reshape(size, -1, 2)
                .astype(np.float64)
            )
            aucs[start : start + size, column] = auc_from_counts(counted[..., 1], counted[..., 0])
            if worth is not None and values is not None:
                priced = worth[column]
                values[start : start + size, column] = (
                    np.einsum("rlc,lc->r", counted, priced)
                    if priced.ndim == 2
                    else priced[rows].sum(axis=1)
                )
    return aucs, values


# What rows are worth to one model: per score level and label (levels x 2) when the outcome
# values are constants, else per row.
_Worth = FloatArray


def _worth(
    labels: IntArray, scores: FloatArray, levelled: Levels, threshold: float, worth: OutcomeValues
) -> _Worth:
    """What the model's acting at ``threshold`` makes each level (or row) worth."""
    amounts = [np.asarray(getattr(worth, o), dtype=np.float64) for o in OUTCOMES]
    if all(a.ndim == 0 for a in amounts):
        tp, fp, fn, tn = (float(a) for a in amounts)
        acted = levelled.unique >= threshold
        # column 0: a negative row at this level; column 1: a positive one
        return np.stack([np.where(acted, fp, tn), np.where(acted, tp, fn)], axis=1)
    return _row_worth(labels, scores, threshold, worth)


def _difference(metric: str, exact: list[float], draws: FloatArray, level: float) -> Difference:
    """Point values on the rows themselves, intervals from the resamples that had both
    classes (a resample of one class has no AUC)."""
    kept = draws[~np.isnan(draws).any(axis=1)]
    if len(kept) < len(draws) / 2:
        raise EvaluationError(
            f"the comparison window has too few rows of one class to resample {metric}: "
            f"{len(draws) - len(kept):,} of {len(draws):,} resamples held a single class"
        )
    gains = kept[:, 1] - kept[:, 0]
    return Difference(
        metric=metric,
        champion=exact[0],
        challenger=exact[1],
        champion_ci=_interval(kept[:, 0], level),
        challenger_ci=_interval(kept[:, 1], level),
        difference=exact[1] - exact[0],
        ci=_interval(gains, level),
        p_better=float(np.mean(gains > 0) + 0.5 * np.mean(gains == 0)),
        draws=gains,
    )


def _interval(values: FloatArray, level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
