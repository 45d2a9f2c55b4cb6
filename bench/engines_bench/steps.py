"""Where mlprod's build time goes: its ``Matrix.steps`` (one per stage of the plan), grouped.

Stage names come from the compiler: ``__spine``, ``__agg_<i>_...`` (running totals and the
tables they need, marked ``prepares``), ``__agg_<i>_probe_<level>`` and ``__asof_...`` (the
as-of joins reading them), ``__level_<n>`` (expressions and lookups), ``result``.
"""

from __future__ import annotations

from typing import Any

GROUPS = (
    "sources read, checked; compile",
    "sources handed over",
    "spine",
    "running totals",
    "as-of joins",
    "levels",
    "result",
    "other",
)


def group_of(step: dict[str, Any]) -> str:
    name: str = step["step"]
    if name == "sources, checks, compile":
        return GROUPS[0]
    if name == "sources to Spark":
        return GROUPS[1]
    if name == "__spine":
        return "spine"
    if name == "result":
        return "result"
    if name.startswith("__level"):
        return "levels"
    if name.startswith("__asof") or "_probe" in name:
        return "as-of joins"
    if step.get("prepares"):
        return "running totals"
    return "other"


def grouped(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per group, in ``GROUPS`` order, groups with no step left out."""
    seconds = dict.fromkeys(GROUPS, 0.0)
    seen: set[str] = set()
    for step in steps:
        group = group_of(step)
        seconds[group] += float(step["seconds"])
        seen.add(group)
    return {g: s for g, s in seconds.items() if g in seen}
