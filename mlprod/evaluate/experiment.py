"""The readout of a live experiment: what each variant served, how fast, what it scored and
decided, and, once outcomes have joined the prediction log, how good and how valuable it was,
each treatment against the control.

It reads only the prediction log (any object with its ``predictions`` and ``scoring_errors``;
both backends are), so it runs wherever the log is reachable: the CLI, a notebook, a dashboard.

Who is who
    Served rows (``served`` true) are what the experiment answered; shadow rows are scored on
    the same requests but never answered, and are reported on their own, without tests (their
    requests are the served ones, not an independent sample). The control is the first variant
    of the weights when they are known, else ``control``, else the first variant by name.

What is counted where
    ``requests`` are a variant's served rows. When a variant fails to score, the control
    answers for it: those rows are the control's (assignment ``fallback``, counted in its
    ``fallbacks``), and the failure is one scoring error of the failing variant (one per
    failed call, which may hold several records). Under sticky assignment (``unit``: the
    policy's ``assign_by``) the requests of one entity are one correlated cluster in every
    interval and test. The sample-ratio check of the assignment, against the weights the
    experiment was served under, is :mod:`mlprod.evaluate.experiment_assignment`'s.

Outcomes
    Only labelled rows (``label`` joined by feedback or ``mlprod outcomes``) enter the positive
    rate, AUC and business value; without any, those are ``None`` ("no outcomes yet"). Business
    value prices each labelled row by what was done with it: acted on when the logged
    ``decision`` is true (the deployed threshold's decision), by ``train.value``'s tp/fp/fn/tn,
    and is shown per 1,000 predictions so variants of different sizes compare.

Each treatment-vs-control test is judged at ``1 - level`` on its own (no correction for the
number of metrics or variants); see :mod:`mlprod.evaluate.experiment_stats` for the methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from mlprod.errors import EvaluationError, did_you_mean, one_of
from mlprod.evaluate import experiment_stats as st
from mlprod.evaluate.experiment_assignment import (
    UNIT,
    WeightPeriod,
    as_periods,
    check_assignment,
    count_errors,
    unit_keys,
)
from mlprod.evaluate.metrics import auc_with_ci
from mlprod.project.training import OUTCOMES, ValueConfig

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BOOTSTRAP_ROWS = 20_000  # labelled rows of a variant up to which its AUC is bootstrapped
PER = 1000  # business value is shown per this many predictions


class ExperimentLog(Protocol):
    """What the readout needs of a prediction log (the logs' own methods take more filters)."""

    def predictions(
        self, *, since: datetime | None = None, experiment: str | None = None
    ) -> pa.Table: ...

    def scoring_errors(self, since: datetime | None = None) -> pa.Table: ...


@dataclass(frozen=True)
class Rate:
    value: float
    ci: tuple[float, float]
    successes: int
    n: int
    design_effect: float = 1.0  # > 1 when rows of one entity move together (sticky assignment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci": list(self.ci),
            "successes": self.successes,
            "n": self.n,
            "design_effect": self.design_effect,
        }


@dataclass(frozen=True)
class Estimate:
    value: float
    ci: tuple[float, float]
    method: str = "bootstrap"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci": list(self.ci), "method": self.method}


@dataclass(frozen=True)
class Outcomes:
    """A variant's labelled rows: how often positive, how well ranked, what they were worth."""

    labelled: int
    positive_rate: Rate
    auc: Estimate | None  # None with a note: one class only, or too few of one to bootstrap
    value: Estimate | None  # per PER predictions; None without train.value (or per-row values)
    value_total: float | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "labelled": self.labelled,
            "positive_rate": self.positive_rate.to_dict(),
            "auc": self.auc.to_dict() if self.auc else None,
            f"value_per_{PER}": self.value.to_dict() if self.value else None,
            "value_total": self.value_total,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class VariantReadout:
    name: str
    models: tuple[str, ...]  # name/version of every model that scored its rows
    requests: int
    fallbacks: int
    errors: int
    latency_ms: dict[str, float] | None  # p50, p99; None when no row recorded a latency
    score: dict[str, float] | None  # mean and QUANTILES; None without rows
    decision_rate: Rate | None
    outcomes: Outcomes | None  # None: no outcomes yet
    vs_control: dict[str, st.Difference | None] | None = None  # None for the control, shadows

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "models": list(self.models),
            "requests": self.requests,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "score": self.score,
            "decision_rate": self.decision_rate.to_dict() if self.decision_rate else None,
            "outcomes": self.outcomes.to_dict() if self.outcomes else None,
            "vs_control": None
            if self.vs_control is None
            else {k: (d.to_dict() if d else None) for k, d in self.vs_control.items()},
        }


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    since: datetime | None
    control: str
    level: float
    variants: tuple[VariantReadout, ...]
    shadows: tuple[VariantReadout, ...]
    weights: tuple[WeightPeriod, ...]  # empty when unknown
    weights_source: str | None
    unit: str | None  # the request field assignment was sticky by; None: every request
    sample_ratio: st.SampleRatio | None
    currency: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def latest_weights(self) -> dict[str, float] | None:
        return next((dict(p.weights) for p in reversed(self.weights) if p.weights), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "since": self.since.isoformat() if self.since else None,
            "control": self.control,
            "level": self.level,
            "alpha": round(1 - self.level, 12),
            "weights": self.latest_weights,
            "weight_periods": [period.to_dict() for period in self.weights],
            "weights_source": self.weights_source,
            "unit": self.unit,
            "currency": self.currency,
            "variants": [v.to_dict() for v in self.variants],
            "shadows": [v.to_dict() for v in self.shadows],
            "sample_ratio": self.sample_ratio.to_dict() if self.sample_ratio else None,
            "notes": list(self.notes),
        }


def experiment_names(log: ExperimentLog) -> list[str]:
    """Every experiment that has a prediction in the log, sorted."""
    names = pc.unique(log.predictions().column("experiment")).drop_null()
    return sorted(str(n) for n in names.to_pylist())


def experiment_report(
    log: ExperimentLog,
    experiment: str,
    *,
    weights: Mapping[str, float] | Sequence[WeightPeriod] | None = None,
    weights_source: str | None = None,
    unit: str | None = None,
    control: str | None = None,
    value: ValueConfig | None = None,
    since: datetime | None = None,
    level: float = st.LEVEL,
    n_boot: int = 1000,
    seed: int = 0,
) -> ExperimentReport:
    """The readout of ``experiment`` from the predictions logged since ``since``.

    ``weights`` (variant -> weight, the control first; or the policy's revisions as periods)
    are those of the policy the predictions were served under; without them there is no
    sample-ratio check. ``unit`` is the request field assignment was sticky by (the policy's
    ``assign_by``): the requests of one entity then count as one unit of assignment, and
    the intervals and tests treat them as one correlated cluster.
    """
    periods = as_periods(weights)
    rows = log.predictions(experiment=experiment, since=since)
    if rows.num_rows == 0:
        raise _unknown(log, experiment, since)
    rows = rows.append_column(UNIT, unit_keys(rows, unit))
    errors = _errors_of(log, experiment, since)
    served = rows.filter(pc.equal(rows.column("served"), True))
    shadow = rows.filter(pc.equal(rows.column("served"), False))
    latest = next((p.weights for p in reversed(periods) if p.weights), None)
    names = _ordered(_names(served), [p.weights for p in reversed(periods)])
    control = _control(control, names, latest)
    names = [control, *[n for n in names if n != control]]
    notes: list[str] = []
    settings = _Settings(_worth(value, notes), level, n_boot, seed, clustered=unit is not None)
    per_variant = {n: _of(served, n) for n in names}
    readouts = [_readout(n, per_variant[n], count_errors(errors, n), settings) for n in names]
    readouts = [readouts[0]] + [
        _with_tests(r, per_variant[control], per_variant[r.name], settings) for r in readouts[1:]
    ]
    shadows = [
        _readout(n, _of(shadow, n), count_errors(errors, n), settings) for n in _names(shadow)
    ]
    sample_ratio = None
    if periods:
        sample_ratio = check_assignment(served, errors, periods, names, control, notes)
    return ExperimentReport(
        experiment=experiment,
        since=since,
        control=control,
        level=level,
        variants=tuple(readouts),
        shadows=tuple(shadows),
        weights=tuple(periods),
        weights_source=weights_source if periods else None,
        unit=unit,
        sample_ratio=sample_ratio,
        currency=value.currency if value else "",
        notes=tuple(notes),
    )


def _unknown(log: ExperimentLog, experiment: str, since: datetime | None) -> EvaluationError:
    known = experiment_names(log)
    if since is not None and experiment in known:
        return EvaluationError(
            f"experiment '{experiment}' has no prediction logged since {since.isoformat()}; "
            "give an earlier --since"
        )
    if not known:
        return EvaluationError(
            f"no experiment '{experiment}' in the prediction log: it holds no prediction made "
            "under an experiment; serve with a deploy: section in mlprod.yaml to run one"
        )
    return EvaluationError(
        f"no experiment '{experiment}' in the prediction log{did_you_mean(experiment, known)}; "
        f"it has {one_of(known)}"
    )


def _errors_of(log: ExperimentLog, experiment: str, since: datetime | None) -> pa.Table:
    table = log.scoring_errors(since)
    return table.filter(pc.equal(table.column("experiment"), experiment))


def _of(rows: pa.Table, variant: str) -> pa.Table:
    return rows.filter(pc.equal(rows.column("variant"), variant))


def _names(rows: pa.Table) -> list[str]:
    return sorted(str(n) for n in pc.unique(rows.column("variant")).drop_null().to_pylist())


def _ordered(logged: list[str], weights: Sequence[Mapping[str, float]]) -> list[str]:
    """The variants of the weights, latest first, in their order; then other logged ones."""
    first = list(dict.fromkeys(name for mapping in weights for name in mapping))
    return first + [n for n in logged if n not in first]


def _control(given: str | None, names: list[str], weights: Mapping[str, float] | None) -> str:
    if given is not None:
        if given not in names:
            raise EvaluationError(
                f"control variant '{given}' has no served prediction in this experiment"
                f"{did_you_mean(given, names)}; it has {one_of(names)}"
            )
        return given
    if not names:
        raise EvaluationError("the experiment has only shadow predictions: no variant was served")
    if weights:
        return next(iter(weights))
    return "control" if "control" in names else names[0]


def _worth(value: ValueConfig | None, notes: list[str]) -> tuple[float, float, float, float] | None:
    """What tp, fp, fn and tn are worth, when ``train.value`` gives them as numbers."""
    if value is None:
        notes.append("no train.value in mlprod.yaml: business value is not shown")
        return None
    expressions = value.expressions()
    if expressions:
        notes.append(
            f"train.value gives {', '.join(sorted(expressions))} per row, which the readout "
            "cannot price from the log yet: business value is not shown"
        )
        return None
    tp, fp, fn, tn = (float(getattr(value, outcome)) for outcome in OUTCOMES)
    return tp, fp, fn, tn


def row_values(
    labels: np.ndarray[Any, Any],
    decisions: np.ndarray[Any, Any],
    worth: tuple[float, float, float, float],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """What each labelled row was worth, given what was done with it."""
    tp, fp, fn, tn = worth
    positive, acted = labels.astype(bool), decisions.astype(bool)
    values: np.ndarray[Any, np.dtype[np.float64]] = np.where(
        acted, np.where(positive, tp, fp), np.where(positive, fn, tn)
    ).astype(np.float64)
    return values


def _numbers(column: pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(column.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)


def _flags(column: pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)


def _labelled(rows: pa.Table) -> pa.Table:
    return rows.filter(pc.is_valid(rows.column("label")))


@dataclass(frozen=True)
class _Settings:
    worth: tuple[float, float, float, float] | None  # tp, fp, fn, tn; None: no value shown
    level: float
    n_boot: int
    seed: int
    clustered: bool  # rows of one entity (sticky assignment) are correlated


def _units(rows: pa.Table, settings: _Settings) -> np.ndarray[Any, Any] | None:
    """Each row's unit of assignment, for the clustered statistics (None: rows are units)."""
    if not settings.clustered:
        return None
    return np.asarray(rows.column(UNIT).to_numpy(zero_copy_only=False))


def _readout(name: str, rows: pa.Table, errors: int, settings: _Settings) -> VariantReadout:
    n = rows.num_rows
    latency = _numbers(rows.column("latency_ms"))
    scores = _numbers(rows.column("score"))
    fallback = pc.equal(pc.fill_null(rows.column("assignment"), ""), "fallback")
    models = {
        f"{m}/{v}"
        for m, v in zip(
            rows.column("model_name").to_pylist(),
            rows.column("model_version").to_pylist(),
            strict=True,
        )
    }
    decisions = _flags(rows.column("decision"))
    return VariantReadout(
        name=name,
        models=tuple(sorted(models)),
        requests=n,
        fallbacks=int(pc.sum(fallback).as_py() or 0),
        errors=errors,
        latency_ms=None
        if len(latency) == 0
        else {"p50": float(np.quantile(latency, 0.5)), "p99": float(np.quantile(latency, 0.99))},
        score=None
        if n == 0
        else {
            "mean": float(scores.mean()),
            **{
                f"p{round(q * 100)}": float(v)
                for q, v in zip(QUANTILES, np.quantile(scores, QUANTILES), strict=True)
            },
        },
        decision_rate=_rate(decisions, _units(rows, settings), settings.level) if n else None,
        outcomes=_outcomes(_labelled(rows), settings),
    )


def _rate(flags: np.ndarray[Any, Any], units: np.ndarray[Any, Any] | None, level: float) -> Rate:
    successes, n = int(flags.sum()), len(flags)
    effective_successes, effective_n = st.effective_counts(flags, units)
    return Rate(
        successes / n,
        st.wilson_interval(effective_successes, effective_n, level),
        successes,
        n,
        n / effective_n,
    )


def _outcomes(labelled: pa.Table, settings: _Settings) -> Outcomes | None:
    n = labelled.num_rows
    if n == 0:
        return None
    labels = _flags(labelled.column("label"))
    scores = _numbers(labelled.column("score"))
    units = _units(labelled, settings)
    positives = int(labels.sum())
    notes: list[str] = []
    auc: Estimate | None = None
    if 0 < positives < n:
        auc = _auc(labels, scores, units, settings, notes)
    else:
        kind = "positive" if positives else "negative"
        notes.append(f"AUC needs both classes; all {n:,} labelled predictions are {kind}")
    value = total = None
    if settings.worth is not None:
        values = row_values(labels, _flags(labelled.column("decision")), settings.worth)
        mean, (low, high) = st.mean_with_ci(
            values,
            n_boot=settings.n_boot,
            seed=settings.seed,
            level=settings.level,
            clusters=units,
        )
        value, total = Estimate(mean * PER, (low * PER, high * PER)), float(values.sum())
    return Outcomes(n, _rate(labels, units, settings.level), auc, value, total, tuple(notes))


def _auc(
    labels: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    units: np.ndarray[Any, Any] | None,
    settings: _Settings,
    notes: list[str],
) -> Estimate | None:
    """A variant's AUC: a bootstrap interval over rows up to ``BOOTSTRAP_ROWS`` labelled rows;
    beyond (where the bootstrap costs seconds and the normal approximation is excellent), or
    when rows come in correlated clusters, the normal interval of the DeLong variance."""
    if units is not None or len(labels) > BOOTSTRAP_ROWS:
        point, variance = st.delong_auc(labels, scores, units)
        half = float(stats.norm.ppf((1 + settings.level) / 2)) * float(np.sqrt(variance))
        method = "DeLong" if units is None else "clustered DeLong"
        return Estimate(point, (max(0.0, point - half), min(1.0, point + half)), method)
    try:
        point, ci = auc_with_ci(
            labels, scores, n_boot=settings.n_boot, seed=settings.seed, level=settings.level
        )
    except EvaluationError as exc:
        notes.append(f"AUC: {exc}")
        return None
    return Estimate(point, ci)


def _with_tests(
    readout: VariantReadout, control: pa.Table, treatment: pa.Table, settings: _Settings
) -> VariantReadout:
    """The readout with its differences from the control (None where one side lacks data)."""
    level = settings.level
    tests: dict[str, st.Difference | None] = {
        "decision_rate": None,
        "positive_rate": None,
        "auc": None,
        f"value_per_{PER}": None,
    }
    uc, ut = _units(control, settings), _units(treatment, settings)
    if control.num_rows and treatment.num_rows:
        tests["decision_rate"] = st.two_proportion_test(
            *st.effective_counts(_flags(control.column("decision")), uc),
            *st.effective_counts(_flags(treatment.column("decision")), ut),
            level,
        )
    lc, lt = _labelled(control), _labelled(treatment)
    if lc.num_rows and lt.num_rows:
        ulc, ult = _units(lc, settings), _units(lt, settings)
        yc, yt = _flags(lc.column("label")), _flags(lt.column("label"))
        tests["positive_rate"] = st.two_proportion_test(
            *st.effective_counts(yc, ulc), *st.effective_counts(yt, ult), level
        )
        if _both_classes(lc) and _both_classes(lt):
            tests["auc"] = st.auc_difference_test(
                yc,
                _numbers(lc.column("score")),
                yt,
                _numbers(lt.column("score")),
                level,
                control_clusters=ulc,
                treatment_clusters=ult,
            )
        if settings.worth is not None:
            difference = st.mean_difference_test(
                _values(lc, settings.worth),
                _values(lt, settings.worth),
                n_boot=settings.n_boot,
                seed=settings.seed,
                level=level,
                control_clusters=ulc,
                treatment_clusters=ult,
            )
            tests[f"value_per_{PER}"] = st.Difference(
                difference.difference * PER,
                (difference.ci[0] * PER, difference.ci[1] * PER),
                difference.p_value,
                difference.method,
                level,
            )
    return VariantReadout(**{**readout.__dict__, "vs_control": tests})


def _successes(rows: pa.Table, column: str) -> tuple[int, int]:
    return int(pc.sum(rows.column(column)).as_py() or 0), rows.num_rows


def _both_classes(labelled: pa.Table) -> bool:
    positives, n = _successes(labelled, "label")
    return 0 < positives < n


def _values(
    labelled: pa.Table, worth: tuple[float, float, float, float]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    return row_values(_flags(labelled.column("label")), _flags(labelled.column("decision")), worth)
