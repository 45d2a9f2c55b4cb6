"""The sample-ratio check of an experiment's assignment: did each variant get the share of
units its weight promised?

A mismatch means the assignment itself is broken (a variant dropping, duplicating or
redirecting requests), so every comparison of the readout is suspect.

Units
    Under sticky assignment (``unit``: the policy's ``assign_by``, e.g. tailnum) an entity is
    assigned once and all its requests follow, so the entity is the unit counted; a request
    without the field was assigned on its own and is a unit of its own. Counting requests of
    sticky entities instead would flag a mismatch whenever a few entities are busy.

Fallbacks
    A variant that fails to score is answered for by the control: its rows are logged as the
    control's (assignment ``fallback``) and the failure as a scoring error of the variant.
    The check gives those units back to the variant that failed (in proportion to the
    failures when several did), as that is what the assignment chose.

Weights
    The counts are compared with the weights of the policy the predictions were served under:
    one set of weights, or the policy's revisions over time (``WeightPeriod``, e.g. the steps
    of a rollout). With revisions, each period is checked against its own weights and the
    chi-squares are summed; the predictions of the first ``GRACE`` after a change are left out,
    as servers apply a new policy within about a second. Predictions older than the first
    period count in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import EvaluationError
from mlprod.evaluate import experiment_stats as st

UNIT = "__unit"  # the column of each row's unit of assignment
GRACE = timedelta(seconds=5)  # after a policy change, left out of the check


@dataclass(frozen=True)
class WeightPeriod:
    """The served variants' weights (the control first) from ``start`` on."""

    start: datetime
    weights: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "weights": dict(self.weights)}


def unit_keys(rows: pa.Table, unit: str | None) -> pa.Array:
    """Each row's unit of assignment: its entity (``unit``'s value in the request) when it has
    one, else the prediction itself."""
    ids = rows.column("prediction_id").to_pylist()
    if unit is None:
        return pa.array([f"r:{pid}" for pid in ids], pa.string())
    keys = []
    for pid, text in zip(ids, rows.column("request").to_pylist(), strict=True):
        entity = json.loads(text).get(unit) if text else None
        keys.append(f"r:{pid}" if entity is None else "e:" + json.dumps(entity, sort_keys=True))
    return pa.array(keys, pa.string())


def as_periods(weights: Mapping[str, float] | Sequence[WeightPeriod] | None) -> list[WeightPeriod]:
    """Weights as periods, oldest first: one set of weights holds from the beginning."""
    if not weights:
        return []
    if isinstance(weights, Mapping):
        return [WeightPeriod(datetime.min, dict(weights))]
    periods = sorted(weights, key=lambda period: period.start)
    return periods if any(period.weights for period in periods) else []


def check_assignment(
    served: pa.Table,
    errors: pa.Table,
    periods: list[WeightPeriod],
    names: list[str],
    control: str,
    notes: list[str],
) -> st.SampleRatio:
    """The assignment's counts in each weight period against that period's weights."""
    times = served.column("predicted_at")
    error_times = errors.column("at")
    parts: list[st.SampleRatio] = []
    left_out = 0
    for index, period in enumerate(periods):
        if not period.weights:
            continue  # another experiment's policy: this one served nothing then
        end = periods[index + 1].start if index + 1 < len(periods) else None
        # The first weights known also count for what was logged before them.
        start = period.start if index else datetime.min
        begin = period.start + GRACE if index else start
        inside = _between(times, begin, end)
        left_out += int(pc.sum(_between(times, start, begin)).as_py() or 0)
        counts = _assigned(
            served.filter(inside),
            errors.filter(_between(error_times, start, end)),
            names,
            control,
            notes,
        )
        if sum(counts.values()):
            parts.append(st.sample_ratio_test(counts, _with_zeros(period.weights, counts)))
    if left_out:
        notes.append(
            f"{left_out:,} predictions within {GRACE.seconds} s after a policy change are left "
            "out of the sample-ratio check"
        )
    if not parts:
        return st.sample_ratio_test({}, next(p.weights for p in reversed(periods) if p.weights))
    return st.combine_sample_ratios(parts)


def _between(times: pa.ChunkedArray, begin: datetime, end: datetime | None) -> pa.ChunkedArray:
    after = pc.greater_equal(times, pa.scalar(begin, times.type))
    return after if end is None else pc.and_(after, pc.less(times, pa.scalar(end, times.type)))


def _with_zeros(weights: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    """The weights, with weight 0 for logged variants the period's policy did not serve."""
    return {**dict(weights), **{n: 0.0 for n in counts if n not in weights}}


def count_errors(errors: pa.Table, variant: str) -> int:
    return int(pc.sum(pc.equal(errors.column("variant"), variant)).as_py() or 0)


def _assigned(
    rows: pa.Table, errors: pa.Table, names: list[str], control: str, notes: list[str]
) -> dict[str, int]:
    """What the assignment chose per variant, in units (entities under sticky assignment,
    else requests): served rows, with fallback rows given back to the variant that failed
    (in proportion to the failures when several variants failed)."""
    variants = pc.fill_null(rows.column("variant"), "").to_pylist()
    reasons = pc.fill_null(rows.column("assignment"), "").to_pylist()
    units = rows.column(UNIT).to_pylist()
    chosen: dict[str, set[str]] = {n: set() for n in names}
    fell_back: set[str] = set()
    for variant, reason, key in zip(variants, reasons, units, strict=True):
        if reason == "fallback":
            fell_back.add(key)
        elif variant in chosen:
            chosen[variant].add(key)
    if not fell_back:
        return {n: len(keys) for n, keys in chosen.items()}
    failures = {n: count_errors(errors, n) for n in names if n != control}
    failing = [n for n, count in failures.items() if count]
    if not failing and len(failures) == 1:
        failing = list(failures)
    if len(failing) == 1:
        chosen[failing[0]] |= fell_back
        return {n: len(keys) for n, keys in chosen.items()}
    counts = {n: len(keys) for n, keys in chosen.items()}
    if not failing:
        notes.append(
            f"{len(fell_back):,} fallback units without a recorded scoring error are counted "
            "for the control in the sample-ratio check"
        )
        counts[control] += len(fell_back)
        return counts
    total = sum(failures[n] for n in failing)
    shares = {n: len(fell_back) * failures[n] / total for n in failing}
    given = {n: int(share) for n, share in shares.items()}
    for name in sorted(shares, key=lambda n: given[n] - shares[n])[
        : len(fell_back) - sum(given.values())
    ]:
        given[name] += 1
    for name, extra in given.items():
        counts[name] += extra
    return counts


def parse_weights(text: str) -> dict[str, float]:
    """``control=50,challenger=50`` as weights, in the order given (the control first)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, number = part.partition("=")
        try:
            weight = float(number)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not np.isfinite(weight) or weight < 0:
            raise EvaluationError(
                f"--weights takes NAME=WEIGHT pairs separated by commas, e.g. "
                f"control=50,challenger=50; got '{part}' in '{text}'"
            )
        if name.strip() in weights:
            raise EvaluationError(f"--weights names variant '{name.strip()}' twice in '{text}'")
        weights[name.strip()] = weight
    return weights
