"""Rows of many windows into one ``WindowSummary`` each, with a few numpy passes per column.

The rows are put in window order once (each window's rows in log order); then a
window is a contiguous run of rows: its sums, minima and maxima are one ``reduceat`` per
column and its histograms one ``bincount`` over ``window * bins + bin``. Columns are summarised
on a small thread pool (numpy releases the GIL), so a million rows of 25 features take well
under a second on two cores. The same rows give the same bits in whatever order they come.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.monitor.reference import CategoricalReference, NumericReference, ReferenceProfile
from mlprod.monitor.summary import (
    LATENCY_BUCKETS_MS,
    SCORE_BINS,
    CategoricalSummary,
    IntArray,
    LabelSummary,
    NumericSummary,
    SparseCounts,
    WindowSummary,
    score_bins,
)

_EPS = 1e-15  # log-loss clips probabilities into [_EPS, 1 - _EPS]
_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Layout:
    """Rows in window order: ``order`` takes a column into it; window ``g`` is the run
    ``starts[g]:starts[g + 1]``."""

    order: IntArray | None  # None: the rows are in that order already
    ids: IntArray  # window per row, in window order
    starts: IntArray  # first row of each window
    count: int

    @classmethod
    def of(cls, window: np.ndarray, seq: np.ndarray) -> Layout:
        """Rows by window, then by ``seq`` (their order in the log)."""
        ids = np.asarray(window, dtype=np.int64)
        seq = np.asarray(seq, dtype=np.int64)
        if ids.size < 2 or bool(np.all(np.diff(ids) >= 0) and np.all(np.diff(seq) > 0)):
            order = None  # in order already (time windows of a log read in order): no copies
            ordered = ids
        else:
            order = np.lexsort((seq, ids))
            ordered = ids[order]
        count = int(ordered[-1]) + 1 if ordered.size else 0
        starts = np.searchsorted(ordered, np.arange(count))
        if count and np.any(np.diff(np.append(starts, ordered.size)) == 0):
            raise ValueError("every window index from 0 to the largest must have rows")
        return cls(order, ordered, starts, count)

    def take(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts) if self.count else np.zeros(0)

    def table(self, codes: np.ndarray, size: int) -> IntArray:
        """Per window (rows) and code (columns): how many rows have it (codes in window order)."""
        flat = np.bincount(self.ids * size + codes, minlength=self.count * size)
        return flat.reshape(self.count, size)

    def sparse(self, codes: np.ndarray, size: int) -> tuple[IntArray, IntArray, IntArray]:
        """The distinct (window, code) pairs of the rows, ascending, as their window and code,
        and each row's pair (``np.unique`` of ``window * size + code``)."""
        keys, inverse = np.unique(self.ids * size + codes, return_inverse=True)
        return keys // size, keys % size, inverse


def summarise(rows: pa.Table, window: np.ndarray, profile: ReferenceProfile) -> list[WindowSummary]:
    """One summary per window index ``0..max(window)`` (``window``: int per row; the rows need
    ``seq``, ``score``, ``decision``, ``served``, ``latency_ms``, ``label`` and a ``features``
    struct; they may come in any order)."""
    layout = Layout.of(window, rows["seq"].to_numpy())
    score = layout.take(_floats(rows["score"]))
    decision = layout.take(_flags(rows["decision"]))
    known = layout.take(np.asarray(rows["label"].is_valid().to_numpy(zero_copy_only=False), bool))
    label = layout.take(_flags(rows["label"]))
    latency_ms = layout.take(_floats(rows["latency_ms"]))
    columns = _feature_columns(rows, profile)
    with ThreadPoolExecutor(_THREADS) as pool:
        scores_job = pool.submit(_score_bins, layout, score, known & label, known & ~label)
        labels_job = pool.submit(_labels, layout, score, decision, known, label)
        latency_job = pool.submit(_latency, layout, latency_ms)
        feature_jobs = {
            name: pool.submit(_feature_job(layout, column, reference))
            for name, column, reference in columns
        }
        scores, labels, latency = scores_job.result(), labels_job.result(), latency_job.result()
        done = {name: job.result() for name, job in feature_jobs.items()}
    sizes = np.diff(np.append(layout.starts, layout.ids.size))
    served = layout.sum(layout.take(_flags(rows["served"])).astype(np.int64))
    decisions = layout.sum(decision.astype(np.int64))
    score_sum = layout.sum(score)
    return [
        WindowSummary(
            rows=int(sizes[g]),
            served=int(served[g]),
            decisions=int(decisions[g]),
            score_sum=float(score_sum[g]),
            score_bins=scores[g][0],
            latency=latency[g],
            features={name: per[g] for name, per in done.items()},
            labels=replace(labels[g], positive_bins=scores[g][1], negative_bins=scores[g][2]),
        )
        for g in range(layout.count)
    ]


def _feature_columns(
    rows: pa.Table, profile: ReferenceProfile
) -> list[tuple[str, pa.ChunkedArray, NumericReference | CategoricalReference]]:
    if "features" not in rows.column_names:
        return []
    features = rows["features"]
    out = []
    for index, field in enumerate(features.type):
        reference = profile.features.get(field.name)
        if reference is not None:
            out.append((field.name, pc.struct_field(features, [index]), reference))
    return out


def _feature_job(
    layout: Layout, column: pa.ChunkedArray, reference: NumericReference | CategoricalReference
) -> Callable[[], list[NumericSummary] | list[CategoricalSummary]]:
    if isinstance(reference, NumericReference):
        return lambda: _numeric(layout, layout.take(_floats(column)), reference)
    return lambda: _categorical(layout, column)


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return np.asarray(
        pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
    )


def _flags(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def _score_bins(layout: Layout, score: np.ndarray, *masks: np.ndarray) -> list[list[SparseCounts]]:
    """Per window, the scores on the fine bins: of every row, then of the rows of each mask
    (one ``np.unique`` for all of them)."""
    owner, code, inverse = layout.sparse(score_bins(score), SCORE_BINS)
    bounds = np.searchsorted(owner, np.arange(layout.count + 1))
    counts = [np.bincount(inverse, minlength=code.size)]
    counts += [np.bincount(inverse[mask], minlength=code.size) for mask in masks]
    out = []
    for g in range(layout.count):
        part = slice(bounds[g], bounds[g + 1])
        index = code[part]
        per = []
        for count in counts:
            number = count[part]
            kept = number > 0
            per.append(SparseCounts(index[kept], number[kept]))
        out.append(per)
    return out


def _latency(layout: Layout, latency: np.ndarray) -> list[list[int]]:
    known = ~np.isnan(latency)
    size = len(LATENCY_BUCKETS_MS) + 1
    buckets = np.where(
        known, np.searchsorted(np.asarray(LATENCY_BUCKETS_MS), latency, side="left"), size
    )
    table = layout.table(buckets, size + 1)[:, :size]
    counts: list[list[int]] = table.tolist()
    return counts


def _labels(
    layout: Layout, score: np.ndarray, decision: np.ndarray, known: np.ndarray, label: np.ndarray
) -> list[LabelSummary]:
    """Confusion counts and log-loss sums of the labelled rows (their score bins come from
    :func:`_score_bins`)."""
    if not known.any():
        return [LabelSummary() for _ in range(layout.count)]
    positive = known & label
    negative = known & ~label
    p = np.clip(score, _EPS, 1 - _EPS)
    term = np.where(known, np.where(label, -np.log(p), -np.log1p(-p)), 0.0)
    loss, loss_sq = layout.sum(term), layout.sum(term * term)
    flags = {
        "count": known,
        "positives": positive,
        "tp": positive & decision,
        "fp": negative & decision,
        "fn": positive & ~decision,
        "tn": negative & ~decision,
    }
    sums = {name: layout.sum(flag.astype(np.int64)).tolist() for name, flag in flags.items()}
    return [
        LabelSummary(
            count=sums["count"][g],
            positives=sums["positives"][g],
            log_loss_sum=float(loss[g]),
            log_loss_sum_sq=float(loss_sq[g]),
            tp=sums["tp"][g],
            fp=sums["fp"][g],
            fn=sums["fn"][g],
            tn=sums["tn"][g],
        )
        for g in range(layout.count)
    ]


def _numeric(
    layout: Layout, values: np.ndarray, reference: NumericReference
) -> list[NumericSummary]:
    """One searchsorted over the reference edges bracketed by its minimum and (just above) its
    maximum gives each value's bin, whether it is below or above the reference's range, and
    (NaN sorts last) whether it is null, so one bincount counts them all."""
    edges = reference.edges
    n = edges.size
    bracket = np.concatenate(
        [[reference.minimum], edges, [np.nextafter(reference.maximum, np.inf)]]
    )
    if np.all(np.diff(bracket) >= 0):
        where = np.searchsorted(_ordered_ints(bracket), _ordered_ints(values), side="right")
        where[np.isnan(values)] = n + 3
        table = layout.table(where, n + 4)
        below, above, nulls = table[:, 0], table[:, n + 2], table[:, n + 3]
        bins = table[:, 1 : n + 2].copy()
        bins[:, 0] += below
        bins[:, n] += above
    else:  # a reference whose range does not contain its own edges: count each part alone
        known = ~np.isnan(values)
        where = np.where(known, np.searchsorted(edges, values, side="right"), n + 1)
        bins = layout.table(where, n + 2)
        nulls = bins[:, n + 1]
        bins = bins[:, : n + 1]
        below = layout.sum((values < reference.minimum).astype(np.int64))
        above = layout.sum((values > reference.maximum).astype(np.int64))
    known = ~np.isnan(values)
    filled = np.where(known, values, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):  # infinite values make infinite sums
        total, total_sq = layout.sum(filled), layout.sum(filled * filled)
    low = np.fmin.reduceat(values, layout.starts) if layout.count else np.zeros(0)
    high = np.fmax.reduceat(values, layout.starts) if layout.count else np.zeros(0)
    sizes = np.diff(np.append(layout.starts, layout.ids.size))
    return [
        NumericSummary(
            count=int(sizes[g] - nulls[g]),
            nulls=int(nulls[g]),
            bins=bins[g],
            below=int(below[g]),
            above=int(above[g]),
            total=float(total[g]),
            total_sq=float(total_sq[g]),
            minimum=None if np.isnan(low[g]) else float(low[g]),
            maximum=None if np.isnan(high[g]) else float(high[g]),
        )
        for g in range(layout.count)
    ]


def _ordered_ints(values: np.ndarray) -> IntArray:
    """Floats as int64 in the same order (NaN aside), for a searchsorted three times faster
    than on the floats: the bits of a positive double already sort as integers; a negative
    one's magnitude bits are flipped so that larger magnitudes sort lower. (-0.0 becomes 0.0.)"""
    bits = (values + 0.0).view(np.int64)
    ordered: IntArray = np.where(bits < 0, bits ^ np.int64(0x7FFF_FFFF_FFFF_FFFF), bits)
    return ordered


def _categorical(layout: Layout, column: pa.ChunkedArray) -> list[CategoricalSummary]:
    encoded = pc.dictionary_encode(pc.cast(column, pa.string()).combine_chunks())
    levels = encoded.dictionary.to_pylist()
    size = len(levels)
    codes = np.asarray(pc.fill_null(encoded.indices, size).to_numpy(zero_copy_only=False), np.int64)
    table = layout.table(layout.take(codes), size + 1)
    out = []
    for g in range(layout.count):
        row = table[g]
        nonzero = np.flatnonzero(row[:size]).tolist()
        counts = {levels[i]: int(row[i]) for i in nonzero}
        nulls = int(row[size])
        out.append(CategoricalSummary(count=int(row.sum()) - nulls, nulls=nulls, levels=counts))
    return out
