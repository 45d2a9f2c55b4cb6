"""Performance before the outcomes arrive: confidence-based performance estimation (CBPE).

A calibrated score p says a row is positive with probability p. Taking that at its word, a fine
score bin holding n rows is expected to hold p*n positives and (1-p)*n negatives, and the AUC
those expected counts give is the estimate. How far the realised AUC may fall from it is
simulated: labels are drawn per bin as Binomial(n, p) ``draws`` times, and the bounds are the
percentiles of the draws' AUCs. The estimate holds while the scores stay calibrated on live
traffic (a concept shift breaks it, which is why the realised AUC is compared when labels land).

``estimated_auc_normal`` gives nearly the same bounds from the delta method in O(bins), without
drawing, for when the simulation's cost (draws x occupied bins) is too much per window.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlprod.evaluate._ranks import auc_from_counts
from mlprod.monitor.performance import z_value
from mlprod.monitor.summary import SparseCounts, occupied

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_CHUNK_CELLS = 2_000_000  # draws x bins simulated at once, to bound memory (~16 MB a block)
# A bin whose label count has a variance n*p*(1-p) of at least this is drawn from the normal
# approximation to the binomial (rounded, within [0, n]): 10x cheaper, and indistinguishable
# in the AUC, which sums thousands of such counts.
_NORMAL_FROM = 4.0


def estimated_auc(
    score_counts: SparseCounts | ArrayLike, draws: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Expected AUC of a window from its fine score bin counts, and ``level`` bounds.

    A bin's score is its centre. Empty bins are dropped first (they add neither wins nor
    pairs), so the cost follows the occupied bins. NaN throughout for an empty window.
    """
    filled, rows, score = _occupied(score_counts)
    if filled.size == 0:
        return math.nan, math.nan, math.nan
    estimate = float(auc_from_counts(score * rows, (1 - score) * rows))
    rng = np.random.default_rng(seed)
    aucs = np.empty(draws)
    step = max(1, _CHUNK_CELLS // filled.size)
    for start in range(0, draws, step):
        block = min(step, draws - start)
        aucs[start : start + block] = _aucs(_draw_positives(rng, rows, score, block), rows)
    aucs = aucs[~np.isnan(aucs)]
    if aucs.size == 0:
        return estimate, math.nan, math.nan
    low, high = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(low), float(high)


def estimated_auc_normal(
    score_counts: SparseCounts | ArrayLike, level: float = 0.95
) -> tuple[float, float, float]:
    """The same estimate with normal bounds from the delta method: the AUC linearised in each
    bin's positive count, whose variance is n*p*(1-p). O(bins), no drawing; within [0, 1]."""
    filled, rows, score = _occupied(score_counts)
    if filled.size == 0:
        return math.nan, math.nan, math.nan
    positives, negatives = score * rows, (1 - score) * rows
    n_pos, n_neg = positives.sum(), negatives.sum()
    pairs = n_pos * n_neg
    if not pairs > 0:
        return math.nan, math.nan, math.nan
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    above = n_pos - np.cumsum(positives)  # positives in higher bins
    estimate = float(positives @ (below + 0.5 * negatives) / pairs)
    # Turning one row of bin i from negative to positive changes the wins by
    # (below + negatives / 2) - positives / 2 - above, and the pairs by n_neg - n_pos.
    wins_change = below + 0.5 * (negatives - positives) - above
    gradient = (wins_change - estimate * (n_neg - n_pos)) / pairs
    half = z_value(level) * math.sqrt(float(gradient**2 @ (rows * score * (1 - score))))
    return estimate, max(0.0, estimate - half), min(1.0, estimate + half)


def _occupied(score_counts: SparseCounts | ArrayLike) -> tuple[IntArray, FloatArray, FloatArray]:
    """The occupied fine bins, their row counts and their scores (bin centres)."""
    filled, counts, size = occupied(score_counts)
    return filled, counts, (filled + 0.5) / size


def _aucs(positives: FloatArray, rows: FloatArray) -> FloatArray:
    """The AUC of each row of drawn positive counts (the rest of each bin being negatives).

    ``auc_from_counts`` rearranged to touch the (draws x bins) block four times instead of
    eight: with c the cumulative positives, a bin's positives beat the negatives below and
    tie half of their own: (cumsum(rows) - rows / 2) - c + positives / 2.
    """
    cumulative = np.cumsum(positives, axis=1)
    wins = (
        positives @ (np.cumsum(rows) - 0.5 * rows)
        - np.einsum("ij,ij->i", positives, cumulative)
        + 0.5 * np.einsum("ij,ij->i", positives, positives)
    )
    n_pos = cumulative[:, -1]
    pairs = n_pos * (rows.sum() - n_pos)
    out = np.full(n_pos.shape, np.nan)
    np.divide(wins, pairs, out=out, where=pairs > 0)
    return out


def _draw_positives(
    rng: np.random.Generator, rows: FloatArray, score: FloatArray, block: int
) -> FloatArray:
    """``block`` draws of each bin's positive count, Binomial(rows, score): a single row by a
    uniform, a well-filled bin by the normal approximation, the rest by numpy's binomial."""
    single = rows == 1
    variance = rows * score * (1 - score)
    wide = variance >= _NORMAL_FROM
    if single.all():
        drawn: FloatArray = (rng.random((block, rows.size)) < score).astype(np.float64)
        return drawn
    out = np.empty((block, rows.size))
    narrow = ~single & ~wide
    if single.any():
        out[:, single] = rng.random((block, int(single.sum()))) < score[single]
    if narrow.any():
        sizes = rows[narrow].astype(np.int64)
        out[:, narrow] = rng.binomial(sizes, score[narrow], size=(block, sizes.size))
    if wide.all():
        return _normal_counts(rng, rows, score, variance, block)
    if wide.any():
        out[:, wide] = _normal_counts(rng, rows[wide], score[wide], variance[wide], block)
    return out


def _normal_counts(
    rng: np.random.Generator, rows: FloatArray, score: FloatArray, variance: FloatArray, block: int
) -> FloatArray:
    """Binomial(rows, score) counts by the normal approximation, rounded, within [0, rows]."""
    drawn = rng.standard_normal((block, rows.size))
    drawn *= np.sqrt(variance)
    drawn += rows * score
    np.rint(drawn, out=drawn)
    np.clip(drawn, 0.0, rows, out=drawn)
    return drawn
