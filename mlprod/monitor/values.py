"""One monitoring number: what alerts check, the dashboard draws and ``/metrics`` exports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

MODEL = "model"  # the subject of a metric about the model rather than one feature


@dataclass(frozen=True)
class WindowKey:
    """A window of one model version and variant (``""`` when no experiment routed it)."""

    start: datetime  # naive UTC, inclusive
    end: datetime  # naive UTC, exclusive (count windows: just after their last prediction)
    model_name: str
    model_version: str
    variant: str = ""


class MetricValue(NamedTuple):
    """A metric of one window: a feature's (``subject`` = its name) or the model's. (A named
    tuple: a month of hourly windows has a hundred thousand of them.)"""

    window: WindowKey
    metric: str  # one of mlprod.project.monitoring.METRICS
    subject: str  # a feature name or MODEL
    value: float | None  # None: not computable (too few rows, no labels yet)
    lower: float | None = None  # confidence interval or bounds, where the metric has them
    upper: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data["window"] = asdict(self.window)
        data["window"]["start"] = self.window.start.isoformat()
        data["window"]["end"] = self.window.end.isoformat()
        return data
