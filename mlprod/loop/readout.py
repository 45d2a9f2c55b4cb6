"""A champion-challenger comparison as people read it: the window, AUC and value of both
models with their intervals, the gain and how sure the bootstrap is of it, the decision and
why, and what the retrain changed (the alias, the rollout)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mlprod.loop.compare import Comparison, Difference


def describe_comparison(
    model: str,
    champion: int,
    challenger: int,
    window: dict[str, Any],
    comparison: Comparison,
    decision: dict[str, Any],
    valid_ends: dict[str, datetime],
    *,
    alias: str | None = None,
    rollout: dict[str, Any] | None = None,
    rollout_error: str | None = None,
    currency: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The readout, a few lines of plain text."""
    start, end = (datetime.fromisoformat(window[k]) for k in ("start", "end"))
    level = f"{comparison.level:.0%} CI"
    lines = [
        f"challenger {model}/{challenger} against champion {model}/{champion}",
        f"window: {window['rows']:,} labelled events predicted {_when(start)} to {_when(end)} "
        f"({window['positives']:,} positive); the champion validated up to "
        f"{_when(valid_ends['champion'])} and the challenger up to "
        f"{_when(valid_ends['challenger'])}, so neither trained on it",
        _line("AUC", comparison.auc, level, lambda v: f"{v:.4f}", lambda v: f"{v:+.4f}"),
    ]
    if comparison.value is not None:
        unit = f" {currency}" if currency else ""
        lines.append(
            _line(
                f"value{unit} (champion at threshold {comparison.champion_threshold:.4f}, "
                f"challenger at {comparison.challenger_threshold:.4f})",
                comparison.value,
                level,
                lambda v: f"{v:,.0f}",
                lambda v: f"{v:+,.0f}",
            )
        )
    else:
        lines.append("value: not compared (the project has no train.value)")
    lines.append(
        f"paired bootstrap: {comparison.n_boot:,} resamples of the window's rows, seed "
        f"{comparison.seed}"
    )
    verdict = "accepted" if decision["accepted"] else "not accepted (the champion stays)"
    lines.append(f"decision: challenger {verdict}: " + "; ".join(decision["reasons"]))
    if alias is not None:
        lines.append(f"alias: {model}@{alias} -> version {challenger}")
    if rollout is not None:
        steps = ",".join(str(s) for s in rollout["steps"])
        lines.append(
            f"rollout {rollout['rollout_id']} started: {rollout['challenger']} against "
            f"{rollout['control']}, steps {steps}% (see 'mlprod rollout status')"
        )
    if rollout_error is not None:
        lines.append(f"rollout not started: {rollout_error}")
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)


def _line(
    heading: str,
    difference: Difference,
    level: str,
    show: Any,
    signed: Any,
) -> str:
    low, high = difference.ci
    return (
        f"{heading}: champion {show(difference.champion)} "
        f"[{show(difference.champion_ci[0])}, {show(difference.champion_ci[1])}], challenger "
        f"{show(difference.challenger)} [{show(difference.challenger_ci[0])}, "
        f"{show(difference.challenger_ci[1])}]; gain {signed(difference.difference)} "
        f"({level} {signed(low)} to {signed(high)}), P(challenger better) "
        f"{difference.p_better:.3f}"
    )


def _when(value: datetime) -> str:
    if value.time() == datetime.min.time():
        return f"{value:%Y-%m-%d}"
    return f"{value:%Y-%m-%d %H:%M}"
