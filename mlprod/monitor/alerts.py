"""Alert rules applied to monitoring windows: when an alert fires, when it resolves.

An alert is one rule on one subject (a feature, or the model) of one model version and
variant. Only closed windows count, each once: the stored state remembers the end of the last
window it counted, so running the monitor again over the same windows changes nothing and
sends nothing. A rule fires after ``windows`` closed windows in a row past its threshold
(strictly above ``above``, strictly below ``below``) and resolves at the first closed window
back within; while it fires it is not sent again. A window whose metric could not be computed
(too few rows, no labels yet) neither extends nor breaks the run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from mlprod.monitor.alert_state import AlertKey, AlertState, AlertStateStore
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.project.monitoring import FEATURE_METRICS, AlertRule

EventKind = Literal["firing", "resolved"]


@dataclass(frozen=True)
class AlertEvent:
    """A transition of one alert, as the sinks send it."""

    kind: EventKind
    rule: str
    severity: str
    metric: str
    subject: str  # a feature name, or "model"
    model_name: str
    model_version: str
    variant: str
    value: float  # the metric in the window that made the transition
    threshold: float
    direction: Literal["above", "below"]
    window_start: datetime  # naive UTC
    window_end: datetime
    description: str
    at: datetime  # when the monitor saw it (naive UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "severity": self.severity,
            "metric": self.metric,
            "subject": self.subject,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "variant": self.variant,
            "value": self.value,
            "threshold": self.threshold,
            "direction": self.direction,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "description": self.description,
            "at": self.at.isoformat(),
        }

    def line(self) -> str:
        """One line for a person: what, how far, where."""
        sign = ">" if self.direction == "above" else "<"
        if self.kind == "resolved":
            sign = "<=" if self.direction == "above" else ">="
        about = "" if self.subject == MODEL else f" of {self.subject}"
        variant = f" variant {self.variant}" if self.variant else ""
        return (
            f"alert {self.kind.upper()} [{self.severity}] {self.rule}: {self.metric}{about} = "
            f"{self.value:.4g} {sign} {self.threshold:g} ({self.model_name} version "
            f"{self.model_version}{variant}, window {self.window_start:%Y-%m-%d %H:%M} to "
            f"{self.window_end:%Y-%m-%d %H:%M} UTC)"
        )


def threshold(rule: AlertRule) -> tuple[float, Literal["above", "below"]]:
    """The rule's threshold and which side of it is a breach."""
    if rule.above is not None:
        return rule.above, "above"
    assert rule.below is not None  # the config requires exactly one
    return rule.below, "below"


def describe(rule: AlertRule) -> str:
    """The rule's own description, else one made from its parts."""
    if rule.description:
        return rule.description
    limit, direction = threshold(rule)
    about = ""
    if rule.metric in FEATURE_METRICS:
        about = " of any feature" if rule.feature == "*" else f" of {rule.feature}"
    runs = "a closed window" if rule.windows == 1 else f"{rule.windows} closed windows in a row"
    return f"{rule.metric}{about} {direction} {limit:g} in {runs}"


def _applies(rule: AlertRule, value: MetricValue) -> bool:
    if value.metric != rule.metric:
        return False
    if rule.metric in FEATURE_METRICS:
        wanted = value.subject != MODEL if rule.feature == "*" else value.subject == rule.feature
    else:
        wanted = value.subject == MODEL
    return (
        wanted
        and rule.model_version in (None, value.window.model_version)
        and rule.variant in (None, value.window.variant)
    )


def _series(
    rules: Iterable[AlertRule], metrics: Iterable[MetricValue], closed: Collection[WindowKey]
) -> dict[AlertKey, list[MetricValue]]:
    """The closed windows each alert looks at, oldest first."""
    by_metric: dict[str, list[AlertRule]] = defaultdict(list)
    for rule in rules:
        by_metric[rule.metric].append(rule)
    found: dict[AlertKey, list[MetricValue]] = defaultdict(list)
    # Closed or not, by window object (kept alive here, so its id stays its own): hashing a
    # WindowKey for every value costs more than the rest of the pass.
    is_closed: dict[int, tuple[WindowKey, bool]] = {}
    for value in metrics:
        candidates = by_metric.get(value.metric)
        if not candidates:
            continue
        w = value.window
        known = is_closed.get(id(w))
        if known is None:
            known = is_closed[id(w)] = (w, w in closed)
        if not known[1]:
            continue
        for rule in candidates:
            if _applies(rule, value):
                key = AlertKey(rule.name, value.subject, w.model_name, w.model_version, w.variant)
                found[key].append(value)
    for values in found.values():
        values.sort(key=lambda v: (v.window.end, v.window.start))
    return dict(found)


def _count(
    rule: AlertRule, state: AlertState, values: list[MetricValue], at: datetime
) -> tuple[AlertState, list[AlertEvent]]:
    """Count the closed windows of one alert that no run has counted yet, oldest first."""
    limit, direction = threshold(rule)
    above = direction == "above"
    status, consecutive = state.status, state.consecutive
    counted_until, latest = state.counted_until, state.value
    fired_at, resolved_at = state.fired_at, state.resolved_at
    events: list[AlertEvent] = []
    for value in values:
        number, w = value.value, value.window
        if counted_until is not None and w.end <= counted_until:
            continue  # counted by an earlier run
        if number is None or math.isnan(number):
            continue  # not computable: neither counts up nor resets
        counted_until, latest = w.end, number
        kind: EventKind | None = None
        if (number > limit) if above else (number < limit):
            consecutive += 1
            if status != "firing" and consecutive >= rule.windows:
                status, fired_at, kind = "firing", at, "firing"
        else:
            consecutive = 0
            if status == "firing":
                status, resolved_at, kind = "resolved", at, "resolved"
        if kind is not None:
            events.append(_event(kind, rule, value, number, limit, direction, at))
    counted = replace(
        state,
        severity=rule.severity,
        status=status,
        consecutive=consecutive,
        counted_until=counted_until,
        fired_at=fired_at,
        resolved_at=resolved_at,
        value=latest,
    )
    return counted, events


def _event(
    kind: EventKind,
    rule: AlertRule,
    value: MetricValue,
    number: float,
    limit: float,
    direction: Literal["above", "below"],
    at: datetime,
) -> AlertEvent:
    w = value.window
    return AlertEvent(
        kind=kind,
        rule=rule.name,
        severity=rule.severity,
        metric=rule.metric,
        subject=value.subject,
        model_name=w.model_name,
        model_version=w.model_version,
        variant=w.variant,
        value=number,
        threshold=limit,
        direction=direction,
        window_start=w.start,
        window_end=w.end,
        description=describe(rule),
        at=at,
    )


def evaluate(
    rules: Iterable[AlertRule],
    metrics: Iterable[MetricValue],
    closed: Collection[WindowKey],
    store: AlertStateStore,
    *,
    now: datetime | None = None,
) -> list[AlertEvent]:
    """Apply ``rules`` to the closed windows of ``metrics`` not counted yet, update the stored
    states, and return the transitions, oldest window first.

    ``closed`` should be a set: it is asked about every metric. ``now`` (default: the clock)
    stamps the transitions.
    """
    rules = list(rules)
    by_name = {rule.name: rule for rule in rules}
    at = _naive_utc(now if now is not None else datetime.now(UTC))
    series = _series(rules, metrics, closed)
    events: list[AlertEvent] = []
    with store.changing() as states:
        for key, values in series.items():
            rule = by_name[key.rule]
            state = states.get(key) or AlertState(*key, severity=rule.severity)
            states[key], found = _count(rule, state, values, at)
            events += found
    order = {rule.name: i for i, rule in enumerate(rules)}
    events.sort(key=lambda e: (e.window_end, order[e.rule], e.subject, e.model_version, e.variant))
    return events


def firing(store: AlertStateStore, rules: Iterable[AlertRule] | None = None) -> list[AlertState]:
    """The alerts firing now (of ``rules`` only, when given: a rule removed from the config
    no longer counts)."""
    names = None if rules is None else {rule.name for rule in rules}
    return [
        state
        for state in store.states()
        if state.status == "firing" and (names is None or state.rule in names)
    ]


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at
