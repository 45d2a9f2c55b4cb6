"""The evaluation report's charts, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are made with ``Figure`` directly, never through pyplot, so no global figure state or
interactive backend is involved and nothing needs closing. ``splits`` map a split name to its
``(y, score)`` arrays, drawn in the same colour in every chart.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from mlprod.evaluate import metrics
from mlprod.evaluate.metrics import FloatArray, IntArray
from mlprod.evaluate.value import OutcomeValues
from mlprod.project.training import ValueConfig

Splits = Mapping[str, tuple[IntArray, FloatArray]]
COLOURS = {"validation": "tab:blue", "test": "tab:orange"}
WIDTH, HEIGHT, DPI = 6.0, 4.0, 100


def _text(value: str) -> str:
    """A user string as literal chart text: matplotlib reads ``$...$`` as mathematics."""
    return value.replace("$", r"\$")


def _colour(split: str, index: int) -> str:
    return COLOURS.get(split, f"C{index + 2}")


def new_figure(height: float = HEIGHT) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, alpha=0.3)
    return figure, axes


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _score_limit(scores: Sequence[FloatArray], threshold: float) -> float:
    """Where a score axis should end: scores often fill only part of [0, 1]."""
    highest = max(threshold, *(float(np.max(score)) for score in scores))
    return min(1.0, float(np.ceil(highest * 1.05 * 20) / 20))


def _unit_square(axes: Axes) -> None:
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)


def roc_chart(splits: Splits) -> Figure:
    figure, axes = new_figure()
    for index, (split, (y, score)) in enumerate(splits.items()):
        fpr, tpr, _ = metrics.roc_points(y, score, split=split)
        area = metrics.auc(y, score, split=split)
        axes.plot(fpr, tpr, color=_colour(split, index), label=f"{split} (AUC {area:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    _unit_square(axes)
    axes.set_title("ROC curve")
    axes.set_xlabel("False positive rate (share of negatives flagged)")
    axes.set_ylabel("True positive rate (share of positives caught)")
    axes.legend(loc="lower right")
    return figure


def pr_chart(splits: Splits) -> Figure:
    figure, axes = new_figure()
    for index, (split, (y, score)) in enumerate(splits.items()):
        precision, recall, _ = metrics.pr_points(y, score, split=split)
        area = metrics.average_precision(y, score, split=split)
        colour = _colour(split, index)
        axes.step(recall, precision, where="post", color=colour, label=f"{split} (AP {area:.3f})")
        axes.axhline(
            float(np.mean(y)), color=colour, linestyle=":", linewidth=1, label=f"{split} base rate"
        )
    _unit_square(axes)
    axes.set_title("Precision-recall curve")
    axes.set_xlabel("Recall (share of positives caught)")
    axes.set_ylabel("Precision (share of flagged that are positive)")
    axes.legend(loc="upper right")
    return figure


def distribution_chart(y: IntArray, score: FloatArray, threshold: float, split: str) -> Figure:
    figure, axes = new_figure()
    limit = _score_limit([score], threshold)
    for label, name, colour in ((0, "negatives", "tab:blue"), (1, "positives", "tab:red")):
        chosen = score[y == label]
        axes.hist(
            chosen,
            bins=50,
            range=(0.0, limit),
            density=True,
            histtype="stepfilled",
            alpha=0.4,
            edgecolor=colour,
            color=colour,
            label=f"{name} ({len(chosen):,})",
        )
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set_xlim(0, limit)
    axes.set_title(f"Score distribution by class ({split})")
    axes.set_xlabel("Score")
    axes.set_ylabel("Density (each class sums to 1)")
    axes.legend(loc="upper right")
    return figure


def calibration_chart(splits: Splits, bins: int = 10) -> Figure:
    figure, axes = new_figure()
    top = 0.0
    for index, (split, (y, score)) in enumerate(splits.items()):
        table = metrics.calibration_table(y, score, bins, strategy="quantile", split=split)
        filled = [row for row in table if row["rows"]]
        mean = [row["mean_score"] for row in filled]
        observed = [row["observed_rate"] for row in filled]
        top = max(top, *mean, *observed)
        loss = metrics.brier(y, score, split=split)
        axes.plot(
            mean,
            observed,
            marker="o",
            color=_colour(split, index),
            label=f"{split} (Brier {loss:.4f})",
        )
    limit = min(1.0, top * 1.1 + 0.02)
    axes.plot([0, limit], [0, limit], color="grey", linestyle="--", linewidth=1, label="perfect")
    axes.set_xlim(0, limit)
    axes.set_ylim(0, limit)
    axes.set_title(f"Calibration ({bins} bins of equal rows)")
    axes.set_xlabel("Mean predicted probability")
    axes.set_ylabel("Observed positive rate")
    axes.legend(loc="upper left")
    return figure


def gains_chart(splits: Splits) -> Figure:
    figure, axes = new_figure()
    for index, (split, (y, score)) in enumerate(splits.items()):
        fpr, tpr, _ = metrics.roc_points(y, score, split=split)
        positives = float(np.sum(y))
        flagged = (tpr * positives + fpr * (len(y) - positives)) / len(y)
        axes.plot(flagged, tpr, color=_colour(split, index), label=split)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random order")
    _unit_square(axes)
    axes.set_title("Cumulative gains")
    axes.set_xlabel("Share of rows flagged, highest scores first")
    axes.set_ylabel("Share of all positives caught")
    axes.legend(loc="lower right")
    return figure


def ks_chart(y: IntArray, score: FloatArray, split: str) -> Figure:
    figure, axes = new_figure()
    fpr, tpr, thresholds = metrics.roc_points(y, score, split=split)
    # Below each threshold: the empirical distribution functions of each class's scores.
    cuts, below_positive, below_negative = thresholds[1:], 1 - tpr[1:], 1 - fpr[1:]
    gap = np.abs(below_negative - below_positive)
    at = int(np.argmax(gap))
    axes.step(cuts, below_negative, where="post", color="tab:blue", label="negatives")
    axes.step(cuts, below_positive, where="post", color="tab:red", label="positives")
    axes.vlines(
        cuts[at],
        below_positive[at],
        below_negative[at],
        color="black",
        linewidth=2,
        label=f"KS {gap[at]:.3f} at score {cuts[at]:.3g}",
    )
    axes.set_xlim(0, _score_limit([score], 0.0))
    axes.set_ylim(0, 1.01)
    axes.set_title(f"Kolmogorov-Smirnov separation ({split})")
    axes.set_xlabel("Score")
    axes.set_ylabel("Share of the class scoring below")
    axes.legend(loc="lower right")
    return figure


def value_chart(
    splits: Splits, worth: Mapping[str, OutcomeValues | ValueConfig], threshold: float
) -> Figure:
    """Value per 1,000 rows by threshold; ``worth`` says what outcomes are worth in each split."""
    figure, axes = new_figure()
    currency = next(iter(worth.values())).currency if worth else ""
    unit = f" ({_text(currency)})" if currency else ""
    for index, (split, (y, score)) in enumerate(splits.items()):
        cuts, totals = metrics.value_curve(y, score, worth[split], split=split)
        best, best_total = metrics.best_threshold(y, score, worth[split], split=split)
        per_1000 = totals / len(y) * 1000
        colour = _colour(split, index)
        axes.plot(cuts, per_1000, color=colour, label=split)
        axes.plot(
            [best],
            [best_total / len(y) * 1000],
            marker="o",
            color=colour,
            linestyle="none",
            label=f"{split} best: {best_total / len(y) * 1000:,.4g} at {best:.3g}",
        )
    axes.axvline(
        threshold, color="black", linestyle="--", label=f"chosen threshold {threshold:.3g}"
    )
    axes.axhline(0, color="grey", linewidth=1)
    axes.set_xlim(0, _score_limit([score for _, score in splits.values()], threshold))
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_title("Business value of acting on score ≥ threshold")
    axes.set_xlabel("Threshold")
    axes.set_ylabel(f"Value per 1,000 rows{unit}")
    axes.legend(loc="best", fontsize="small")
    return figure


def importance_chart(importance: Sequence[tuple[str, float]], top: int = 30) -> Figure:
    ranked = sorted(importance, key=lambda item: -abs(item[1]))[:top]
    figure, axes = new_figure(height=max(HEIGHT, 1.0 + 0.22 * len(ranked)))
    positions = np.arange(len(ranked))[::-1]
    axes.barh(positions, [weight for _, weight in ranked], color="tab:blue")
    axes.set_yticks(positions, labels=[_text(name) for name, _ in ranked], fontsize="small")
    axes.grid(False, axis="y")
    axes.margins(y=0.01)
    shown = (
        f"top {len(ranked)} of {len(importance)}" if len(importance) > top else f"all {len(ranked)}"
    )
    axes.set_title(f"Feature importance ({shown})")
    axes.set_xlabel("Importance")
    return figure
