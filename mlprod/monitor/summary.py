"""What one monitoring window keeps of its predictions: counts that add up.

A window's summary holds, per feature, a histogram on the reference's percentile edges (numbers)
or level counts (categories), the scores on a fine fixed grid, and, for the predictions whose
outcome has joined, the scores by label, log-loss sums and the confusion counts at the deployed
threshold. Every field is a count, a sum, a minimum or a maximum, so two summaries merge by
adding (an hour into a day, a day into a month) and no metric needs the raw rows again.

Summaries are stored as bytes (:func:`pack`): a small JSON header for the scalars and the level
counts, then the bin counts as raw integers in the narrowest type that holds them. A month of
hourly windows packs in a few milliseconds; JSON text of the same counts took seconds.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.int64]

# Scores are counted on SCORE_BINS equal bins of [0, 1]: bin i holds [i/N, (i+1)/N), and 1.0
# goes to the last bin. Fine enough that an AUC from the bins is within 1e-4 of the exact one.
SCORE_BINS = 10_000
# In-process latency buckets (upper bounds, milliseconds); one more bucket counts the rest.
LATENCY_BUCKETS_MS = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 25, 50, 100, 250, 1000)
_FORMAT = 1  # version of the packed layout


def score_bins(scores: np.ndarray) -> IntArray:
    """The fine bin of each score (an int array); scores are clipped into [0, 1]."""
    bins: IntArray = np.minimum(
        (np.clip(scores, 0.0, 1.0) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1
    )
    return bins


def _ints(values: ArrayLike) -> IntArray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


@dataclass(frozen=True, eq=False)
class SparseCounts:
    """Counts of a few bins out of many: the non-empty bins, ascending, and their counts."""

    index: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    count: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, counts: SparseCounts | Mapping[int, int]) -> SparseCounts:
        if isinstance(counts, SparseCounts):
            return counts
        keys = sorted(k for k, n in counts.items() if n)
        return cls(_ints(keys), _ints([counts[k] for k in keys]))

    def dense(self, size: int = SCORE_BINS) -> IntArray:
        out = np.zeros(size, dtype=np.int64)
        out[self.index] = self.count
        return out

    def to_dict(self) -> dict[int, int]:
        return dict(zip(self.index.tolist(), self.count.tolist(), strict=True))

    def merge(self, other: SparseCounts) -> SparseCounts:
        keys, where = np.unique(np.concatenate([self.index, other.index]), return_inverse=True)
        counts = np.bincount(where, np.concatenate([self.count, other.count]), keys.size)
        return SparseCounts(keys, counts.astype(np.int64))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SparseCounts)
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.count, other.count)
        )

    __hash__ = None  # type: ignore[assignment]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(eq=False)
class NumericSummary:
    """A numeric feature in a window. ``bins[i]`` counts values with exactly ``i`` reference
    edges at or below them: ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, inf)``."""

    count: int  # non-null values
    nulls: int
    bins: IntArray  # len(reference edges) + 1 (a list is taken too)
    below: int  # values below the reference minimum
    above: int  # values above the reference maximum
    total: float  # sum of the values
    total_sq: float  # sum of their squares
    minimum: float | None
    maximum: float | None

    def __post_init__(self) -> None:
        self.bins = _ints(self.bins)

    def _scalars(self) -> tuple[Any, ...]:
        return (self.count, self.nulls, self.below, self.above, self.total, self.total_sq,
                self.minimum, self.maximum)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NumericSummary)
            and self._scalars() == other._scalars()
            and np.array_equal(self.bins, other.bins)
        )

    __hash__ = None  # type: ignore[assignment]

    def merge(self, other: NumericSummary) -> NumericSummary:
        return NumericSummary(
            count=self.count + other.count,
            nulls=self.nulls + other.nulls,
            bins=self.bins + other.bins,
            below=self.below + other.below,
            above=self.above + other.above,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            minimum=_min(self.minimum, other.minimum),
            maximum=_max(self.maximum, other.maximum),
        )


@dataclass
class CategoricalSummary:
    """A categorical feature in a window: how often each level was seen."""

    count: int  # non-null values
    nulls: int
    levels: dict[str, int]

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        levels = dict(self.levels)
        for level, n in other.levels.items():
            levels[level] = levels.get(level, 0) + n
        return CategoricalSummary(self.count + other.count, self.nulls + other.nulls, levels)


FeatureSummary = NumericSummary | CategoricalSummary


@dataclass
class LabelSummary:
    """The predictions of a window whose outcome has joined."""

    count: int = 0
    positives: int = 0
    # Fine score bin -> count, of the positives and of the negatives (a dict is taken too).
    positive_bins: SparseCounts = field(default_factory=SparseCounts)
    negative_bins: SparseCounts = field(default_factory=SparseCounts)
    log_loss_sum: float = 0.0  # sum over rows of -log(p) or -log(1 - p), p clipped to 1e-15
    log_loss_sum_sq: float = 0.0  # sum of the squares of those terms
    tp: int = 0  # decision True, label True
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __post_init__(self) -> None:
        self.positive_bins = SparseCounts.of(self.positive_bins)
        self.negative_bins = SparseCounts.of(self.negative_bins)

    def merge(self, other: LabelSummary) -> LabelSummary:
        return LabelSummary(
            count=self.count + other.count,
            positives=self.positives + other.positives,
            positive_bins=self.positive_bins.merge(other.positive_bins),
            negative_bins=self.negative_bins.merge(other.negative_bins),
            log_loss_sum=self.log_loss_sum + other.log_loss_sum,
            log_loss_sum_sq=self.log_loss_sum_sq + other.log_loss_sum_sq,
            tp=self.tp + other.tp,
            fp=self.fp + other.fp,
            fn=self.fn + other.fn,
            tn=self.tn + other.tn,
        )

    def scalars(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_bins")}


@dataclass
class WindowSummary:
    """Everything monitoring keeps of one window of one model version and variant."""

    rows: int
    served: int  # answered to a client (shadow predictions are not)
    decisions: int  # rows whose decision was True
    score_sum: float
    score_bins: SparseCounts  # fine score bin -> count, every row (a dict is taken too)
    latency: list[int]  # counts per LATENCY_BUCKETS_MS bucket, plus one for the rest
    features: dict[str, FeatureSummary]
    labels: LabelSummary

    def __post_init__(self) -> None:
        self.score_bins = SparseCounts.of(self.score_bins)

    def merge(self, other: WindowSummary) -> WindowSummary:
        features = dict(self.features)
        for name, summary in other.features.items():
            mine = features.get(name)
            features[name] = summary if mine is None else mine.merge(summary)  # type: ignore[arg-type]
        return WindowSummary(
            rows=self.rows + other.rows,
            served=self.served + other.served,
            decisions=self.decisions + other.decisions,
            score_sum=self.score_sum + other.score_sum,
            score_bins=self.score_bins.merge(other.score_bins),
            latency=[a + b for a, b in zip(self.latency, other.latency, strict=True)],
            features=features,
            labels=self.labels.merge(other.labels),
        )


def pack(summary: WindowSummary) -> bytes:
    """The summary as bytes: a length, a JSON header, then every bin count array."""
    arrays: list[IntArray] = []
    for sparse in (summary.score_bins, summary.labels.positive_bins, summary.labels.negative_bins):
        arrays += [sparse.index, sparse.count]
    features: dict[str, Any] = {}
    for name, feature in summary.features.items():
        if isinstance(feature, NumericSummary):
            features[name] = ["n", *feature._scalars()]
            arrays.append(feature.bins)
        else:
            features[name] = ["c", feature.count, feature.nulls, feature.levels]
    kinds = [_narrowest(a) for a in arrays]
    header = {
        "format": _FORMAT,
        "rows": summary.rows,
        "served": summary.served,
        "decisions": summary.decisions,
        "score_sum": summary.score_sum,
        "latency": summary.latency,
        "labels": summary.labels.scalars(),
        "features": features,
        "arrays": [[kind, int(a.size)] for kind, a in zip(kinds, arrays, strict=True)],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join(a.astype(kind).tobytes() for kind, a in zip(kinds, arrays, strict=True))
    return struct.pack("<I", len(head)) + head + body


def unpack(data: bytes) -> WindowSummary:
    """The summary :func:`pack` wrote."""
    (length,) = struct.unpack_from("<I", data)
    header = json.loads(data[4 : 4 + length])
    offset = 4 + length
    arrays: list[IntArray] = []
    for kind, size in header["arrays"]:
        array = np.frombuffer(data, dtype=kind, count=size, offset=offset)
        arrays.append(array.astype(np.int64))
        offset += array.nbytes
    sparse = [SparseCounts(arrays[i], arrays[i + 1]) for i in (0, 2, 4)]
    numeric = iter(arrays[6:])
    features: dict[str, FeatureSummary] = {}
    for name, (kind, *values) in header["features"].items():
        if kind == "n":
            count, nulls, below, above, total, total_sq, low, high = values
            features[name] = NumericSummary(
                count, nulls, next(numeric), below, above, total, total_sq, low, high
            )
        else:
            features[name] = CategoricalSummary(*values)
    return WindowSummary(
        rows=header["rows"],
        served=header["served"],
        decisions=header["decisions"],
        score_sum=header["score_sum"],
        score_bins=sparse[0],
        latency=header["latency"],
        features=features,
        labels=LabelSummary(**header["labels"], positive_bins=sparse[1], negative_bins=sparse[2]),
    )


def _narrowest(array: IntArray) -> str:
    """The smallest little-endian unsigned type that holds every value (counts are >= 0)."""
    top = int(array.max()) if array.size else 0
    for kind in ("<u1", "<u2", "<u4"):
        if top <= np.iinfo(kind).max:
            return kind
    return "<i8"


def dense(bins: SparseCounts | Mapping[int, int], size: int = SCORE_BINS) -> IntArray:
    """Sparse bin counts as a dense int64 array of ``size`` bins."""
    return SparseCounts.of(bins).dense(size)


def occupied(bins: SparseCounts | ArrayLike) -> tuple[IntArray, NDArray[np.float64], int]:
    """The non-empty bins of sparse or dense counts: their indices (ascending), counts and the
    size of the grid. Metrics on fine score bins cost what the occupied bins do, not 10,000."""
    if isinstance(bins, SparseCounts):
        kept = bins.count > 0
        return bins.index[kept], bins.count[kept].astype(np.float64), SCORE_BINS
    counts = np.asarray(bins, dtype=np.float64)
    filled = np.flatnonzero(counts)
    return filled, counts[filled], counts.size


def aligned(
    a: SparseCounts | ArrayLike, b: SparseCounts | ArrayLike
) -> tuple[IntArray, NDArray[np.float64], NDArray[np.float64], int]:
    """Two count vectors on the bins where either is non-empty: indices, both counts, size."""
    index_a, count_a, size = occupied(a)
    index_b, count_b, _ = occupied(b)
    index = np.union1d(index_a, index_b)
    out_a, out_b = np.zeros(index.size), np.zeros(index.size)
    out_a[np.searchsorted(index, index_a)] = count_a
    out_b[np.searchsorted(index, index_b)] = count_b
    return index, out_a, out_b, size
