"""The learning loop: the paired comparison, a retrain against a real champion, and the watch.

The flights of every seventh day (days 1, 8, 15, 22 and 29 of each month) keep training cheap
while every month still has events. Version 1, the champion, trains on January to May,
validates on June and July and is built as of 1 September. The watch then runs a few ticks
in order (a fixture, once per module): the schedule starts at the first tick, retrains a day
later as of 1 December under a policy the challenger meets (alias and rollout), does nothing
an hour later, and retrains on a firing alert under a policy no challenger can meet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE, copy_flights
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from mlprod import Project
from mlprod.errors import EvaluationError, RegistryError
from mlprod.evaluate.value import OutcomeValues
from mlprod.loop.compare import compare
from mlprod.loop.retrain import RetrainResult, retrain
from mlprod.loop.watch import STATE_FILE, Tick, watch

CHAMPION_AS_OF = datetime(2013, 9, 1)
START = datetime(2013, 11, 30)  # the watch's first tick
AS_OF = START + timedelta(days=1)  # the scheduled retrain
VALUE = {"tp": 300, "fp": -100, "fn": 0, "tn": 0}


# --- compare.py against sklearn and a hand computation ---------------------------------------


def _scores(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    a = np.clip(0.25 + 0.2 * y + rng.normal(0, 0.2, n), 0, 1)
    b = np.clip(0.25 + 0.25 * y + rng.normal(0, 0.2, n), 0, 1)
    if decimals is not None:  # many ties, as calibrated scores have
        a, b = np.round(a, decimals), np.round(b, decimals)
    return y, a, b


def _worth(y: np.ndarray, s: np.ndarray, t: float, tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    acted = s >= t
    return np.where(y == 1, np.where(acted, tp, fn), np.where(acted, fp, tn))


@pytest.mark.parametrize("decimals", [None, 2])
def test_compare_point_values_match_sklearn_and_hand(decimals: int | None) -> None:
    y, a, b = _scores(3000, 1, decimals)
    result = compare(
        y,
        a,
        b,
        champion_threshold=0.4,
        challenger_threshold=0.45,
        value=OutcomeValues(300, -100, 0, 0),
    )
    assert result.auc.champion == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.auc.challenger == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert result.auc.difference == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    assert result.value is not None
    by_hand = [_worth(y, s, t, 300, -100, 0, 0).sum() for s, t in ((a, 0.4), (b, 0.45))]
    assert result.value.champion == pytest.approx(by_hand[0])
    assert result.value.challenger == pytest.approx(by_hand[1])
    assert (result.rows, result.positives) == (3000, int(y.sum()))


@pytest.mark.parametrize("decimals", [None, 2])
def test_each_resample_is_scored_as_sklearn_scores_the_same_rows(decimals: int | None) -> None:
    """The first chunk of resamples draws its rows as below; every resample's AUC and value
    difference equals sklearn's and a hand sum on those rows, with ties and per-row values."""
    n, seed = 800, 7
    y, a, b = _scores(n, 3, decimals)
    tp = np.random.default_rng(5).uniform(100, 500, n)  # a value per row (an expression)
    result = compare(
        y,
        a,
        b,
        champion_threshold=0.35,
        challenger_threshold=0.5,
        value=OutcomeValues(tp, -100.0, 0.0, 0.0),
        n_boot=20,
        seed=seed,
    )
    rows = np.random.default_rng(seed).integers(0, n, size=(20, n), dtype=np.int32)
    auc_gains = [roc_auc_score(y[r], b[r]) - roc_auc_score(y[r], a[r]) for r in rows]
    value_gains = [
        _worth(y[r], b[r], 0.5, tp[r], -100, 0, 0).sum()
        - _worth(y[r], a[r], 0.35, tp[r], -100, 0, 0).sum()
        for r in rows
    ]
    np.testing.assert_allclose(result.auc.draws, auc_gains, rtol=0, atol=1e-12)
    assert result.value is not None
    np.testing.assert_allclose(result.value.draws, value_gains, rtol=1e-12)


def _auc_by_ranks(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: the positives' mean rank (ties: midranks) against the negatives."""
    ranks = rankdata(s)
    positives = int(y.sum())
    negatives = len(y) - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def test_compare_intervals_agree_with_a_plain_bootstrap() -> None:
    """Percentile intervals and P(better) as a plain loop over the resamples gives them (with
    another seed: within Monte Carlo error)."""
    n = 2000
    y, a, b = _scores(n, 11)
    result = compare(y, a, b, champion_threshold=0.4, challenger_threshold=0.4, seed=0)
    rng = np.random.default_rng(12345)
    gains = []
    for _ in range(2000):
        r = rng.integers(0, n, n)
        gains.append(_auc_by_ranks(y[r], b[r]) - _auc_by_ranks(y[r], a[r]))
    assert _auc_by_ranks(y, a) == pytest.approx(roc_auc_score(y, a))
    low, high = np.quantile(gains, [0.025, 0.975])
    spread = high - low
    assert result.auc.ci[0] == pytest.approx(low, abs=0.08 * spread)
    assert result.auc.ci[1] == pytest.approx(high, abs=0.08 * spread)
    assert result.auc.p_better == pytest.approx(np.mean(np.array(gains) > 0), abs=0.03)
    assert result.value is None


def test_compare_is_seeded_and_fast() -> None:
    y, a, b = _scores(20_000, 2, 3)
    value = OutcomeValues(300, -100, 0, 0)
    kwargs: dict[str, Any] = {"champion_threshold": 0.4, "challenger_threshold": 0.45}
    started = time.process_time()
    first = compare(y, a, b, value=value, seed=4, **kwargs)
    seconds = time.process_time() - started
    again = compare(y, a, b, value=value, seed=4, **kwargs)
    assert first.to_dict() == again.to_dict()
    assert first.n_boot == 1000
    assert seconds < 1.5, f"1,000 resamples of 20,000 rows took {seconds:.2f} s of CPU"


def test_compare_refuses_one_class() -> None:
    y = np.zeros(50, dtype=int)
    with pytest.raises(EvaluationError, match="only negative labels"):
        compare(
            y, np.full(50, 0.2), np.full(50, 0.3), champion_threshold=0.5, challenger_threshold=0.5
        )


# --- a real retrain ------------------------------------------------------------------------------


@dataclass
class Loop:
    project: Project
    ticks: list[Tick]
    aliases: list[dict[str, int]]  # after each tick
    champion_summary: Any

    @property
    def accepted(self) -> RetrainResult:
        result = self.ticks[1].retrain
        assert result is not None, self.ticks[1].errors
        return result

    @property
    def rejected(self) -> RetrainResult:
        result = self.ticks[3].retrain
        assert result is not None, self.ticks[3].errors
        return result


@dataclass
class Monitored:
    """What the monitor reports on a tick: the firing events of these rules (the real monitor
    is the lead's; here the watch's reaction to its events is what is tested)."""

    events: list[Any]

    def summary_line(self) -> str:
        return f"{len(self.events)} alert events"


@dataclass
class Event:
    kind: str
    rule: str


def _project_folder(root: Path, sample: Path) -> Path:
    folder = root / "flights"
    shutil.copytree(FLIGHTS_EXAMPLE, folder, ignore=shutil.ignore_patterns(".mlprod", "data"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(sample)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    config.pop("example_data", None)
    # The spine's own columns only: a cheap matrix, and a logistic regression as the baseline
    config["features"] = [
        f for f in config["features"] if f["kind"] == "expr" and f["name"] != "plane_age"
    ]
    params = {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 50}
    config["train"]["models"] = [
        {
            "kind": "lightgbm",
            "params": {**params, "n_estimators": 60, "num_threads": 1},
            "search": {"num_leaves": {"low": 7, "high": 31, "integer": True}},
        }
    ]
    config["train"]["tuning"] = {"trials": 1, "seed": 0}
    config["train"].pop("ensemble", None)
    config["train"]["split"] = {
        "method": "out_of_time",
        "train_end": "2013-06-01",
        "valid_end": "2013-08-01",
        "gap": "7d",
    }
    config["retrain"] = {
        "policy": {"min_auc_gain": -1.0, "confidence": 0.5, "rollout": True},
        "schedule": "1d",
        "on_alerts": ["live_auc"],
        "comparison_window": "30d",
    }
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def _aliases(project: Project) -> dict[str, int]:
    from mlprod.registry.models import show_model

    return dict(show_model(project.tracking_uri(), project.registry_name)["aliases"])


def _changed(project: Project, drop: str, **policy: Any) -> Project:
    """The project with another retrain policy and without the feature ``drop``."""
    config = project.config
    retrain_config = config.retrain.model_copy(
        update={"policy": config.retrain.policy.model_copy(update=policy)}
    )
    features = [f for f in config.features if f.name != drop]
    changed = config.model_copy(update={"retrain": retrain_config, "features": features})
    return Project(project.folder, changed)


@pytest.fixture(scope="module")
def loop(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Loop:
    from mlprod.registry.models import promote

    root = tmp_path_factory.mktemp("retrain")
    sample = copy_flights(flights_db, root / "sample.duckdb", "day % 7 = 1")
    project = Project.load(_project_folder(root, sample))
    champion = project.train(CHAMPION_AS_OF)
    promote(project.tracking_uri(), project.registry_name, champion.model_version)

    quiet = lambda project, now: Monitored([])  # noqa: E731
    ticks, aliases = [], []
    for at, current, monitor in (
        (START, project, quiet),
        (AS_OF, project, quiet),
        (AS_OF + timedelta(hours=1), project, quiet),
        (
            AS_OF + timedelta(hours=2),
            _changed(project, "dest", min_auc_gain=0.5, confidence=0.9),
            lambda project, now: Monitored([Event("firing", "live_auc")]),
        ),
    ):
        ticks += watch(current, once=True, now=at, monitor=monitor)
        aliases.append(_aliases(project))
    return Loop(project, ticks, aliases, champion)


def _window_rows(project: Project, result: RetrainResult) -> pa.Table:
    table = project.build_matrix(AS_OF).table
    t = pc.cast(table.column("prediction_time"), pa.timestamp("us"))
    inside = pc.and_(
        pc.greater_equal(t, pa.scalar(result.window.start, pa.timestamp("us"))),
        pc.less(t, pa.scalar(result.window.end, pa.timestamp("us"))),
    )
    return table.filter(inside)


def test_the_schedule_starts_at_the_first_tick_and_retrains_once_due(loop: Loop) -> None:
    reasons = [tick.retrain_reason for tick in loop.ticks]
    assert reasons[0] is None and reasons[2] is None
    assert reasons[1] is not None and reasons[1].startswith("schedule: 1 day")
    assert reasons[3] == "alert live_auc fired"
    assert [tick.alerts for tick in loop.ticks] == [[], [], [], ["live_auc"]]
    assert loop.ticks[3].monitor == "1 alert events"
    assert [tick.errors for tick in loop.ticks] == [[], [], [], []]
    state = json.loads((loop.project.store / STATE_FILE).read_text())
    assert state["started"] == START.isoformat()
    assert state["last_retrain"] == (AS_OF + timedelta(hours=2)).isoformat()
    assert state["version"] == loop.rejected.challenger_version == 3


def test_the_comparison_window_is_after_both_validation_windows(loop: Loop) -> None:
    result = loop.accepted
    assert result.champion_version == 1 and result.challenger_version == 2
    assert result.champion_valid_end == datetime(2013, 8, 1)
    window = result.window
    assert window.end <= AS_OF and window.end - window.start == timedelta(days=30)
    assert window.start >= result.champion_valid_end
    assert result.challenger_valid_end + timedelta(days=7) == window.start


def test_the_comparison_matches_sklearn_on_the_same_window(loop: Loop) -> None:
    from mlprod.artefact import load_artefact
    from mlprod.registry.models import locate

    result, project = loop.accepted, loop.project
    rows = _window_rows(project, result)
    assert rows.num_rows == result.window.rows == result.comparison.rows
    y = np.asarray(rows.column("label").to_numpy(zero_copy_only=False), dtype=int)
    models = [load_artefact(locate(project.tracking_uri(), "flights", v).path) for v in (1, 2)]
    scores = [m.predict_proba(rows) for m in models]
    auc, value = result.comparison.auc, result.comparison.value
    assert auc.champion == pytest.approx(roc_auc_score(y, scores[0]), abs=1e-12)
    assert auc.challenger == pytest.approx(roc_auc_score(y, scores[1]), abs=1e-12)
    assert auc.challenger == pytest.approx(result.training.test_auc, abs=1e-9)  # its test window
    assert value is not None
    for total, model, s in (
        (value.champion, models[0], scores[0]),
        (value.challenger, models[1], scores[1]),
    ):
        assert total == pytest.approx(_worth(y, s, model.threshold, 300, -100, 0, 0).sum())
    for difference in (auc, value):
        low, high = difference.ci
        assert low < difference.difference < high
        assert difference.champion_ci[0] < difference.champion < difference.champion_ci[1]
        assert 0 <= difference.p_better <= 1


def test_the_challenger_is_registered_with_its_comparison(loop: Loop) -> None:
    from mlprod.registry._store import client_for

    result, project = loop.accepted, loop.project
    client = client_for(project.tracking_uri())
    tags = client.get_model_version("flights", "2").tags
    assert tags["mlprod.comparison.champion_version"] == "1"
    assert float(tags["mlprod.comparison.auc_difference"]) == result.comparison.auc.difference
    assert json.loads(tags["mlprod.comparison.value_difference_ci"]) == list(
        result.comparison.value.ci  # type: ignore[union-attr]
    )
    assert tags["mlprod.comparison.decision"] == "accepted"
    run = client.get_model_version("flights", "2").run_id
    logged = {a.path for a in client.list_artifacts(run)}
    assert {"flights-v2-comparison.txt", "flights-v2-comparison.json"} <= logged
    text = Path(result.readout_path).read_text()
    assert "AUC: champion" in text and "value (champion at threshold" in text
    assert f"{result.comparison.auc.difference:+.4f}" in text
    assert "decision: challenger accepted: P(AUC gain > -1.0000) = 1.000 >= 0.5" in text
    saved = json.loads(Path(result.readout_path).with_suffix(".json").read_text())
    assert saved["comparison"]["auc"]["ci"] == list(result.comparison.auc.ci)


def test_the_policy_sets_the_alias_and_starts_a_rollout(loop: Loop) -> None:
    from mlprod.serve.routing.state import RUNNING, RoutingStore

    result, project = loop.accepted, loop.project
    assert loop.aliases[0] == {"champion": 1}
    assert loop.aliases[1] == {"champion": 1, "challenger": 2}
    assert result.alias == "challenger" and result.rollout_error is None
    store = RoutingStore.for_log(project.config.log, project.folder)
    try:
        state = store.rollout()
        audit = store.audit_trail()
    finally:
        store.close()
    assert state is not None and result.rollout is not None
    assert state.rollout_id == result.rollout.rollout_id
    assert (state.challenger, state.control, state.status) == ("flights/2", "flights/1", RUNNING)
    assert state.steps == (5, 25, 50, 100)
    assert any(
        row.action == "rollout.start" and row.detail.get("via") == "retrain" for row in audit
    )


def test_a_policy_the_challenger_cannot_meet_leaves_the_aliases(loop: Loop) -> None:
    result = loop.rejected
    assert not result.decision.accepted
    assert result.decision.reasons[0].startswith("P(AUC gain > +0.5000) = 0.000 < 0.9")
    assert result.alias is None and result.rollout is None
    assert loop.aliases[3] == loop.aliases[2] == {"champion": 1, "challenger": 2}
    assert "not accepted (the champion stays)" in result.readout


def test_a_champion_whose_features_changed_is_scored_with_its_own_definitions(
    loop: Loop,
) -> None:
    """The last challenger trains without the feature 'dest', which the champion reads: the
    champion is scored on its recorded definitions, exactly as on the earlier comparison of
    the same window."""
    from mlprod.artefact import load_artefact
    from mlprod.registry.models import locate

    uri = loop.project.tracking_uri()
    assert "dest" in load_artefact(locate(uri, "flights", 1).path).features
    assert "dest" not in load_artefact(locate(uri, "flights", 3).path).features
    accepted, rejected = loop.accepted.comparison, loop.rejected.comparison
    assert loop.rejected.window == loop.accepted.window
    assert rejected.auc.champion == accepted.auc.champion
    assert rejected.value is not None and accepted.value is not None
    assert rejected.value.champion == accepted.value.champion
    assert rejected.auc.challenger != accepted.auc.challenger


def test_without_retune_the_champion_s_tuned_parameters_are_kept(loop: Loop) -> None:
    from mlprod.artefact import load_artefact
    from mlprod.registry.models import locate

    project = loop.project
    champion = load_artefact(locate(project.tracking_uri(), "flights", 1).path)
    challenger = load_artefact(locate(project.tracking_uri(), "flights", 2).path)
    trained = challenger.lineage["train"]["models"][0]
    assert trained["search"] == {}
    assert trained["params"]["num_leaves"] == champion.scorer.model.params["num_leaves"]  # type: ignore[attr-defined]


# --- errors and stopping ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_champion(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nochampion")
    return _project_folder(root, flights_db)


def test_retrain_needs_a_champion(no_champion: Path) -> None:
    with pytest.raises(RegistryError) as raised:
        retrain(Project.load(no_champion))
    message = str(raised.value)
    assert message.startswith("retrain compares a challenger with the champion, but none was")
    assert message.endswith("promote a version first, e.g. 'mlprod models promote flights 1'")


def test_the_commands_answer_errors_in_one_line(no_champion: Path) -> None:
    import mlprod.cli_loop  # noqa: F401 (registers the commands)
    from mlprod.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["retrain", "--project", str(no_champion)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: retrain compares a challenger with the champion")
    assert "Traceback" not in result.output + result.stderr
    result = runner.invoke(app, ["watch", "--project", str(no_champion), "--interval", "soon"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid --interval:")


def test_watch_stops_cleanly_on_sigterm(no_champion: Path) -> None:
    script = (
        "import sys\n"
        "from mlprod import Project\n"
        "from mlprod.loop.watch import watch\n"
        "class Quiet:\n"
        "    events = []\n"
        "    def summary_line(self): return 'quiet'\n"
        "hour = __import__('datetime').timedelta(hours=1)\n"
        "ticks = watch(Project.load(sys.argv[1]), interval=hour,\n"
        "              monitor=lambda project, now: Quiet(),\n"
        "              on_tick=lambda tick: print('tick', flush=True))\n"
        "print('stopped after', len(ticks), flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(no_champion)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "tick\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == "stopped after 1\n"
