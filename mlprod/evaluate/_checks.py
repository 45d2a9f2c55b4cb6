"""Checking labels and scores before any metric: what every evaluation function does first."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlprod.errors import EvaluationError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def subject(split: str | None) -> str:
    """How messages name the rows: "the test window", or "the data" without a split name."""
    return f"the {split} window" if split else "the data"


def count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``12,345 rows``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def check_scores(
    y: ArrayLike, score: ArrayLike, *, split: str | None = None
) -> tuple[IntArray, FloatArray]:
    """Labels as int64 0/1 and scores as float64 in [0, 1], or an EvaluationError saying why."""
    who = subject(split)
    labels, scores = np.asarray(y), np.asarray(score)
    if labels.ndim != 1 or scores.ndim != 1:
        raise EvaluationError(
            f"{who} needs one label and one score per row; got arrays of shape "
            f"{labels.shape} and {scores.shape}"
        )
    if len(labels) != len(scores):
        raise EvaluationError(
            f"{who} has {count(len(labels), 'label')} but {count(len(scores), 'score')}; "
            "give one score per labelled row"
        )
    if len(labels) == 0:
        raise EvaluationError(f"{who} has no rows to evaluate")
    try:
        as_float = labels.astype(np.float64)
    except (TypeError, ValueError):
        as_float = np.full(len(labels), np.nan)
    bad = ~((as_float == 0) | (as_float == 1))
    if bad.any():
        example = labels[bad][0]
        example = example.item() if isinstance(example, np.generic) else example
        raise EvaluationError(
            f"{who} has {count(int(bad.sum()), 'label')} other than 0 and 1 among "
            f"{count(len(labels), 'row')} (e.g. {example!r}); labels must be 0/1 or true/false"
        )
    try:
        probabilities = scores.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{who} has scores that are not numbers") from None
    nan = np.isnan(probabilities)
    outside = ~nan & ((probabilities < 0) | (probabilities > 1))
    if nan.any() or outside.any():
        problems = []
        if nan.any():
            problems.append(count(int(nan.sum()), "NaN score"))
        if outside.any():
            valid = probabilities[~nan]
            problems.append(
                f"{count(int(outside.sum()), 'score')} outside [0, 1] "
                f"(lowest {valid.min():.4g}, highest {valid.max():.4g})"
            )
        raise EvaluationError(
            f"{who} has {' and '.join(problems)} among {count(len(scores), 'row')}; scores must be "
            "probabilities in [0, 1], e.g. from predict_proba"
        )
    return as_float.astype(np.int64), probabilities


def need_both_classes(labels: IntArray, metric: str, split: str | None) -> None:
    """Raise unless the (checked) labels hold both 0 and 1."""
    positives = int(labels.sum())
    if 0 < positives < len(labels):
        return
    kind = "negative" if positives == 0 else "positive"
    raise EvaluationError(
        f"{subject(split)} has only {kind} labels ({count(len(labels), 'row')}); "
        f"{metric} needs both classes"
    )
