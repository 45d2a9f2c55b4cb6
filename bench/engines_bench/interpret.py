"""The plain reading of the results, from the numbers measured (filled in as they come)."""

from __future__ import annotations

from typing import Any


def interpret(results: dict[str, Any]) -> list[str]:
    from .report import TARGET, _best, _entries, ratio

    lines = []
    for e in _entries(results):
        r = ratio(e)
        if r is None:
            why = e["mlprod"].get("error") or e["sql"].get("error") or "a run failed"
            lines.append(f"- {e['scale']}x {e['engine']}: no ratio ({why}).")
            continue
        verdict = "meets" if r <= TARGET else "misses"
        ours = _best(e["mlprod"])
        lines.append(
            f"- {e['scale']}x {e['engine']}: mlprod {ours['seconds']:.1f} s, "
            f"{r:.2f}x the hand SQL ({verdict} the {TARGET}x target)."
        )
    return lines
