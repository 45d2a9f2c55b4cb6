"""The value-maximising threshold: by hand, against brute force, and on the flights matrix.

Outcomes are worth a number each, or a value per row (train.value.tp: "0.2 * distance").
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import copy_example
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlprod import Project
from mlprod.errors import EvaluationError
from mlprod.evaluate import metrics
from mlprod.evaluate.value import OutcomeValues, best_threshold, value_at, value_curve
from mlprod.project.training import ValueConfig
from mlprod.train.splits import split_matrix
from mlprod.train.value import choose_threshold, expected_value

# Six validation rows, highest score first; 0.7 is shared by a late and an on-time flight.
SCORES = [0.9, 0.8, 0.7, 0.7, 0.4, 0.2]
LATE = [True, False, True, False, False, False]
# Acting at each threshold, counted by hand: (true pos., false pos., false neg., true neg.)
#   above 0.9 (nothing): 0 0 2 4    0.9: 1 0 1 4    0.8: 1 1 1 3
#   0.7:                 2 2 0 2    0.4: 2 3 0 1    0.2 (all): 2 4 0 0


def value(**worth: float) -> ValueConfig:
    return ValueConfig.model_validate({"tp": 0, "fp": 0, "fn": 0, "tn": 0, **worth})


@pytest.mark.parametrize(
    ("worth", "totals", "expected"),
    [
        # The example's matrix: a late flight caught is worth 300, a false alarm costs 100.
        ({"tp": 300, "fp": -100}, [0, 300, 200, 400, 300, 200], (0.7, 400)),
        # 0.9 and 0.7 are both worth 200: the tie goes to the higher threshold.
        ({"tp": 200, "fp": -100}, [0, 200, 100, 200, 100, 0], (0.9, 200)),
        ({"tp": 50, "fp": -100, "fn": -10}, [-20, 40, -60, -100, -200, -300], (0.9, 40)),
        # Only leaving on-time flights alone is worth anything: act on nothing (ties with 0.9).
        ({"tn": 10}, [40, 40, 30, 20, 10, 0], (math.nextafter(0.9, math.inf), 40)),
    ],
)
def test_six_rows_by_hand(
    worth: dict[str, float], totals: list[float], expected: tuple[float, float]
) -> None:
    config = value(**worth)
    for threshold, total in zip([1.0, 0.9, 0.8, 0.7, 0.4, 0.2], totals, strict=True):
        assert expected_value(LATE, SCORES, threshold, config) == total
    assert choose_threshold(LATE, SCORES, config) == expected
    # Between two scores a threshold acts on the same rows as the score above it.
    assert expected_value(LATE, SCORES, 0.75, config) == totals[2]


def test_act_on_all_and_zero_one_labels() -> None:
    config = value(tp=300, fp=-100)
    assert choose_threshold([1, 1, 0, 1], [0.6, 0.3, 0.5, 0.1], config) == (0.1, 800.0)
    assert choose_threshold(np.array([0, 1]), np.array([0.2, 0.2]), config) == (0.2, 200.0)


def test_an_uninformative_value_matrix_is_refused() -> None:
    with pytest.raises(ValidationError, match="makes every threshold worth the same"):
        value(tp=5, fn=5)


def brute_force(labels: list[bool], scores: list[float], config: ValueConfig) -> dict[float, float]:
    """The total of every candidate threshold, row by row."""
    worth = {(True, True): config.tp, (True, False): config.fn}
    worth |= {(False, True): config.fp, (False, False): config.tn}
    candidates = [*sorted(set(scores)), math.nextafter(max(scores), math.inf)]
    return {
        t: sum(worth[(late, s >= t)] for late, s in zip(labels, scores, strict=True))
        for t in candidates
    }


def test_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(20240601)
    checked = 0
    while checked < 300:
        n = int(rng.integers(1, 40))
        # Coarse scores make many ties; integer values make ties exact.
        scores = (rng.integers(0, 10, n) / 10 if rng.random() < 0.5 else rng.random(n)).tolist()
        labels = (rng.random(n) < rng.random()).tolist()
        tp, fp, fn, tn = (float(v) for v in rng.integers(-5, 6, 4))
        if tp == fn and fp == tn:
            continue
        config = value(tp=tp, fp=fp, fn=fn, tn=tn)
        totals = brute_force(labels, scores, config)
        best = max(totals.values())
        threshold, total = choose_threshold(labels, scores, config)
        assert total == best
        assert threshold == max(t for t, v in totals.items() if v == best)
        assert expected_value(labels, scores, threshold, config) == total
        checked += 1


# --- a value per row ------------------------------------------------------------------------

# The same six flights, with their distances: tp: "0.2 * distance", fp: -100.
DISTANCE = [2000, 500, 100, 300, 800, 200]
#   threshold         acted rows        total
#   above 0.9         none              0
#   0.9               + late 2000 mi    0.2 * 2000 = 400
#   0.8               + on time         400 - 100 = 300
#   0.7               + late 100 mi     300 + 20 - 100 (+ the on-time 0.7) = 220
#   0.4               + on time         120
#   0.2 (all)         + on time         20
PER_ROW_TOTALS = [0, 400, 300, 220, 120, 20]
TP = np.array([0.2 * d for d in DISTANCE])


def test_per_row_values_by_hand() -> None:
    worth = OutcomeValues(tp=TP, fp=-100.0, fn=0.0, tn=0.0)
    for cut, expected in zip([1.0, 0.9, 0.8, 0.7, 0.4, 0.2], PER_ROW_TOTALS, strict=True):
        assert expected_value(LATE, SCORES, cut, worth) == pytest.approx(expected)
    # The late flight at 0.7 is short: catching it is not worth the false alarm that comes with
    # it, so the best threshold is 0.9; at a constant 300 per late flight it was 0.7.
    threshold, total = choose_threshold(LATE, SCORES, worth)
    assert threshold == 0.9
    assert total == pytest.approx(400)
    assert choose_threshold(LATE, SCORES, value(tp=300, fp=-100)) == (0.7, 400)
    cuts, totals = value_curve(LATE, SCORES, worth)
    assert cuts[:-1].tolist() == [0.2, 0.4, 0.7, 0.8, 0.9]
    assert totals.tolist() == pytest.approx(PER_ROW_TOTALS[::-1])


def test_a_missed_positive_can_cost_per_row() -> None:
    # fn: "-0.1 * distance": leaving a late flight alone costs a tenth of its distance.
    worth = OutcomeValues(tp=0.0, fp=-100.0, fn=np.array([-0.1 * d for d in DISTANCE]), tn=0.0)
    _, totals = value_curve(LATE, SCORES, worth)
    assert totals.tolist() == pytest.approx([-400, -300, -200, -110, -10, -210])
    threshold, total = best_threshold(LATE, SCORES, worth)
    assert threshold == 0.9
    assert total == pytest.approx(-10)


def test_the_report_metrics_use_the_same_totals() -> None:
    worth = OutcomeValues(tp=TP, fp=-100.0, fn=0.0, tn=0.0, currency="USD")
    summary = metrics.summarize(LATE, SCORES, 0.9, worth, n_boot=10)
    assert summary["value"] == {
        "total": pytest.approx(400),
        "per_1000_rows": pytest.approx(400 / 6 * 1000),
        "currency": "USD",
    }
    assert metrics.best_threshold is best_threshold and metrics.value_at is value_at


def test_a_config_with_expressions_takes_the_matrix_values() -> None:
    config = ValueConfig(tp="0.2 * distance", fp=-100, fn=0, tn=0)
    assert config.expressions() == {"tp": "0.2 * distance"}
    worth = OutcomeValues.of(config, {"tp": TP})
    assert choose_threshold(LATE, SCORES, worth) == best_threshold(
        LATE, SCORES, OutcomeValues(tp=TP, fp=-100.0, fn=0.0, tn=0.0)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: value_at(LATE, SCORES, 0.5, ValueConfig(tp=1, fp=0, fn=0, tn="-distance")),
            "train.value.tn is the expression '-distance', but no values per row were given "
            "for it; pass the training matrix's column 'value_tn' of the same rows",
        ),
        (
            lambda: choose_threshold(
                LATE,
                SCORES,
                OutcomeValues(np.array([1.0, np.nan, 2.0, 3.0, np.nan, 1.0]), 0, 0, 0),
            ),
            "the validation window has 2 rows whose value of tp is missing or infinite, among 6 "
            "rows; every row needs a value",
        ),
        (
            lambda: value_curve(LATE, SCORES, OutcomeValues(1, np.array([1.0, 2.0]), 0, 0)),
            "the data has 6 rows but 2 values of fp; give one value per row",
        ),
    ],
)
def test_per_row_values_that_cannot_be_used(call: Any, message: str) -> None:
    with pytest.raises(EvaluationError, match=f"^{re.escape(message)}$"):
        call()


def brute_force_rows(
    labels: list[bool], scores: list[float], worth: dict[str, list[float]]
) -> dict[float, float]:
    """The total of every candidate threshold, row by row, with a value per row."""
    candidates = [*sorted(set(scores)), math.nextafter(max(scores), math.inf)]
    totals: dict[float, float] = {}
    for t in candidates:
        total = 0.0
        for i, (late, s) in enumerate(zip(labels, scores, strict=True)):
            outcome = ("tp" if late else "fp") if s >= t else ("fn" if late else "tn")
            total += worth[outcome][i]
        totals[t] = total
    return totals


@st.composite
def rows_with_values(
    draw: st.DrawFn, integers: bool
) -> tuple[list[bool], list[float], dict[str, list[float]]]:
    n = draw(st.integers(1, 30))
    # Scores from a coarse grid make many ties; integer values make totals exact.
    score = st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0]) | st.floats(0, 1)
    amount = (
        st.integers(-50, 50).map(float)
        if integers
        else st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    )
    scores = draw(st.lists(score, min_size=n, max_size=n))
    labels = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    worth: dict[str, list[float]] = {}
    for outcome in ("tp", "fp", "fn", "tn"):
        if draw(st.booleans()):  # a constant, broadcast to every row
            worth[outcome] = [draw(amount)] * n
        else:
            worth[outcome] = draw(st.lists(amount, min_size=n, max_size=n))
    return labels, scores, worth


def _arrays(worth: dict[str, list[float]]) -> OutcomeValues:
    tp, fp, fn, tn = (np.array(worth[o], dtype=np.float64) for o in ("tp", "fp", "fn", "tn"))
    return OutcomeValues(tp, fp, fn, tn)


@settings(max_examples=300, deadline=None)
@given(rows_with_values(integers=True))
def test_vectorised_totals_match_a_loop_over_thresholds(
    case: tuple[list[bool], list[float], dict[str, list[float]]],
) -> None:
    labels, scores, worth = case
    expected = brute_force_rows(labels, scores, worth)
    cuts, totals = value_curve(labels, scores, _arrays(worth))
    assert dict(zip(cuts.tolist(), totals.tolist(), strict=True)) == expected
    best = max(expected.values())
    assert best_threshold(labels, scores, _arrays(worth)) == (
        max(t for t, v in expected.items() if v == best),
        best,
    )
    # Any threshold acts like the lowest candidate at or above it.
    for t in (0.05, 0.6, 0.99):
        at_or_above = min((c for c in expected if c >= t), default=max(expected))
        assert value_at(labels, scores, t, _arrays(worth)) == expected[at_or_above]


@settings(max_examples=200, deadline=None)
@given(rows_with_values(integers=False))
def test_the_best_threshold_is_the_best_up_to_rounding(
    case: tuple[list[bool], list[float], dict[str, list[float]]],
) -> None:
    labels, scores, worth = case
    expected = brute_force_rows(labels, scores, worth)
    threshold, total = best_threshold(labels, scores, _arrays(worth))
    best = max(expected.values())
    scale = sum(max(abs(v) for v in values) for values in worth.values()) * len(scores)
    assert total == pytest.approx(best, abs=1e-9 * scale)
    assert expected[threshold] == pytest.approx(best, abs=1e-9 * scale)


# --- the flights validation window -----------------------------------------------------------


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> pa.Table:
    folder = copy_example(tmp_path_factory.mktemp("value"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    project = Project.load(folder)
    assert project.config.train is not None
    table = project.build_features(features=["origin_delayed_3h", "origin_departures_3h"])
    return split_matrix(table, project.config.train.split).valid


def test_flights_threshold_matches_brute_force(valid: pa.Table) -> None:
    """Score: the share of departures from the same airport that left late in the last 3h."""
    delayed = valid.column("origin_delayed_3h").to_numpy().astype(float)
    departures = valid.column("origin_departures_3h").to_numpy().astype(float)
    score = delayed / (departures + 1)
    late = valid.column("label").to_numpy(zero_copy_only=False)
    config = value(tp=300, fp=-100)
    candidates = np.append(np.unique(score), np.nextafter(score.max(), np.inf))
    acted = score[None, :] >= candidates[:, None]
    totals = 300.0 * (acted & late).sum(axis=1) - 100.0 * (acted & ~late).sum(axis=1)
    best = totals.max()
    threshold, total = choose_threshold(late, score, config)
    assert total == best
    assert threshold == candidates[totals == best].max()
    # Acting on the busiest hours of delays pays; acting on all or on none does not.
    assert score.min() < threshold < score.max()
    assert total > max(totals[0], totals[-1])
