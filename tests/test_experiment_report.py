"""``mlprod experiment report``: the readout of simulated experiments written through the real
prediction log (a SQLite file and a fresh schema of the real PostgreSQL), with simulated,
seeded scores and outcomes joined by feedback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from conftest import copy_example
from psycopg import sql
from typer.testing import CliRunner, Result

from mlprod import cli_experiment  # noqa: F401  (registers `mlprod experiment`)
from mlprod.cli import app
from mlprod.errors import EvaluationError
from mlprod.evaluate.experiment import ExperimentReport, experiment_report
from mlprod.evaluate.experiment_assignment import WeightPeriod, parse_weights
from mlprod.evaluate.value import value_at
from mlprod.project.training import ValueConfig
from mlprod.serve.predlog import (
    Feedback,
    LogSpec,
    PredictionLog,
    PredictionRecord,
    ScoringError,
    open_prediction_log,
)

T0 = datetime(2026, 6, 1, 8, 0, 0)
WORTH = ValueConfig(tp=300, fp=-100, fn=0, tn=0, currency="USD")
HALF = {"control": 50.0, "challenger": 50.0}
THRESHOLD = 0.5


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def spec(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LogSpec]:
    """Where a test's logs live; every ``open_log`` call gets a log of its own."""
    if request.param == "sqlite":
        yield LogSpec()
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"mlprod_test_{uuid.uuid4().hex[:12]}"
    try:
        yield LogSpec(kind="postgres", url=url, schema=schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def open_log(spec: LogSpec, folder: Path) -> PredictionLog:
    """A fresh log: a new SQLite file, or the PostgreSQL schema emptied first."""
    log = open_prediction_log(spec, folder)
    if spec.kind == "postgres":
        assert spec.url is not None
        with psycopg.connect(spec.url, autocommit=True) as conn:
            tables = ("mlprod_feedback", "mlprod_predictions", "mlprod_scoring_errors")
            for table in tables:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(spec.schema_, table)))
    return log


@dataclass(frozen=True)
class Arm:
    name: str
    signal: float  # how much of the outcome the scores carry
    requests: int


def simulate(
    log: PredictionLog,
    arms: list[Arm],
    *,
    seed: int,
    experiment: str = "flights-ab",
    label_share: float = 0.8,
    shadow: Arm | None = None,
    fallbacks: int = 0,
    start: int = 0,
    t0: datetime = T0,
) -> dict[str, Any]:
    """Write the predictions of an experiment, a shadow scored on every 4th served request,
    ``fallbacks`` challenger requests answered by the control (one error per five), and
    labels for ``label_share`` of the predictions through feedback; the i-th request is made
    ``start + i`` seconds after ``t0``, the arms one after the other. Returns what was written."""
    rng = np.random.default_rng(seed)
    records: list[PredictionRecord] = []
    outcomes: dict[str, bool] = {}
    written: dict[str, list[PredictionRecord]] = {}
    index = start

    def add(arm: Arm, latent: float, positive: bool, served: bool, assignment: str, i: int) -> None:
        score = float(1 / (1 + np.exp(-(arm.signal * latent + rng.normal() - 1.0))))
        variant = "control" if assignment == "fallback" else arm.name
        record = PredictionRecord(
            prediction_id=uuid.uuid4().hex,
            predicted_at=t0 + timedelta(seconds=i),
            prediction_time=t0 + timedelta(seconds=i),
            model_name="flights",
            model_version={"control": "1", "challenger": "2"}.get(variant, "3"),
            keys={"flight_id": i},
            request={"flight_id": i, "tailnum": f"N{i % 500}"},
            features={"distance": 100 + i % 7},
            score=score,
            decision=score >= THRESHOLD,
            experiment=experiment,
            variant=variant,
            assignment=assignment,
            served=served,
            latency_ms=float(rng.lognormal(1.0, 0.3)),
        )
        records.append(record)
        outcomes[record.prediction_id] = positive
        written.setdefault(("" if served else "shadow:") + variant, []).append(record)

    for arm in arms:
        for _ in range(arm.requests):
            latent = float(rng.normal())
            positive = bool(rng.random() < 1 / (1 + np.exp(-(latent - 1.0))))
            assignment = "random"
            if fallbacks and arm.name == "challenger":
                # A failed call of five records falls back as a whole: one error, five rows.
                if fallbacks % 5 == 0:
                    log.record_error(
                        ScoringError(experiment, "challenger", "flights", "2", "ValueError: boom")
                    )
                fallbacks -= 1
                assignment = "fallback"
            add(arm, latent, positive, True, assignment, index)
            if shadow is not None and index % 4 == 0:
                add(shadow, latent, positive, False, "shadow", index)
            index += 1
    for start in range(0, len(records), 2000):
        log.append(records[start : start + 2000])
    labelled = [pid for pid in outcomes if rng.random() < label_share]
    if labelled:
        log.add_feedback(
            [Feedback(label=outcomes[pid], prediction_id=pid, observed_at=T0) for pid in labelled]
        )
    return {"records": written, "labels": {pid: outcomes[pid] for pid in labelled}}


@pytest.fixture(scope="module")
def real_difference(
    spec: LogSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExperimentReport, dict[str, Any]]]:
    """A challenger whose scores carry more of the outcome than the control's, 50/50."""
    log = open_log(spec, tmp_path_factory.mktemp("real"))
    try:
        arms = [Arm("control", 0.5, 2000), Arm("challenger", 2.0, 2000)]
        written = simulate(log, arms, seed=1, shadow=Arm("next", 1.0, 0), fallbacks=25)
        report = experiment_report(
            log, "flights-ab", weights=HALF, weights_source="test", value=WORTH
        )
        yield report, written
    finally:
        log.close()


def test_a_real_difference_is_detected(
    real_difference: tuple[ExperimentReport, dict[str, Any]],
) -> None:
    report, _ = real_difference
    assert [v.name for v in report.variants] == ["control", "challenger"]
    tests = report.variants[1].vs_control
    assert tests is not None
    for metric in ("auc", "value_per_1000"):
        result = tests[metric]
        assert result is not None
        assert result.p_value < 0.05 and result.significant, metric
        assert result.ci[0] > 0, metric
    outcomes = [v.outcomes for v in report.variants]
    assert outcomes[0] is not None and outcomes[1] is not None
    assert outcomes[0].auc is not None and outcomes[1].auc is not None
    assert outcomes[1].auc.value > outcomes[0].auc.ci[1]


def test_counts_latency_scores_and_shadows_are_what_was_logged(
    real_difference: tuple[ExperimentReport, dict[str, Any]],
) -> None:
    report, written = real_difference
    records, labels = written["records"], written["labels"]
    for variant in report.variants:
        rows = records[variant.name]
        assert variant.requests == len(rows)
        latency = np.array([r.latency_ms for r in rows])
        assert variant.latency_ms == pytest.approx(
            {"p50": np.quantile(latency, 0.5), "p99": np.quantile(latency, 0.99)}
        )
        scores = np.array([r.score for r in rows])
        assert variant.score is not None
        assert variant.score["mean"] == pytest.approx(scores.mean())
        assert variant.score["p90"] == pytest.approx(np.quantile(scores, 0.9))
        assert variant.decision_rate is not None
        assert variant.decision_rate.successes == sum(r.decision for r in rows)
        assert variant.outcomes is not None
        assert variant.outcomes.labelled == sum(r.prediction_id in labels for r in rows)
    control, challenger = report.variants
    assert (control.models, challenger.models) == (("flights/1",), ("flights/2",))
    assert (control.fallbacks, challenger.fallbacks, challenger.errors) == (25, 0, 5)
    (shadow,) = report.shadows
    assert (shadow.name, shadow.requests, shadow.vs_control) == ("next", 1000, None)
    # The assignment chose the challenger for the requests that fell back to the control.
    assert report.sample_ratio is not None
    assert report.sample_ratio.observed == {"control": 2000, "challenger": 2000}
    assert not report.sample_ratio.mismatch


def test_business_value_is_the_evaluation_value_at_the_deployed_threshold(
    real_difference: tuple[ExperimentReport, dict[str, Any]],
) -> None:
    report, written = real_difference
    control = report.variants[0]
    labelled = [r for r in written["records"]["control"] if r.prediction_id in written["labels"]]
    y = [written["labels"][r.prediction_id] for r in labelled]
    total = value_at(y, [r.score for r in labelled], THRESHOLD, WORTH)
    assert control.outcomes is not None and control.outcomes.value is not None
    assert control.outcomes.value_total == pytest.approx(total)
    assert control.outcomes.value.value == pytest.approx(total / len(labelled) * 1000)


def test_an_a_a_experiment_flags_nothing(spec: LogSpec, tmp_path: Path) -> None:
    """One end-to-end A/A run; the false positive rate over many runs is in the stats tests."""
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 1500), Arm("challenger", 1.0, 1500)], seed=2)
        report = experiment_report(log, "flights-ab", weights=HALF, value=WORTH)
    finally:
        log.close()
    tests = report.variants[1].vs_control
    assert tests is not None
    flagged = [name for name, result in tests.items() if result is None or result.significant]
    assert flagged == []
    assert report.sample_ratio is not None and not report.sample_ratio.mismatch


@pytest.mark.parametrize(
    ("control", "challenger", "mismatch"), [(600, 400, True), (500, 500, False)]
)
def test_sample_ratio_mismatch(
    spec: LogSpec, tmp_path: Path, control: int, challenger: int, mismatch: bool
) -> None:
    log = open_log(spec, tmp_path)
    try:
        arms = [Arm("control", 1.0, control), Arm("challenger", 1.0, challenger)]
        simulate(log, arms, seed=3, label_share=0)
        report = experiment_report(log, "flights-ab", weights=HALF)
    finally:
        log.close()
    assert report.sample_ratio is not None
    assert report.sample_ratio.mismatch is mismatch
    assert report.sample_ratio.expected == {"control": 500.0, "challenger": 500.0}


def test_sample_ratio_follows_the_weights_of_each_policy_revision(
    spec: LogSpec, tmp_path: Path
) -> None:
    """A rollout step from 90/10 to 50/50: right against the revisions, a mismatch against
    the last weights alone."""
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 900), Arm("challenger", 1.0, 100)], seed=10)
        arms = [Arm("control", 1.0, 500), Arm("challenger", 1.0, 500)]
        simulate(log, arms, seed=11, label_share=0, start=1000)
        periods = [
            WeightPeriod(T0, {"control": 90, "challenger": 10}),
            WeightPeriod(T0 + timedelta(seconds=1000), HALF),
        ]
        stepwise = experiment_report(log, "flights-ab", weights=periods)
        constant = experiment_report(log, "flights-ab", weights=HALF)
    finally:
        log.close()
    assert stepwise.sample_ratio is not None and constant.sample_ratio is not None
    assert not stepwise.sample_ratio.mismatch
    # The first 5 s of the 50/50 period (5 control requests) are left out.
    assert stepwise.sample_ratio.observed == {"control": 1395, "challenger": 600}
    assert stepwise.sample_ratio.expected == {"control": 1397.5, "challenger": 597.5}
    assert stepwise.sample_ratio.dof == 2
    assert stepwise.notes[-1] == (
        "5 predictions within 5 s after a policy change are left out of the sample-ratio check"
    )
    assert constant.sample_ratio.mismatch
    assert stepwise.to_dict()["weight_periods"] == [
        {"from": "2026-06-01T08:00:00", "weights": {"control": 90, "challenger": 10}},
        {"from": "2026-06-01T08:16:40", "weights": HALF},
    ]


def test_a_variant_of_weight_zero_that_gets_requests_is_a_mismatch(
    spec: LogSpec, tmp_path: Path
) -> None:
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 500), Arm("challenger", 1.0, 3)], seed=12)
        report = experiment_report(log, "flights-ab", weights={"control": 1, "challenger": 0})
    finally:
        log.close()
    assert report.sample_ratio is not None and report.sample_ratio.mismatch
    assert report.to_dict()["sample_ratio"]["chi2"] is None


def test_without_outcomes_the_outcome_metrics_wait(spec: LogSpec, tmp_path: Path) -> None:
    log = open_log(spec, tmp_path)
    try:
        simulate(
            log, [Arm("control", 1.0, 300), Arm("challenger", 1.0, 300)], seed=4, label_share=0
        )
        report = experiment_report(log, "flights-ab", value=WORTH)
    finally:
        log.close()
    assert [v.outcomes for v in report.variants] == [None, None]
    tests = report.variants[1].vs_control
    assert tests is not None and tests["decision_rate"] is not None
    assert [tests[k] for k in ("positive_rate", "auc", "value_per_1000")] == [None, None, None]
    assert report.sample_ratio is None  # no weights given
    assert report.to_dict()["variants"][0]["outcomes"] is None


def test_since_keeps_later_predictions_only(spec: LogSpec, tmp_path: Path) -> None:
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 100), Arm("challenger", 1.0, 100)], seed=5)
        report = experiment_report(
            log, "flights-ab", weights=HALF, since=T0 + timedelta(seconds=150)
        )
        with pytest.raises(EvaluationError) as raised:
            experiment_report(log, "flights-ab", since=T0 + timedelta(days=1))
    finally:
        log.close()
    assert [v.requests for v in report.variants] == [0, 50]
    assert str(raised.value) == (
        "experiment 'flights-ab' has no prediction logged since 2026-06-02T08:00:00; "
        "give an earlier --since"
    )


def test_unknown_experiment_says_which_there_are(spec: LogSpec, tmp_path: Path) -> None:
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 5), Arm("challenger", 1.0, 5)], seed=6)
        simulate(log, [Arm("control", 1.0, 5)], seed=7, experiment="pricing")
        with pytest.raises(EvaluationError) as raised:
            experiment_report(log, "flight-ab")
    finally:
        log.close()
    assert str(raised.value) == (
        "no experiment 'flight-ab' in the prediction log (did you mean 'flights-ab'?); "
        "it has 'flights-ab', 'pricing'"
    )


def test_parse_weights() -> None:
    assert parse_weights("control=50, challenger=50") == HALF
    assert list(parse_weights("b=1,a=3")) == ["b", "a"]
    with pytest.raises(EvaluationError) as raised:
        parse_weights("control=50,challenger")
    assert str(raised.value) == (
        "--weights takes NAME=WEIGHT pairs separated by commas, e.g. control=50,challenger=50; "
        "got 'challenger' in 'control=50,challenger'"
    )


# --- the command ---------------------------------------------------------------------------

runner = CliRunner()


def mlprod(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def report_json(experiment: str, folder: Path, *options: str) -> dict[str, Any]:
    """``mlprod experiment report EXPERIMENT -p FOLDER --json OPTIONS``, read back."""
    result = mlprod("experiment", "report", experiment, "-p", folder, "--json", *options)
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flights example (train.value tp 300, fp -100) with a logged experiment, outcomes
    for its first 1,500 predictions only, and a second experiment without any outcome."""
    folder = copy_example(tmp_path_factory.mktemp("cli"))
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    assert config["train"]["value"] == {"tp": 300, "fp": -100, "fn": 0, "tn": 0}
    log = open_prediction_log(LogSpec(), folder)
    try:
        simulate(log, [Arm("control", 0.5, 1500), Arm("challenger", 2.0, 1500)], seed=8)
        simulate(
            log,
            [Arm("control", 1.0, 50), Arm("challenger", 1.0, 50)],
            seed=9,
            experiment="waiting",
            label_share=0,
        )
    finally:
        log.close()
    return folder


def test_cli_prints_the_tables(project: Path) -> None:
    result = mlprod(
        "experiment",
        "report",
        "flights-ab",
        "--project",
        project,
        "--weights",
        "control=50,challenger=50",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("experiment 'flights-ab': control 'control'\n")
    for line in ("requests", "latency p50 / p99 ms", "decision rate", "AUC", "value per 1,000"):
        assert line in out
    assert "differs" in out  # the challenger's AUC
    assert (
        "sample ratio vs weights from --weights: control 1,500 (expected 1,500), challenger " in out
    )
    assert ": ok" in out


def test_cli_json_has_the_documented_fields(project: Path) -> None:
    report = report_json("flights-ab", project, "--weights", "control=1,challenger=1")
    assert set(report) == {
        "experiment",
        "since",
        "control",
        "level",
        "alpha",
        "weights",
        "weight_periods",
        "weights_source",
        "unit",
        "currency",
        "variants",
        "shadows",
        "sample_ratio",
        "notes",
    }
    assert (report["control"], report["alpha"], report["currency"]) == ("control", 0.05, "")
    control, challenger = report["variants"]
    assert set(control) == {
        "name",
        "models",
        "requests",
        "fallbacks",
        "errors",
        "latency_ms",
        "score",
        "decision_rate",
        "outcomes",
        "vs_control",
    }
    assert control["outcomes"]["auc"]["method"] == "bootstrap"
    assert set(control["decision_rate"]) == {"value", "ci", "successes", "n", "design_effect"}
    assert set(control["outcomes"]) == {
        "labelled",
        "positive_rate",
        "auc",
        "value_per_1000",
        "value_total",
        "notes",
    }
    assert control["vs_control"] is None
    auc = challenger["vs_control"]["auc"]
    assert set(auc) == {"difference", "ci", "p_value", "significant", "method"}
    assert auc["significant"] and auc["ci"][0] > 0 and auc["method"] == "DeLong z-test"
    assert set(report["sample_ratio"]) == {
        "observed",
        "expected",
        "chi2",
        "dof",
        "p_value",
        "threshold",
        "mismatch",
    }


def test_cli_without_outcomes_says_so(project: Path) -> None:
    result = mlprod("experiment", "report", "waiting", "--project", project)
    assert result.exit_code == 0, result.output
    assert "no outcomes yet" in result.stdout
    assert "sample ratio: not checked (no weights" in result.stdout
    shown = report_json("waiting", project)
    assert [v["outcomes"] for v in shown["variants"]] == [None, None]


def test_cli_unknown_experiment_is_one_line(project: Path) -> None:
    result = mlprod("experiment", "report", "flights-a", "--project", project)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "error: no experiment 'flights-a' in the prediction log (did you mean 'flights-ab'?); "
        "it has 'flights-ab', 'waiting'\n"
    )


def small_project(tmp_path: Path, deploy: dict[str, Any] | None = None) -> Path:
    """The flights example with a small 50/50 experiment logged (and ``deploy:`` if given)."""
    folder = copy_example(tmp_path)
    if deploy is not None:
        config = yaml.safe_load((folder / "mlprod.yaml").read_text())
        config["deploy"] = deploy
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log = open_prediction_log(LogSpec(), folder)
    try:
        simulate(log, [Arm("control", 1.0, 60), Arm("challenger", 1.0, 40)], seed=13)
    finally:
        log.close()
    return folder


def test_cli_takes_the_weights_of_the_deploy_section(tmp_path: Path) -> None:
    variants = [
        {"name": "control", "model": "flights@champion", "weight": 60},
        {"name": "challenger", "model": "flights/2", "weight": 40},
    ]
    folder = small_project(tmp_path, {"experiment": "flights-ab", "variants": variants})
    shown = report_json("flights-ab", folder)
    assert (shown["weights"], shown["weights_source"]) == (
        {"control": 60.0, "challenger": 40.0},
        "mlprod.yaml deploy",
    )
    assert shown["sample_ratio"]["expected"] == {"control": 60.0, "challenger": 40.0}
    # --weights wins over the config.
    given = report_json("flights-ab", folder, "--weights", "control=1,challenger=1")
    assert given["weights_source"] == "--weights"


def test_cli_takes_the_weights_the_routing_store_served(tmp_path: Path) -> None:
    from mlprod.serve.routing.policy import RoutingPolicy, Variant
    from mlprod.serve.routing.state import Action, RoutingStore

    folder = small_project(tmp_path)
    store = RoutingStore.for_log(LogSpec(), folder)
    try:
        variants = (
            Variant("control", "flights@champion", 3),
            Variant("challenger", "flights/2", 2),
        )
        store.publish(RoutingPolicy("flights-ab", variants), Action("test", "routing.set"))
    finally:
        store.close()
    result = mlprod("experiment", "report", "flights-ab", "-p", folder)
    assert result.exit_code == 0, result.output
    assert "sample ratio vs weights from the routing store (revision 1): " in result.stdout
    shown = report_json("flights-ab", folder)
    assert shown["weights"] == {"control": 3.0, "challenger": 2.0}
    assert shown["sample_ratio"]["observed"] == {"control": 60, "challenger": 40}
    assert not shown["sample_ratio"]["mismatch"]


def write_sticky(log: PredictionLog, seed: int) -> None:
    """100 planes per variant, assigned whole (sticky by tailnum): the control's planes fly
    20 times each, the challenger's 12, and the challenger's first plane fails on its first
    3 flights (answered by the control). Outcomes and scores share a per-plane effect."""
    rng = np.random.default_rng(seed)
    records: list[PredictionRecord] = []
    labels: list[bool] = []
    for plane in range(200):
        variant, flights = ("control", 20) if plane % 2 == 0 else ("challenger", 12)
        effect = rng.normal()
        for flight in range(flights):
            latent = effect + rng.normal()
            score = float(1 / (1 + np.exp(-(latent + rng.normal() - 1.0))))
            fallback = plane == 1 and flight < 3
            i = len(records)
            records.append(
                PredictionRecord(
                    prediction_id=uuid.uuid4().hex,
                    predicted_at=T0 + timedelta(seconds=i),
                    prediction_time=T0 + timedelta(seconds=i),
                    model_name="flights",
                    model_version="1" if variant == "control" or fallback else "2",
                    keys={"flight_id": i},
                    request={"flight_id": i, "tailnum": f"N{plane}"},
                    features={},
                    score=score,
                    decision=score >= THRESHOLD,
                    experiment="flights-ab",
                    variant="control" if fallback else variant,
                    assignment="fallback" if fallback else "sticky",
                    latency_ms=1.0,
                )
            )
            labels.append(bool(rng.random() < 1 / (1 + np.exp(-(latent - 1.0)))))
    log.record_error(ScoringError("flights-ab", "challenger", "flights", "2", "boom"))
    log.append(records)
    log.add_feedback(
        [
            Feedback(label=y, prediction_id=r.prediction_id)
            for r, y in zip(records, labels, strict=True)
        ]
    )


def test_sticky_assignment_counts_entities_and_clusters_their_requests(
    spec: LogSpec, tmp_path: Path
) -> None:
    log = open_log(spec, tmp_path)
    try:
        write_sticky(log, seed=14)
        by_plane = experiment_report(log, "flights-ab", weights=HALF, unit="tailnum", value=WORTH)
        by_request = experiment_report(log, "flights-ab", weights=HALF, value=WORTH)
    finally:
        log.close()
    assert by_plane.sample_ratio is not None and by_request.sample_ratio is not None
    assert by_plane.sample_ratio.observed == {"control": 100, "challenger": 100}
    assert not by_plane.sample_ratio.mismatch
    assert by_request.sample_ratio.observed == {"control": 2000, "challenger": 1200}
    assert by_request.sample_ratio.mismatch
    control = by_plane.variants[0]
    assert control.decision_rate is not None and control.decision_rate.design_effect > 1.5
    assert by_request.variants[0].decision_rate is not None
    assert by_request.variants[0].decision_rate.design_effect == 1.0
    tests = by_plane.variants[1].vs_control
    assert tests is not None and tests["auc"] is not None
    assert tests["auc"].method == "clustered DeLong z-test"
    # The clustered intervals are wider than those taking every request as independent.
    naive = by_request.variants[1].vs_control
    assert naive is not None and naive["auc"] is not None
    assert np.ptp(tests["auc"].ci) > np.ptp(naive["auc"].ci)
    assert by_plane.to_dict()["unit"] == "tailnum"


def test_cli_takes_the_sticky_field_of_the_deploy_section(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    config["deploy"] = {
        "experiment": "flights-ab",
        "assign_by": "tailnum",
        "variants": [
            {"name": "control", "model": "flights@champion", "weight": 1},
            {"name": "challenger", "model": "flights/2", "weight": 1},
        ],
    }
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log = open_prediction_log(LogSpec(), folder)
    try:
        write_sticky(log, seed=15)
    finally:
        log.close()
    result = mlprod("experiment", "report", "flights-ab", "-p", folder)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "experiment 'flights-ab': control 'control'; units: tailnum (sticky)\n"
    )
    assert "control 100 tailnums (expected 100), challenger 100 tailnums (expected 100)" in (
        result.stdout
    )


def test_cli_checks_each_revision_of_a_rollout_against_its_weights(tmp_path: Path) -> None:
    """Revision 1 served 90/10, revision 2 50/50: the counts match the revisions, not the
    last weights alone."""
    from mlprod.serve.routing.policy import RoutingPolicy, Variant
    from mlprod.serve.routing.state import Action, RoutingStore

    folder = copy_example(tmp_path)
    log = open_prediction_log(LogSpec(), folder)
    store = RoutingStore.for_log(LogSpec(), folder)
    try:

        def publish(control: float, challenger: float) -> datetime:
            variants = (
                Variant("control", "flights@champion", control),
                Variant("challenger", "flights/2", challenger),
            )
            store.publish(RoutingPolicy("flights-ab", variants), Action("test", "routing.set"))
            return store.revisions()[-1][0]

        first = publish(90, 10)
        arms = [Arm("control", 1.0, 900), Arm("challenger", 1.0, 100)]
        simulate(log, arms, seed=16, t0=first - timedelta(seconds=3000))
        second = publish(50, 50)
        arms = [Arm("control", 1.0, 500), Arm("challenger", 1.0, 500)]
        simulate(log, arms, seed=17, t0=second + timedelta(seconds=10))
    finally:
        store.close()
        log.close()
    shown = report_json("flights-ab", folder)
    assert shown["weights_source"] == "the routing store (revision 1 to 2)"
    assert [p["weights"] for p in shown["weight_periods"]] == [
        {"control": 90.0, "challenger": 10.0},
        {"control": 50.0, "challenger": 50.0},
    ]
    ratio = shown["sample_ratio"]
    assert (ratio["observed"], ratio["dof"], ratio["mismatch"]) == (
        {"control": 1400, "challenger": 600},
        2,
        False,
    )
    last_only = report_json("flights-ab", folder, "--weights", "control=1,challenger=1")
    assert last_only["sample_ratio"]["mismatch"]


def test_per_row_values_are_not_priced_yet(spec: LogSpec, tmp_path: Path) -> None:
    log = open_log(spec, tmp_path)
    try:
        simulate(log, [Arm("control", 1.0, 100), Arm("challenger", 1.0, 100)], seed=18)
        per_row = ValueConfig(tp="0.2 * distance", fp=-100, fn=0, tn=0)
        report = experiment_report(log, "flights-ab", value=per_row)
    finally:
        log.close()
    outcomes = report.variants[0].outcomes
    assert outcomes is not None and outcomes.value is None and outcomes.auc is not None
    assert report.notes == (
        "train.value gives tp per row, which the readout cannot price from the log yet: "
        "business value is not shown",
    )
