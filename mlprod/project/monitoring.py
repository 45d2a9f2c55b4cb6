"""The ``monitor:`` and ``retrain:`` sections of ``mlprod.yaml``: how live traffic is watched,
when to raise an alert and where to send it, and what a retrain may do on its own.

.. code-block:: yaml

    monitor:
      window: 1h                 # or {count: 5000}: one window per 5,000 predictions
      drift: {ks_alpha: 0.01, ks_min_effect: 0.1}
      alerts:
        - {name: delay_drift, metric: psi, feature: carrier_origin_mean_delay_7d, above: 0.2,
           windows: 2, severity: warning}
        - {name: live_auc, metric: auc, below: 0.65, severity: critical}
      sinks:
        - {kind: webhook, url: "http://127.0.0.1:9000/hook"}
        - {kind: file, path: .mlprod/alerts.log}
        - {kind: stderr}
    retrain:
      policy: {min_auc_gain: 0.0, set_alias: challenger, rollout: true}
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, model_validator

from mlprod.project.base import Duration, Identifier, Strict

# Every metric a window yields, by what it is about: the model ("model") or one feature.
FEATURE_METRICS = (
    "psi",  # population stability index on the reference's decile bins
    "wasserstein",  # Wasserstein-1 distance divided by the reference's standard deviation
    "jensen_shannon",  # Jensen-Shannon distance (base 2) of categorical level shares
    "ks_statistic",  # two-sample Kolmogorov-Smirnov D against the reference
    "ks_drift",  # 1 when KS is significant (p < ks_alpha) and D >= ks_min_effect, else 0
    "null_rate",
    "null_rate_change",  # window null rate minus the reference's
    "unseen_share",  # share of values in levels the reference never saw (categoricals)
    "out_of_range_share",  # share of values below the reference min or above its max
)
MODEL_METRICS = (
    "rows",  # predictions in the window (volume)
    "volume_change",  # rows relative to the median of the previous windows, minus 1
    "score_psi",
    "score_mean",
    "score_p10",
    "score_p50",
    "score_p90",
    "decision_rate",
    "decision_rate_change",  # decision rate minus the reference's
    "latency_p50_ms",
    "latency_p99_ms",
    "labelled",  # predictions whose outcome has joined
    "positive_rate",
    "auc",  # with a confidence interval
    "log_loss",  # with a confidence interval
    "calibration_error",  # expected calibration error over ten score bins
    "value",  # business value at the deployed threshold, with a confidence interval
    "value_per_prediction",
    "estimated_auc",  # before outcomes: from the calibrated scores, with bounds
)
METRICS = FEATURE_METRICS + MODEL_METRICS


class CountWindow(Strict):
    count: int = Field(ge=10, description="Predictions per window, per model version and variant.")


class DriftSettings(Strict):
    ks_alpha: float = Field(0.01, gt=0, lt=1, description="Significance level of the KS test.")
    ks_min_effect: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Smallest KS distance that counts as drift, so that a large window does "
        "not alarm on a trivial shift.",
    )
    min_rows: int = Field(
        100, ge=1, description="Windows with fewer predictions yield no drift numbers."
    )


class AlertRule(Strict):
    """Fire when a metric crosses a threshold in ``windows`` consecutive windows."""

    name: Identifier
    metric: Literal[METRICS]  # type: ignore[valid-type]
    feature: str | None = Field(
        None,
        description="The feature a feature metric is about; '*' means any feature (one alert "
        "per feature). Model metrics take none.",
    )
    above: float | None = None
    below: float | None = None
    windows: int = Field(1, ge=1, description="Consecutive windows past the threshold.")
    severity: Literal["info", "warning", "critical"] = "warning"
    model_version: str | None = Field(None, description="Only this version (default: every one).")
    variant: str | None = Field(None, description="Only this variant (default: every one).")
    description: str = ""

    @model_validator(mode="after")
    def _one_threshold_and_subject(self) -> AlertRule:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"alert '{self.name}': give exactly one of 'above' and 'below'")
        if self.metric in FEATURE_METRICS and self.feature is None:
            raise ValueError(
                f"alert '{self.name}': metric '{self.metric}' is about a feature; add "
                "feature: NAME (or '*' for every feature)"
            )
        if self.metric in MODEL_METRICS and self.feature is not None:
            raise ValueError(
                f"alert '{self.name}': metric '{self.metric}' is about the model; remove feature"
            )
        return self


class WebhookSink(Strict):
    kind: Literal["webhook"]
    url: str = Field(description="http(s):// address that receives each alert as a JSON POST.")
    retries: int = Field(5, ge=0, le=20, description="Attempts after the first one fails.")
    backoff: Duration = Field(timedelta(seconds=0.5), description="First wait; doubled each retry.")
    timeout: Duration = Field(timedelta(seconds=5))


class FileSink(Strict):
    kind: Literal["file"]
    path: str = Field(".mlprod/alerts.log", description="JSON lines, relative to the project.")


class StderrSink(Strict):
    kind: Literal["stderr"]


Sink = Annotated[WebhookSink | FileSink | StderrSink, Field(discriminator="kind")]


def _default_sinks() -> list[Sink]:
    return [StderrSink(kind="stderr")]


class MonitorConfig(Strict):
    """How live traffic is watched (``monitor:``)."""

    window: Duration | CountWindow = Field(
        timedelta(hours=1),
        description="A window per time span (1h, 1d), or {count: N} per N predictions.",
    )
    drift: DriftSettings = Field(default_factory=DriftSettings)
    alerts: list[AlertRule] = Field(default_factory=list)
    sinks: list[Sink] = Field(default_factory=lambda: _default_sinks())
    interval: Duration = Field(
        timedelta(minutes=5), description="How often `mlprod watch` runs the monitor."
    )

    @model_validator(mode="after")
    def _unique_alert_names(self) -> MonitorConfig:
        names = [rule.name for rule in self.alerts]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"alert names must be unique; repeated: {', '.join(repeated)}")
        return self


class RetrainPolicy(Strict):
    """What a retrain may do with a challenger that beats the champion."""

    min_auc_gain: float = Field(
        0.0, description="The challenger's AUC must beat the champion's by this much."
    )
    min_value_gain: float | None = Field(
        None, description="The challenger's business value must beat the champion's by this."
    )
    confidence: float = Field(
        0.9, gt=0, lt=1, description="How sure the paired bootstrap must be of the gain."
    )
    set_alias: Identifier | None = Field(
        "challenger", description="The alias a winning challenger gets (None: register only)."
    )
    rollout: bool = Field(
        False, description="Start a rollout (deploy: section's steps) for a winning challenger."
    )


class RetrainConfig(Strict):
    """How ``mlprod retrain`` and ``mlprod watch`` retrain (``retrain:``)."""

    policy: RetrainPolicy = Field(default_factory=RetrainPolicy)
    retune: bool = Field(False, description="Tune the hyperparameters again.")
    schedule: Duration | None = Field(
        None, description="`mlprod watch` retrains this often (None: only by hand or alert)."
    )
    on_alerts: list[Identifier] = Field(
        default_factory=list, description="Retrain when one of these alerts fires."
    )
    comparison_window: Duration = Field(
        timedelta(days=14),
        description="The most recent span of labelled events that neither model trained on.",
    )
