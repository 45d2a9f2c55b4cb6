"""Rows of many windows into one ``WindowSummary`` each, with a few numpy passes per column.

Every count is a ``bincount`` over ``window * bins + bin`` and every minimum or maximum an
unbuffered ``fmin.at``/``fmax.at``, in the rows' own order (no sort), so a million rows of 25
features take well under a second and the cost does not grow with the number of windows. Sums
run in row order, so the same rows in the same order always give the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.monitor.reference import CategoricalReference, NumericReference, ReferenceProfile
from mlprod.monitor.summary import (
    LATENCY_BUCKETS_MS,
    SCORE_BINS,
    CategoricalSummary,
    FeatureSummary,
    LabelSummary,
    NumericSummary,
    WindowSummary,
    score_bins,
)

_EPS = 1e-15  # log-loss clips probabilities into [_EPS, 1 - _EPS]


@dataclass(frozen=True)
class Groups:
    """Which window each row belongs to."""

    ids: np.ndarray  # window index per row (int64)
    count: int

    def bincount(self, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(values, weights=weights, minlength=self.count)


def summarise(rows: pa.Table, window: np.ndarray, profile: ReferenceProfile) -> list[WindowSummary]:
    """One summary per window index ``0..max(window)`` (``window``: int per row; the rows need
    ``score``, ``decision``, ``served``, ``latency_ms``, ``label`` and a ``features`` struct)."""
    ids = np.asarray(window, dtype=np.int64)
    groups = Groups(ids=ids, count=int(ids.max()) + 1 if ids.size else 0)
    score = _floats(rows["score"])
    decision = _flags(rows["decision"])
    served = _flags(rows["served"])
    score_per = _sparse(groups, score_bins(score), SCORE_BINS)
    latency = _latency(groups, _floats(rows["latency_ms"]))
    labels = _labels(groups, rows, score, decision)
    features = _features(groups, rows, profile)
    return _totals(groups, served, decision, score, score_per, latency, features, labels)


def _totals(
    groups: Groups,
    served: np.ndarray,
    decision: np.ndarray,
    score: np.ndarray,
    score_per: list[dict[int, int]],
    latency: list[list[int]],
    features: dict[str, list[FeatureSummary]],
    labels: list[LabelSummary],
) -> list[WindowSummary]:
    rows = groups.bincount(groups.ids)
    served_per = groups.bincount(groups.ids, served.astype(float))
    decisions = groups.bincount(groups.ids, decision.astype(float))
    score_sum = groups.bincount(groups.ids, score)
    return [
        WindowSummary(
            rows=int(rows[g]),
            served=int(served_per[g]),
            decisions=int(decisions[g]),
            score_sum=float(score_sum[g]),
            score_bins=score_per[g],
            latency=latency[g],
            features={name: per[g] for name, per in features.items()},
            labels=labels[g],
        )
        for g in range(groups.count)
    ]


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return np.asarray(
        pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
    )


def _flags(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def _sparse(groups: Groups, bins: np.ndarray, size: int) -> list[dict[int, int]]:
    """Per window, the non-empty bins and their counts."""
    codes, counts = np.unique(groups.ids.astype(np.int64) * size + bins, return_counts=True)
    owner = codes // size
    bounds = np.searchsorted(owner, np.arange(groups.count + 1))
    keys, numbers = (codes % size).tolist(), counts.tolist()
    return [
        dict(zip(keys[bounds[g] : bounds[g + 1]], numbers[bounds[g] : bounds[g + 1]], strict=True))
        for g in range(groups.count)
    ]


def _dense(groups: Groups, bins: np.ndarray, size: int, mask: np.ndarray) -> np.ndarray:
    """Per window (rows) and bin (columns): how many rows under ``mask`` fall in it."""
    flat = np.bincount(
        groups.ids[mask].astype(np.int64) * size + bins[mask], minlength=groups.count * size
    )
    return flat.reshape(groups.count, size)


def _latency(groups: Groups, latency: np.ndarray) -> list[list[int]]:
    known = ~np.isnan(latency)
    buckets = np.searchsorted(np.asarray(LATENCY_BUCKETS_MS), np.nan_to_num(latency), side="left")
    table = _dense(groups, buckets, len(LATENCY_BUCKETS_MS) + 1, known)
    counts: list[list[int]] = table.tolist()
    return counts


def _labels(
    groups: Groups, rows: pa.Table, score: np.ndarray, decision: np.ndarray
) -> list[LabelSummary]:
    label_column = rows["label"]
    known = np.asarray(label_column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    label = _flags(label_column)
    if not known.any():
        return [LabelSummary() for _ in range(groups.count)]
    ids = groups.ids
    positive = known & label
    negative = known & ~label
    bins = score_bins(score)
    pos_bins = _sparse_masked(groups, bins, positive)
    neg_bins = _sparse_masked(groups, bins, negative)
    p = np.clip(score, _EPS, 1 - _EPS)
    term = np.where(label, -np.log(p), -np.log1p(-p))
    term = np.where(known, term, 0.0)
    loss = groups.bincount(ids, term)
    loss_sq = groups.bincount(ids, term * term)
    counts = {
        "count": groups.bincount(ids, known.astype(float)),
        "positives": groups.bincount(ids, positive.astype(float)),
        "tp": groups.bincount(ids, (positive & decision).astype(float)),
        "fp": groups.bincount(ids, (negative & decision).astype(float)),
        "fn": groups.bincount(ids, (positive & ~decision).astype(float)),
        "tn": groups.bincount(ids, (negative & ~decision).astype(float)),
    }
    return [
        LabelSummary(
            positive_bins=pos_bins[g],
            negative_bins=neg_bins[g],
            log_loss_sum=float(loss[g]),
            log_loss_sum_sq=float(loss_sq[g]),
            **{name: int(values[g]) for name, values in counts.items()},
        )
        for g in range(groups.count)
    ]


def _sparse_masked(groups: Groups, bins: np.ndarray, mask: np.ndarray) -> list[dict[int, int]]:
    if not mask.any():
        return [{} for _ in range(groups.count)]
    sub = Groups(ids=groups.ids[mask], count=groups.count)
    return _sparse(sub, bins[mask], SCORE_BINS)


def _features(
    groups: Groups, rows: pa.Table, profile: ReferenceProfile
) -> dict[str, list[FeatureSummary]]:
    if "features" not in rows.column_names:
        return {}
    struct = rows["features"].combine_chunks()
    out: dict[str, list[FeatureSummary]] = {}
    for index in range(struct.type.num_fields):
        name = struct.type.field(index).name
        reference = profile.features.get(name)
        column = struct.field(index)
        if isinstance(reference, NumericReference):
            out[name] = list(_numeric(groups, column, reference))
        elif isinstance(reference, CategoricalReference):
            out[name] = list(_categorical(groups, column))
    return out


def _numeric(groups: Groups, column: pa.Array, reference: NumericReference) -> list[NumericSummary]:
    values = np.asarray(
        pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
    )
    known = ~np.isnan(values)
    ids = groups.ids
    filled = np.where(known, values, 0.0)
    size = reference.edges.size + 1
    bins = _dense(groups, np.searchsorted(reference.edges, filled, side="right"), size, known)
    count = groups.bincount(ids, known.astype(float))
    below = groups.bincount(ids, (known & (filled < reference.minimum)).astype(float))
    above = groups.bincount(ids, (known & (filled > reference.maximum)).astype(float))
    total = groups.bincount(ids, filled)
    total_sq = groups.bincount(ids, filled * filled)
    low = np.full(groups.count, np.nan)
    high = np.full(groups.count, np.nan)
    np.fmin.at(low, ids, values)
    np.fmax.at(high, ids, values)
    rows = groups.bincount(ids)
    return [
        NumericSummary(
            count=int(count[g]),
            nulls=int(rows[g] - count[g]),
            bins=bins[g].tolist(),
            below=int(below[g]),
            above=int(above[g]),
            total=float(total[g]),
            total_sq=float(total_sq[g]),
            minimum=None if np.isnan(low[g]) else float(low[g]),
            maximum=None if np.isnan(high[g]) else float(high[g]),
        )
        for g in range(groups.count)
    ]


def _categorical(groups: Groups, column: pa.Array) -> list[CategoricalSummary]:
    encoded = pc.dictionary_encode(pc.cast(column, pa.string()))
    levels = encoded.dictionary.to_pylist()
    indices = encoded.indices
    known = np.asarray(indices.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    codes = np.asarray(pc.fill_null(indices, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    table = _dense(groups, codes, max(len(levels), 1), known)
    rows = groups.bincount(groups.ids)
    out = []
    for g in range(groups.count):
        nonzero = np.flatnonzero(table[g])
        counts = {levels[i]: int(table[g, i]) for i in nonzero}
        total = int(table[g].sum())
        out.append(CategoricalSummary(count=total, nulls=int(rows[g] - total), levels=counts))
    return out
