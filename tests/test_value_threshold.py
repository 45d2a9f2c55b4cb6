"""The value-maximising threshold: by hand, against brute force, and on the flights matrix."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import copy_example
from pydantic import ValidationError

from mlprod import Project
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
