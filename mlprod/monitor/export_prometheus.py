"""The config's alert rules as Prometheus alerting rules over the monitoring gauges.

For teams whose alerts go through Prometheus and Alertmanager rather than mlprod's sinks:
each rule of ``monitor.alerts`` becomes one alerting rule on the gauge
:mod:`mlprod.monitor.gauges` exports for its metric, restricted to the project's model (and
to the rule's feature, version and variant when it names them). A gauge shows the newest
window, open ones included, so a breach is visible while its first window is still open;
``for:`` is the rule's ``windows`` times the window length, which is when mlprod's own alert
would have counted as many closed windows. Count windows have no length: their rules fire
as soon as the gauge is past the threshold, and say so in their description.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml

from mlprod.monitor.alerts import describe, threshold
from mlprod.monitor.gauges import PREFIX, gauge_name, gauge_scale
from mlprod.project.config import ProjectConfig
from mlprod.project.monitoring import FEATURE_METRICS, AlertRule, CountWindow


def model_name(config: ProjectConfig) -> str:
    """The registered model's name: what the gauges' ``model`` label holds."""
    train = config.train
    return (train.registry_name if train else None) or config.name


def rules(config: ProjectConfig) -> str:
    """A Prometheus rules file (YAML) with one alerting rule per alert rule of ``config``."""
    model = model_name(config)
    window = config.monitor.window
    group = {
        "name": f"mlprod_{config.name}",
        "rules": [_rule(rule, model, window) for rule in config.monitor.alerts],
    }
    head = (
        f"# Alerting rules for the mlprod project '{config.name}', made by "
        "'mlprod export prometheus-rules'\n# from mlprod.yaml's monitor.alerts over the gauges "
        "'mlprod serve' exports on /metrics.\n"
    )
    return head + yaml.safe_dump({"groups": [group]}, sort_keys=False, width=10_000)


def _rule(rule: AlertRule, model: str, window: timedelta | CountWindow) -> dict[str, Any]:
    limit, direction = threshold(rule)
    matchers = {"model": model}
    if rule.metric in FEATURE_METRICS and rule.feature != "*":
        assert rule.feature is not None
        matchers["feature"] = rule.feature
    if rule.model_version is not None:
        matchers["version"] = rule.model_version
    if rule.variant is not None:
        matchers["variant"] = rule.variant
    selector = ", ".join(f'{label}="{promql_string(value)}"' for label, value in matchers.items())
    operator = ">" if direction == "above" else "<"
    scaled = limit * gauge_scale(rule.metric)
    expr = f"{gauge_name(rule.metric)}{{{selector}}} {operator} {_number(scaled)}"
    description = describe(rule)
    entry: dict[str, Any] = {"alert": rule.name, "expr": expr}
    if isinstance(window, timedelta):
        entry["for"] = _duration(window * rule.windows)
    else:
        description += (
            f" (windows are counts of predictions: Prometheus fires as soon as the newest "
            f"window is {direction} the threshold)"
        )
    feature = " of {{ $labels.feature }}" if rule.metric in FEATURE_METRICS else ""
    shown = gauge_name(rule.metric).removeprefix(PREFIX)
    variant = "{{ if $labels.variant }} variant {{ $labels.variant }}{{ end }}"
    entry["labels"] = {"severity": rule.severity}
    entry["annotations"] = {
        "summary": (
            f'{shown}{feature} is {{{{ $value | printf "%.4g" }}}} ({direction} '
            f"{_number(scaled)}) for {{{{ $labels.model }}}} version {{{{ $labels.version }}}}"
            f"{variant}"
        ),
        "description": description,
    }
    return entry


def promql_string(value: str) -> str:
    """A PromQL string body: backslashes and double quotes escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))


_UNITS = (("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000))


def _duration(span: timedelta) -> str:
    """A Prometheus duration (``2h``, ``90m``, ``1500ms``): the largest unit that is exact."""
    ms = span // timedelta(milliseconds=1)
    for suffix, size in (*_UNITS, ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{suffix}"
    return f"{ms}ms"
