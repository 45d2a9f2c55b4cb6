"""A tuning study is one search over one objective, and survives its process being killed.

Each test trains the flights example made small (LightGBM only, a month each of training,
validation and test rows, a handful of features and trials) in its own project folder, on the
flights of July to October only: the same rows and windows for those months, less to read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_flights
from optuna.trial import FrozenTrial, TrialState

from mlprod import Project

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
MakeProject = Callable[[dict[str, Any]], Project]
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def flights_db(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's data cut to July to October (for ``make_project``): the month before
    training covers the longest window (7 days), and nothing after the test window is read,
    so every row trained, validated and tested on has the features it has in the full data;
    each training (three per test) builds and fingerprints a third of the flights."""
    path = tmp_path_factory.mktemp("tuning") / "jul-oct.duckdb"
    return copy_flights(flights_db, path, "month BETWEEN 7 AND 10")


def small(config: dict[str, Any], trials: int) -> dict[str, Any]:
    """The example with two window aggregates, one candidate, ``trials`` small trials."""
    keep = {"carrier_origin_mean_delay_7d", "origin_delayed_3h"}
    config["features"] = [
        f for f in config["features"] if f["kind"] != "aggregate" or f["name"] in keep
    ]
    train = config["train"]
    train["split"].update(train_start="2013-08-01", valid_end="2013-10-01", test_end="2013-11-01")
    train["models"] = train["models"][:1]
    train["models"][0]["params"].update(n_estimators=100, num_threads=1)
    train["tuning"]["trials"] = trials
    train.pop("ensemble", None)
    return config


def studies(project: Project) -> dict[str, list[FrozenTrial]]:
    """Every study in the project's tuning folder, by name, with its trials."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    found = {}
    for path in sorted((project.store / "tuning").glob("*.log")):
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            found[name] = study.get_trials(deepcopy=False)
    return found


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in COUNTED]


def lightgbm_trials(leaderboard: list[dict[str, Any]]) -> int:
    (row,) = [r for r in leaderboard if r["name"] == "lightgbm"]
    trials: int = row["trials"]
    return trials


def test_a_changed_feature_set_trains_fresh_trials_and_reproduces(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = small(flights_config, trials=2)
    project = make_project(config)
    monkeypatch.chdir(project.folder)  # outside git: a commit made meanwhile is no code change
    assert project.train().model_version == 1
    (first,) = studies(project).values()

    config["features"] = [f for f in config["features"] if f["name"] != "dest_longitude"]
    changed = make_project(config)
    summary = changed.train()
    assert summary.model_version == 2
    searches = studies(changed)
    assert len(searches) == 2, "the changed features start a study of their own"
    (second,) = [trials for trials in searches.values() if trials != first]
    assert [t.state for t in first] == [t.state for t in second] == [TrialState.COMPLETE] * 2
    assert lightgbm_trials(summary.leaderboard) == 2

    result = changed.reproduce("2")
    assert result["reproduced"] is True, result
    assert (result["max_abs_difference"], result["rows_different"]) == (0.0, 0)


KILLED_AFTER = 2  # trials finished before the kill
SEARCHED = 4  # parameters each trial suggests (the example's search space)


def test_a_search_killed_mid_trial_resumes_without_repeating_or_counting_it(
    make_project: MakeProject,
    flights_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = make_project(small(flights_config, trials=5))
    monkeypatch.chdir(project.folder)
    output = tmp_path / "killed.out"
    with output.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", "from mlprod.cli import app; app()", "train", "--json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project.folder,
        )
        try:
            _wait_for_a_running_trial(project, child, output)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    ((name, killed),) = studies(project).items()
    (stale,) = [t for t in killed if t.state == TrialState.RUNNING]
    finished = [t.params for t in counted(killed)]
    assert len(finished) == stale.number >= KILLED_AFTER, "the kill landed in a trial"

    summary = project.train()
    trials = studies(project)[name]
    assert trials[stale.number].state == TrialState.FAIL, "the killed trial is marked failed"
    assert len(counted(trials)) == 5
    assert lightgbm_trials(summary.leaderboard) == 5, "the killed trial is not counted"
    resumed = [t.params for t in counted(trials)[len(finished) :]]
    assert not [p for p in resumed if p in finished], "no finished trial's parameters again"
    # The search goes on as if it had never stopped: the killed trial's parameters, never
    # scored, are tried again, and a search run through in one go (what `reproduce` does)
    # gives the same model.
    assert resumed[0] == stale.params
    result = project.reproduce(str(summary.model_version))
    assert result["reproduced"] is True, result
    assert result["rows_different"] == 0


def _wait_for_a_running_trial(project: Project, child: subprocess.Popen[bytes], out: Path) -> None:
    """Return once a trial has chosen its parameters after KILLED_AFTER trials finished."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"train ended before it could be killed:\n{out.read_text()}")
        logs = list((project.store / "tuning").glob("*.log"))
        if logs and logs[0].stat().st_size:
            for trials in studies(project).values():
                last = trials[-1] if trials else None
                if (
                    last is not None
                    and len(counted(trials)) >= KILLED_AFTER
                    and last.state == TrialState.RUNNING
                    and len(last.params) == SEARCHED
                ):
                    return
        time.sleep(0.02)
    pytest.fail("no trial ran within 5 minutes")
