"""The evaluation report: one self-contained HTML file for people, and the metrics behind it.

The page needs nothing from the network: the style sheet is inline and every chart is a PNG
embedded as base64. Every string that comes from the user (model, feature and column names,
notes, dataset descriptions) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mlprod.evaluate import _html, plots
from mlprod.evaluate.metrics import check_scores, confusion_at, lift_table, summarize
from mlprod.evaluate.value import OutcomeValues
from mlprod.project.training import OUTCOMES, ValueConfig

BASELINE_KEYS = ("name", "auc", "difference", "difference_ci")


@dataclass(frozen=True)
class Scores:
    """One split's labels (0/1) and the model's scores (probabilities) for the same rows, and
    what each outcome is worth on them (needed when ``train.value`` has per-row values)."""

    y: ArrayLike
    score: ArrayLike
    worth: OutcomeValues | None = None


@dataclass
class ReportData:
    """Everything the report shows; ``baseline`` is ``metrics.compare_to_baseline``'s dict."""

    model_name: str
    version: str | None
    created: datetime
    datasets: dict[str, dict[str, Any]]
    validation: Scores
    test: Scores
    threshold: float
    value: ValueConfig | None = None
    importance: list[tuple[str, float]] = field(default_factory=list)
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    n_boot: int = 500
    seed: int = 0
    chosen: str | None = None  # the leaderboard row (``name``) to highlight; model_name if None
    folds: list[dict[str, Any]] = field(default_factory=list)  # under cross-validation, per fold
    threshold_rule: str | None = None  # how the threshold was chosen, said next to it
    warnings: list[str] = field(default_factory=list)  # shown first: leaks, reused test rows
    left_out: dict[str, int] | None = None  # spine events not in the matrix, by reason
    test_fingerprint: str | None = None  # which test rows; the registry counts looks at them
    test_looks_before: int = 0  # registered versions already tested on the same rows


@dataclass(frozen=True)
class _Section:
    anchor: str
    title: str
    body: str


def render_report(data: ReportData, path: Path) -> dict[str, Any]:
    """Write the report to ``path`` and return its metrics (what the caller saves as JSON)."""
    if data.baseline is not None:
        missing = [key for key in BASELINE_KEYS if key not in data.baseline]
        if missing:
            raise ValueError(f"ReportData.baseline lacks {missing}; use compare_to_baseline()")
    splits = {
        "validation": check_scores(data.validation.y, data.validation.score, split="validation"),
        "test": check_scores(data.test.y, data.test.score, split="test"),
    }
    worth = {
        "validation": _worth(data.value, data.validation),
        "test": _worth(data.value, data.test),
    }
    summaries = {
        name: summarize(
            y, score, data.threshold, worth[name], n_boot=data.n_boot, seed=data.seed, split=name
        )
        for name, (y, score) in splits.items()
    }
    metrics: dict[str, Any] = {
        "model": data.model_name,
        "version": data.version,
        "created": data.created.isoformat(),
        "threshold": float(data.threshold),
        "threshold_rule": data.threshold_rule,
        "warnings": list(data.warnings),
        "left_out": data.left_out,
        "test_set": {"fingerprint": data.test_fingerprint, "used_before": data.test_looks_before},
        "validation": summaries["validation"],
        "test": summaries["test"],
        "baseline": data.baseline,
    }
    if data.folds:
        metrics["folds"] = data.folds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(data, metrics, splits, worth), encoding="utf-8")
    return metrics


def test_set_used(looks: int) -> str:
    """``test set used 2 times before``: how often earlier versions saw the same test rows."""
    return f"test set used {looks} {'time' if looks == 1 else 'times'} before"


def _worth(value: ValueConfig | None, scores: Scores) -> OutcomeValues | None:
    if value is None:
        return None
    return scores.worth if scores.worth is not None else OutcomeValues.of(value)


def _ci(pair: Sequence[float], signed: bool = False) -> str:
    low, high = pair
    return f"{low:+.3f} to {high:+.3f}" if signed else f"{low:.3f} to {high:.3f}"


def _money(amount: float, currency: str) -> str:
    return _html.escape(f"{amount:,.0f} {currency}".strip())


def _card(label: str, number: str, detail: str) -> str:
    return f'<div class="card"><div>{label}</div><strong>{number}</strong><p>{detail}</p></div>'


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "better than the baseline"
    if high < 0:
        return "worse than the baseline"
    return "not distinguishable from the baseline"


def _headline(data: ReportData, metrics: dict[str, Any]) -> str:
    test, validation = metrics["test"], metrics["validation"]
    level = f"{test['auc_ci_level']:.0%}"
    cards = [
        _card(
            "Test AUC",
            f"{test['auc']:.3f}",
            f"{level} CI {_ci(test['auc_ci'])}; validation {validation['auc']:.3f}",
        ),
        _card(
            "Threshold",
            f"{data.threshold:.3g}",
            f"flags {test['acted_share']:.1%} of test rows (score ≥ threshold)"
            + (f"; chosen by {_html.escape(data.threshold_rule)}" if data.threshold_rule else ""),
        ),
    ]
    if test["value"] is not None:
        value = test["value"]
        cards.append(
            _card(
                "Test value per 1,000 rows",
                _money(value["per_1000_rows"], value["currency"]),
                f"{_money(value['total'], value['currency'])} in total on {test['rows']:,} rows",
            )
        )
    if data.baseline is not None:
        base = data.baseline
        low, high = base["difference_ci"]
        cards.append(
            _card(
                f"AUC over {_html.escape(base['name'])}",
                f"{base['difference']:+.3f}",
                f"baseline AUC {base['auc']:.3f}; {level} CI {_ci((low, high), signed=True)}: "
                f"{_verdict(low, high)}",
            )
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _split_table(metrics: dict[str, Any]) -> str:
    names = ("validation", "test")
    rows: list[tuple[str, Any]] = [
        ("Rows", lambda s: f"{s['rows']:,}"),
        ("Positives", lambda s: f"{s['positives']:,} ({s['positive_rate']:.1%})"),
        ("AUC", lambda s: f"{s['auc']:.4f}"),
        (f"AUC {metrics['test']['auc_ci_level']:.0%} CI", lambda s: _ci(s["auc_ci"])),
        ("PR AUC (average precision)", lambda s: f"{s['pr_auc']:.4f}"),
        ("Brier score", lambda s: f"{s['brier']:.4f}"),
        ("Log loss", lambda s: f"{s['log_loss']:.4f}"),
        ("KS", lambda s: f"{s['ks']:.3f}"),
        ("Flagged at the threshold", lambda s: f"{s['acted_share']:.1%}"),
    ]
    if metrics["test"]["value"] is not None:
        rows.append(
            (
                "Value per 1,000 rows",
                lambda s: _money(s["value"]["per_1000_rows"], s["value"]["currency"]),
            )
        )
    return _html.render_table(
        ["", *names], [[label, *(show(metrics[name]) for name in names)] for label, show in rows]
    )


def _lift(table: Sequence[dict[str, Any]]) -> str:
    header = ["Group", "Rows", "Scores", "Positive rate", "Lift", "Rows so far"]
    header += ["Positives caught so far (gain)", "Cumulative lift"]
    rows = [
        [
            str(row["bin"]),
            f"{row['rows']:,}",
            f"{row['min_score']:.3f} to {row['max_score']:.3f}",
            f"{row['rate']:.1%}",
            f"{row['lift']:.2f}",
            f"{row['cumulative_rows_share']:.1%}",
            f"{row['cumulative_gain']:.1%}",
            f"{row['cumulative_lift']:.2f}",
        ]
        for row in table
    ]
    return _html.render_table(header, rows)


def _baseline(base: dict[str, Any], model_auc: float) -> str:
    level = f"{base.get('level', 0.95):.0%}"
    low, high = base["difference_ci"]
    table = _html.render_table(
        ["Baseline", "Baseline test AUC", "Model test AUC", "Difference", f"{level} CI", ""],
        [
            [
                _html.escape(base["name"]),
                f"{base['auc']:.4f}",
                f"{model_auc:.4f}",
                f"{base['difference']:+.4f}",
                f"{low:+.4f} to {high:+.4f}",
                _verdict(low, high),
            ]
        ],
    )
    note = "<p>Paired bootstrap: both models are scored on the same resampled test rows.</p>"
    return table + note


def _confusion(split: str, confusion: dict[str, int]) -> str:
    tp, fp, fn, tn = (confusion[key] for key in ("tp", "fp", "fn", "tn"))
    precision = f"{tp / (tp + fp):.1%}" if tp + fp else "—"
    recall = f"{tp / (tp + fn):.1%}" if tp + fn else "—"
    table = _html.render_table(
        [_html.escape(split), "flagged (score ≥ threshold)", "not flagged"],
        [
            ["actual positive", f"TP {tp:,}", f"FN {fn:,}"],
            ["actual negative", f"FP {fp:,}", f"TN {tn:,}"],
        ],
    )
    return f"<div>{table}<p>Precision {precision}, recall {recall}.</p></div>"


# Why spine events are not rows of the training matrix, as summaries and the report name them.
LEFT_OUT = {
    "label_pending": "label not yet known",
    "label_missing": "label is null",
    "no_time": "no prediction time",
}


def _data_section(data: ReportData) -> str:
    splits = _html.render_records(
        [{"split": name, **about} for name, about in data.datasets.items()]
    )
    if data.left_out is not None:
        counts = "; ".join(
            f"{LEFT_OUT.get(reason, reason)}: {count:,}" for reason, count in data.left_out.items()
        )
        splits += f"<p>Spine events left out of the training matrix: {_html.escape(counts)}.</p>"
    if data.test_fingerprint is not None:
        splits += (
            f"<p>Test rows fingerprint {_html.escape(data.test_fingerprint)}: "
            f"{test_set_used(data.test_looks_before)}.</p>"
        )
    if not data.folds:
        return splits
    return (
        splits + f"<p>Cross-validation: {len(data.folds)} folds. The validation scores are "
        "out-of-fold (each fold scored by models that did not train on it); the model "
        "deployed averages the fold models.</p>" + _html.render_records(data.folds)
    )


_OUTCOME_NAMES = {
    "tp": "true positive: acted on, turned out positive",
    "fp": "false positive: acted on, turned out negative",
    "fn": "false negative: left alone, turned out positive",
    "tn": "true negative: left alone, turned out negative",
}


def _known(worth: dict[str, OutcomeValues | None]) -> dict[str, OutcomeValues]:
    return {name: values for name, values in worth.items() if values is not None}


def _worth_table(value: ValueConfig, worth: dict[str, OutcomeValues], splits: plots.Splits) -> str:
    """The configured worth of each outcome; with per-row values, their mean in each split over
    the rows where the outcome can happen (positives for tp and fn, negatives for fp and tn)."""
    names = [name for name in worth if name in splits] if value.expressions() else []
    header = ["Outcome", "Worth", *(f"Mean on {name} rows" for name in names)]
    rows = []
    for outcome in OUTCOMES:
        configured = getattr(value, outcome)
        shown = (
            f"<code>{_html.escape(configured)}</code>"
            if isinstance(configured, str)
            else _html.format_number(configured)
        )
        means = []
        for name in names:
            y = splits[name][0]
            can_happen = (y == 1) if outcome in ("tp", "fn") else (y == 0)
            amounts = np.broadcast_to(getattr(worth[name], outcome), y.shape)[can_happen]
            means.append(_html.format_number(float(amounts.mean())) if amounts.size else "—")
        rows.append([f"{outcome} ({_html.escape(_OUTCOME_NAMES[outcome])})", shown, *means])
    notes = (
        "<p>Means are over the rows where each outcome can happen: the positives for tp and fn, "
        "the negatives for fp and tn.</p>"
        if names
        else ""
    )
    if value.currency:
        notes += f"<p>Amounts in {_html.escape(value.currency)}.</p>"
    return _html.render_table(header, rows) + notes


def _sections(
    data: ReportData,
    metrics: dict[str, Any],
    splits: plots.Splits,
    worth: dict[str, OutcomeValues | None],
) -> list[_Section]:
    y_test, score_test = splits["test"]
    sections = [
        _Section("headline", "Headline", _headline(data, metrics)),
        _Section("data", "Data", _data_section(data)),
        _Section("metrics", "Metrics by split", _split_table(metrics)),
        _Section(
            "ranking",
            "ROC and precision-recall",
            _html.embed_charts(
                (plots.roc_chart(splits), "ROC curves"),
                (plots.pr_chart(splits), "Precision-recall curves"),
            ),
        ),
        _Section(
            "distribution",
            "Score distributions",
            _html.embed_charts(
                (
                    plots.distribution_chart(y_test, score_test, data.threshold, "test"),
                    "Score histograms per class",
                )
            ),
        ),
        _Section(
            "calibration",
            "Calibration",
            _html.embed_charts((plots.calibration_chart(splits), "Calibration curves"))
            + "<p>Points on the diagonal mean the scores can be read as probabilities. "
            "The Brier score is the mean squared error of the scores (lower is better).</p>",
        ),
        _Section(
            "lift",
            "Lift, gains and KS",
            _html.embed_charts(
                (plots.gains_chart(splits), "Cumulative gains"),
                (plots.ks_chart(y_test, score_test, "test"), "KS chart"),
            )
            + "<p>Test rows ranked by score, highest first, in ten groups.</p>"
            + _lift(lift_table(y_test, score_test, split="test")),
        ),
        _Section(
            "confusion",
            f"Confusion matrix at threshold {data.threshold:.3g}",
            '<div class="charts">'
            + "".join(
                _confusion(name, confusion_at(y, score, data.threshold))
                for name, (y, score) in splits.items()
            )
            + "</div>",
        ),
    ]
    if data.value is not None:
        chart = plots.value_chart(splits, _known(worth), data.threshold)
        body = (
            _html.embed_charts((chart, "Value by threshold"))
            + "<p>What each outcome is worth:</p>"
            + _worth_table(data.value, _known(worth), splits)
        )
    else:
        body = "<p>No value matrix is configured (<code>train.value</code> in mlprod.yaml).</p>"
    sections.append(_Section("value", "Business value by threshold", body))
    if data.importance:
        chart = plots.importance_chart(data.importance)
        sections.append(
            _Section(
                "importance",
                "Feature importance",
                _html.embed_charts((chart, "Feature importance")),
            )
        )
    if data.leaderboard:
        name = data.chosen or data.model_name
        chosen = next(
            (i for i, row in enumerate(data.leaderboard) if row.get("name") == name), None
        )
        sections.append(
            _Section(
                "leaderboard", "Candidate models", _html.render_records(data.leaderboard, chosen)
            )
        )
    if data.baseline is not None:
        body = _baseline(data.baseline, metrics["test"]["auc"])
        sections.append(_Section("baseline", "Baseline comparison", body))
    if data.notes:
        items = "".join(f"<li>{_html.escape(note)}</li>" for note in data.notes)
        sections.append(_Section("notes", "Notes", f"<ul>{items}</ul>"))
    if data.warnings:
        items = "".join(f"<li>{_html.escape(warning)}</li>" for warning in data.warnings)
        sections.insert(0, _Section("warnings", "Warnings", f'<ul class="warnings">{items}</ul>'))
    return sections


def _page(
    data: ReportData,
    metrics: dict[str, Any],
    splits: plots.Splits,
    worth: dict[str, OutcomeValues | None],
) -> str:
    sections = _sections(data, metrics, splits, worth)
    title = _html.escape(data.model_name + (f" version {data.version}" if data.version else ""))
    created = _html.escape(data.created.isoformat(sep=" ", timespec="seconds"))
    nav = "".join(f'<a href="#{s.anchor}">{s.title}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{s.title}</h2>{s.body}</section>' for s in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Evaluation of {title}</title><style>{_html.STYLE}</style></head><body>"
        f'<h1>Evaluation of {title}</h1><p class="meta">Created {created}; '
        f"intervals from {data.n_boot:,} bootstrap resamples (seed {data.seed}).</p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )
