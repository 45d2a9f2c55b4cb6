"""The artefact's reference statistics, in the shape monitoring compares windows with.

Artefacts saved before the percentile histograms were recorded keep only deciles; their edges
are the distinct inner deciles and each bin is assumed to hold its nominal share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NumericReference:
    edges: np.ndarray  # distinct percentile edges, increasing
    shares: np.ndarray  # reference share per bin, len(edges) + 1, sums to 1
    # PSI compares decile bins: the fine bins [0, c0), [c0, c1), ..., [c_last, end) merged.
    psi_cuts: np.ndarray
    null_rate: float
    mean: float
    std: float
    minimum: float
    maximum: float
    count: int


@dataclass(frozen=True)
class CategoricalReference:
    shares: dict[str, float]  # level -> share of non-null values (the most common 100 levels)
    null_rate: float


@dataclass(frozen=True)
class ScoreReference:
    edges: np.ndarray
    shares: np.ndarray
    psi_cuts: np.ndarray
    mean: float
    decision_rate: float | None


@dataclass(frozen=True)
class ReferenceProfile:
    rows: int
    features: dict[str, NumericReference | CategoricalReference]
    score: ScoreReference | None

    @classmethod
    def of(cls, reference: dict[str, Any]) -> ReferenceProfile:
        features: dict[str, NumericReference | CategoricalReference] = {}
        for name, entry in reference.get("features", {}).items():
            if "shares" in entry and isinstance(entry["shares"], dict):
                features[name] = CategoricalReference(
                    shares={str(k): float(v) for k, v in entry["shares"].items()},
                    null_rate=float(entry.get("null_rate", 0.0)),
                )
            elif "deciles" in entry:
                edges, shares, cuts = _bins(entry)
                deciles = entry["deciles"]
                features[name] = NumericReference(
                    edges=edges,
                    shares=shares,
                    psi_cuts=cuts,
                    null_rate=float(entry.get("null_rate", 0.0)),
                    mean=float(entry.get("mean", 0.0)),
                    std=float(entry.get("std", 0.0)),
                    minimum=float(entry.get("min", deciles[0])),
                    maximum=float(entry.get("max", deciles[-1])),
                    count=int(entry.get("count", reference.get("rows", 0))),
                )
        score_entry = reference.get("score") or {}
        score = None
        if score_entry.get("deciles"):
            edges, shares, cuts = _bins(score_entry)
            score = ScoreReference(
                edges=edges,
                shares=shares,
                psi_cuts=cuts,
                mean=float(score_entry.get("mean") or 0.0),
                decision_rate=score_entry.get("decision_rate"),
            )
        return cls(rows=int(reference.get("rows", 0)), features=features, score=score)


def _bins(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges, shares and decile merge points of a recorded histogram (or of bare deciles)."""
    deciles = np.asarray(entry["deciles"], dtype=float)
    if "edges" in entry:
        edges = np.asarray(entry["edges"], dtype=float)
        shares = np.asarray(entry["shares"], dtype=float)
    else:
        inner = deciles[1:-1]
        edges = np.unique(inner)
        below = (np.searchsorted(inner, edges, side="left") + 1) / 10  # nominal P(X < edge)
        shares = np.diff(np.concatenate([[0.0], below, [1.0]]))
    if "psi_cuts" in entry:
        return edges, shares, np.asarray(entry["psi_cuts"], dtype=np.int64)
    cuts = np.unique(np.searchsorted(edges, np.unique(deciles[1:-1]), side="left") + 1)
    return edges, shares, cuts[(cuts > 0) & (cuts <= edges.size)]
