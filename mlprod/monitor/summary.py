"""What one monitoring window keeps of its predictions: counts that add up.

A window's summary holds, per feature, a histogram on the reference's percentile edges (numbers)
or level counts (categories), the scores on a fine fixed grid, and, for the predictions whose
outcome has joined, the scores by label, log-loss sums and the confusion counts at the deployed
threshold. Every field is a count, a sum, a minimum or a maximum, so two summaries merge by
adding (an hour into a day, a day into a month) and no metric needs the raw rows again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Scores are counted on SCORE_BINS equal bins of [0, 1]: bin i holds [i/N, (i+1)/N), and 1.0
# goes to the last bin. Fine enough that an AUC from the bins is within 1e-4 of the exact one.
SCORE_BINS = 10_000
# In-process latency buckets (upper bounds, milliseconds); one more bucket counts the rest.
LATENCY_BUCKETS_MS = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 25, 50, 100, 250, 1000)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The fine bin of each score (an int array); scores are clipped into [0, 1]."""
    bins: np.ndarray = np.minimum(
        (np.clip(scores, 0.0, 1.0) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1
    )
    return bins


def _add_sparse(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    merged = dict(a)
    for key, count in b.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class NumericSummary:
    """A numeric feature in a window. ``bins[i]`` counts values with exactly ``i`` reference
    edges at or below them: ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, inf)``."""

    count: int  # non-null values
    nulls: int
    bins: list[int]  # len(reference edges) + 1
    below: int  # values below the reference minimum
    above: int  # values above the reference maximum
    total: float  # sum of the values
    total_sq: float  # sum of their squares
    minimum: float | None
    maximum: float | None

    def merge(self, other: NumericSummary) -> NumericSummary:
        return NumericSummary(
            count=self.count + other.count,
            nulls=self.nulls + other.nulls,
            bins=[a + b for a, b in zip(self.bins, other.bins, strict=True)],
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
    positive_bins: dict[int, int] = field(default_factory=dict)  # fine score bin -> count
    negative_bins: dict[int, int] = field(default_factory=dict)
    log_loss_sum: float = 0.0  # sum over rows of -log(p) or -log(1 - p), p clipped to 1e-15
    log_loss_sum_sq: float = 0.0  # sum of the squares of those terms
    tp: int = 0  # decision True, label True
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def merge(self, other: LabelSummary) -> LabelSummary:
        return LabelSummary(
            count=self.count + other.count,
            positives=self.positives + other.positives,
            positive_bins=_add_sparse(self.positive_bins, other.positive_bins),
            negative_bins=_add_sparse(self.negative_bins, other.negative_bins),
            log_loss_sum=self.log_loss_sum + other.log_loss_sum,
            log_loss_sum_sq=self.log_loss_sum_sq + other.log_loss_sum_sq,
            tp=self.tp + other.tp,
            fp=self.fp + other.fp,
            fn=self.fn + other.fn,
            tn=self.tn + other.tn,
        )


@dataclass
class WindowSummary:
    """Everything monitoring keeps of one window of one model version and variant."""

    rows: int
    served: int  # answered to a client (shadow predictions are not)
    decisions: int  # rows whose decision was True
    score_sum: float
    score_bins: dict[int, int]  # fine score bin -> count, every row
    latency: list[int]  # counts per LATENCY_BUCKETS_MS bucket, plus one for the rest
    features: dict[str, FeatureSummary]
    labels: LabelSummary

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
            score_bins=_add_sparse(self.score_bins, other.score_bins),
            latency=[a + b for a, b in zip(self.latency, other.latency, strict=True)],
            features=features,
            labels=self.labels.merge(other.labels),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (sparse bins keyed by their index as text)."""
        features: dict[str, Any] = {}
        for name, summary in self.features.items():
            entry = dict(summary.__dict__)
            entry["kind"] = "numeric" if isinstance(summary, NumericSummary) else "categorical"
            features[name] = entry
        labels = dict(self.labels.__dict__)
        labels["positive_bins"] = {str(k): v for k, v in self.labels.positive_bins.items()}
        labels["negative_bins"] = {str(k): v for k, v in self.labels.negative_bins.items()}
        return {
            "rows": self.rows,
            "served": self.served,
            "decisions": self.decisions,
            "score_sum": self.score_sum,
            "score_bins": {str(k): v for k, v in self.score_bins.items()},
            "latency": list(self.latency),
            "features": features,
            "labels": labels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowSummary:
        features: dict[str, FeatureSummary] = {}
        for name, entry in data["features"].items():
            values = {k: v for k, v in entry.items() if k != "kind"}
            features[name] = (
                NumericSummary(**values)
                if entry["kind"] == "numeric"
                else CategoricalSummary(**values)
            )
        labels = dict(data["labels"])
        labels["positive_bins"] = {int(k): v for k, v in labels["positive_bins"].items()}
        labels["negative_bins"] = {int(k): v for k, v in labels["negative_bins"].items()}
        return cls(
            rows=data["rows"],
            served=data["served"],
            decisions=data["decisions"],
            score_sum=data["score_sum"],
            score_bins={int(k): v for k, v in data["score_bins"].items()},
            latency=list(data["latency"]),
            features=features,
            labels=LabelSummary(**labels),
        )


def dense(bins: dict[int, int], size: int = SCORE_BINS) -> np.ndarray:
    """Sparse bin counts as a dense int64 array of ``size`` bins."""
    out = np.zeros(size, dtype=np.int64)
    if bins:
        keys = np.fromiter(bins.keys(), dtype=np.int64, count=len(bins))
        out[keys] = np.fromiter(bins.values(), dtype=np.int64, count=len(bins))
    return out
