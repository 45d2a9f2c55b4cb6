"""The guardrails of a rollout step: is the challenger, on this step's live traffic, healthy?

Three checks, each against a limit from ``deploy.guardrails`` in ``mlprod.yaml``:

- **error rate**: the challenger's scoring failures (``mlprod_scoring_errors``, where the control
  answered instead) over its requests (its served predictions plus those failures);
- **p99 latency ratio**: the challenger's 99th percentile of ``latency_ms`` over the control's,
  both on the step's traffic (at a 100 % step the control serves nothing, so the control's p99
  measured on the step before stands in); it trips only when the challenger is also more than
  :data:`P99_SLACK_MS` slower;
- **score PSI**: the population stability index of the challenger's live scores against the
  validation scores it was trained with (the deciles its artefact records), on those deciles'
  bins, so every reference bin holds a tenth of the reference.

A step is judged once the challenger has ``min_requests`` requests; before that nothing trips,
as a p99 or a PSI of a handful of requests says nothing. Even then both are noisy: a PSI over 10
bins of n scores drawn from the reference itself averages about 9 / n (0.045 at the default
200), and a p99 of 200 latencies is their second largest. The requests of one hour share its
weather and its delays, so a step that lasts only minutes sees fewer independent cases than it
has requests, and a healthy challenger's PSI is higher than on a sample spread over the months
the reference describes: give steps time, and ``min_requests`` room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.serve.predlog import PredictionLog

# A p99 this much slower than the control's never trips, whatever the ratio: at a few
# milliseconds, a ratio is one scheduler hiccup or a cache still filling (measured: an identical
# challenger at 2-3x the control's p99 of 5 ms on a busy 2-core machine).
P99_SLACK_MS = 5.0
# A share of 0 in a PSI bin stands for this much, so one empty bin gives a large but finite index.
PSI_FLOOR = 1e-4
ERROR_RATE, P99_RATIO, SCORE_PSI = "error_rate", "p99_ratio", "score_psi"


@dataclass(frozen=True)
class GuardrailLimits:
    """When a step is judged and what trips it (``deploy.guardrails``)."""

    min_requests: int = 200
    max_error_rate: float = 0.01
    max_p99_ratio: float = 1.5
    max_score_psi: float = 0.2

    @classmethod
    def from_config(cls, config: Any | None) -> GuardrailLimits:
        """The limits of a ``deploy.guardrails`` section (an object or a mapping); defaults
        for what it leaves out."""
        if config is None:
            return cls()
        values = config if isinstance(config, Mapping) else vars(config)
        return cls.from_json(values)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardrailLimits:
        known = {k: data[k] for k in asdict(cls()) if data.get(k) is not None}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepTraffic:
    """What the challenger and the control did during one step."""

    challenger_scores: np.ndarray
    challenger_latency_ms: np.ndarray
    control_latency_ms: np.ndarray
    challenger_errors: int

    @property
    def requests(self) -> int:
        """Requests the challenger was asked to answer: answered plus failed."""
        return int(self.challenger_scores.size) + self.challenger_errors


@dataclass(frozen=True)
class Verdict:
    """The judgement of a step: whether it had enough traffic, and what tripped."""

    judged: bool  # min_requests reached
    tripped: tuple[tuple[str, str], ...]  # (guardrail, why) of each limit crossed
    measures: dict[str, float | None]

    @property
    def passed(self) -> bool:
        return self.judged and not self.tripped

    def reason(self) -> str:
        """One line for the log, the status and the audit trail."""
        return "; ".join(f"{name}: {why}" for name, why in self.tripped)


def psi(reference_deciles: Sequence[float], scores: Sequence[float] | np.ndarray) -> float:
    """The population stability index of ``scores`` against a reference given by its deciles.

    Bins are the reference's deciles, closed on the right, open-ended at both ends:
    ``(-inf, d1], (d1, d2], ..., (d9, inf)``, each holding a tenth of the reference. Where
    deciles tie (a point mass, common for calibrated scores), the empty bins' tenths go to the
    bin that ends at the tied value. PSI = sum over bins of (actual - expected) *
    ln(actual / expected), an empty actual bin counting as :data:`PSI_FLOOR`.
    """
    edges = np.asarray(reference_deciles, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    if edges.size < 2 or values.size == 0:
        raise ValueError("psi needs at least two reference quantiles and one score")
    inner = np.unique(edges[1:-1])
    bins = inner.size + 1
    # Each of the reference's intervals (q[j-1], q[j]] lands in the bin holding its right end.
    expected = np.bincount(np.searchsorted(inner, edges[1:], side="left"), minlength=bins).astype(
        np.float64
    )
    expected /= expected.sum()
    actual = np.bincount(np.searchsorted(inner, values, side="left"), minlength=bins) / values.size
    actual = np.maximum(actual, PSI_FLOOR)
    keep = expected > 0
    return float(np.sum((actual[keep] - expected[keep]) * np.log(actual[keep] / expected[keep])))


def p99(values: np.ndarray) -> float | None:
    return float(np.quantile(values, 0.99)) if values.size else None


def judge(
    traffic: StepTraffic,
    limits: GuardrailLimits,
    reference_deciles: Sequence[float] | None,
    control_p99_before: float | None = None,
) -> Verdict:
    """Judge a step's traffic against the limits (nothing trips before ``min_requests``).
    ``control_p99_before``: the control's p99 of an earlier step, for a step where the control
    serves nothing (100 %)."""
    requests = traffic.requests
    error_rate = traffic.challenger_errors / requests if requests else None
    challenger_p99 = p99(traffic.challenger_latency_ms)
    control_p99 = p99(traffic.control_latency_ms)
    if control_p99 is None:
        control_p99 = control_p99_before
    ratio = (
        challenger_p99 / control_p99
        if challenger_p99 is not None and control_p99 is not None and control_p99 > 0
        else None
    )
    score_psi = (
        psi(reference_deciles, traffic.challenger_scores)
        if reference_deciles and len(reference_deciles) >= 2 and traffic.challenger_scores.size
        else None
    )
    measures: dict[str, float | None] = {
        "requests": float(requests),
        ERROR_RATE: error_rate,
        "challenger_p99_ms": challenger_p99,
        "control_p99_ms": control_p99,
        P99_RATIO: ratio,
        SCORE_PSI: score_psi,
    }
    if requests < limits.min_requests:
        return Verdict(False, (), measures)
    tripped: list[tuple[str, str]] = []
    if error_rate is not None and error_rate > limits.max_error_rate:
        tripped.append(
            (
                ERROR_RATE,
                f"{traffic.challenger_errors} of {requests} challenger requests failed "
                f"({error_rate:.2%} > {limits.max_error_rate:.2%})",
            )
        )
    slower_ms = (challenger_p99 or 0.0) - (control_p99 or 0.0)
    if ratio is not None and ratio > limits.max_p99_ratio and slower_ms > P99_SLACK_MS:
        tripped.append(
            (
                P99_RATIO,
                f"challenger p99 latency {challenger_p99:.1f} ms is {ratio:.2f}x the control's "
                f"{control_p99:.1f} ms (limit {limits.max_p99_ratio:g}x)",
            )
        )
    if score_psi is not None and score_psi > limits.max_score_psi:
        tripped.append(
            (
                SCORE_PSI,
                f"the challenger's scores shifted from its training reference: PSI "
                f"{score_psi:.3f} > {limits.max_score_psi:g}",
            )
        )
    return Verdict(True, tuple(tripped), measures)


def step_traffic(
    log: PredictionLog, experiment: str, challenger: str, control: str, since: datetime
) -> StepTraffic:
    """The challenger's and the control's served traffic in ``experiment`` since ``since``."""
    served = _served(log.predictions(since=since, experiment=experiment))
    mine = served.filter(pc.equal(served["variant"], challenger))
    theirs = served.filter(pc.equal(served["variant"], control))
    errors = log.scoring_errors(since=since)
    failed = errors.filter(
        pc.and_(pc.equal(errors["experiment"], experiment), pc.equal(errors["variant"], challenger))
    )
    return StepTraffic(
        challenger_scores=_floats(mine["score"]),
        challenger_latency_ms=_floats(mine["latency_ms"]),
        control_latency_ms=_floats(theirs["latency_ms"]),
        challenger_errors=failed.num_rows,
    )


def _served(predictions: pa.Table) -> pa.Table:
    """Predictions that were answered (shadows never are), with a variant."""
    mask = pc.and_(pc.fill_null(predictions["served"], True), pc.is_valid(predictions["variant"]))
    return predictions.filter(mask)


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    values = np.asarray(pc.drop_null(column).to_numpy(zero_copy_only=False), dtype=np.float64)
    return values[np.isfinite(values)] if values.size else values
