"""Gradual rollouts: the guardrail arithmetic, the routing store on real SQLite and PostgreSQL,
the controller's state machine on a real prediction log, and (at the end) whole rollouts on a
real server on loopback with real registered versions: one that completes and promotes, one
whose shifted scores roll it back, and one that survives a server restart."""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from live_server import start_server

from mlprod.errors import RolloutError
from mlprod.serve.predlog import (
    PostgresPredictionLog,
    PredictionLog,
    PredictionRecord,
    ScoringError,
    SqlitePredictionLog,
)
from mlprod.serve.routing.guardrails import GuardrailLimits, StepTraffic, judge, psi
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.rollout import (
    RolloutController,
    abort_rollout,
    parse_every,
    parse_steps,
    start_rollout,
)
from mlprod.serve.routing.state import Action, RolloutState, RoutingStore

UNIFORM = [i / 10 for i in range(11)]  # a reference whose deciles are 0, 0.1, ..., 1


# --- guardrail arithmetic -------------------------------------------------------------------


def test_psi_matches_a_hand_computation() -> None:
    # 20 scores: 4 in each of the first two deciles' bins, 2 in the next four, 1 in the last four.
    scores = [0.05] * 4 + [0.15] * 4 + [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    scores += [0.65, 0.75, 0.85, 0.95]
    # actual shares 0.2, 0.2, 0.1 x 4, 0.05 x 4 against 0.1 each:
    # 2 x (0.1 ln 2) + 4 x (-0.05 ln 0.5) = 0.4 ln 2
    assert psi(UNIFORM, scores) == pytest.approx(0.4 * math.log(2), abs=1e-12)
    assert psi(UNIFORM, np.linspace(0.01, 0.99, 100)) == pytest.approx(0.0, abs=1e-12)


def test_psi_bins_are_closed_on_the_right_and_empty_bins_count_as_a_floor() -> None:
    # 0.1 is in the first bin (-inf, 0.1]; nine bins are empty and count as 1e-4 each.
    expected = 0.9 * math.log(10) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(UNIFORM, [0.1, 0.0, -3.0]) == pytest.approx(expected, rel=1e-12)


def test_psi_gives_tied_deciles_tenths_to_the_bin_ending_at_the_tie() -> None:
    # Half the reference is exactly 0 (deciles 0..5 are 0): bins (-inf, 0], (0, .2], (.2, .4],
    # (.4, .6], (.6, .8], (.8, inf) hold 0.5 (five tenths), then 0.1 each.
    deciles = [0, 0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0]
    scores = [0.0] * 5 + [0.1, 0.3, 0.5, 0.7, 0.9]
    assert psi(deciles, scores) == pytest.approx(0.0, abs=1e-12)
    shifted = [0.0] * 3 + [0.1] * 3 + [0.3, 0.5, 0.7, 0.9]
    # bins: 0.3 vs 0.5, 0.3 vs 0.1, rest equal
    hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.3 - 0.1) * math.log(0.3 / 0.1)
    assert psi(deciles, shifted) == pytest.approx(hand, rel=1e-12)


def _traffic(
    n: int = 100, errors: int = 0, scores: Any = None, mine_ms: float = 2.0, theirs_ms: float = 2.0
) -> StepTraffic:
    return StepTraffic(
        challenger_scores=np.asarray(
            scores if scores is not None else np.linspace(0.01, 0.99, n), dtype=float
        ),
        challenger_latency_ms=np.full(n, mine_ms),
        control_latency_ms=np.full(n, theirs_ms),
        challenger_errors=errors,
    )


def test_judge_waits_for_min_requests_then_names_each_tripped_guardrail() -> None:
    limits = GuardrailLimits(min_requests=100)
    assert not judge(_traffic(50, errors=40), limits, UNIFORM).judged
    assert judge(_traffic(100), limits, UNIFORM).passed
    verdict = judge(_traffic(99, errors=1, scores=[0.95] * 99, mine_ms=20.0), limits, UNIFORM)
    assert [name for name, _ in verdict.tripped] == ["p99_ratio", "score_psi"]  # 1% is allowed
    verdict = judge(_traffic(98, errors=2), limits, UNIFORM)
    assert verdict.reason() == "error_rate: 2 of 100 challenger requests failed (2.00% > 1.00%)"
    # 2.5 times slower, but only by 3 ms: noise at this scale.
    assert judge(_traffic(100, mine_ms=5.0), limits, UNIFORM).passed
    assert judge(_traffic(100, mine_ms=20.0, theirs_ms=8.0), limits, UNIFORM).reason() == (
        "p99_ratio: challenger p99 latency 20.0 ms is 2.50x the control's 8.0 ms (limit 1.5x)"
    )


def test_steps_and_durations_are_checked_with_messages_for_people() -> None:
    assert parse_steps("5, 25,50,100") == (5, 25, 50, 100)
    assert parse_every("10m") == 600.0 and parse_every("0.2s") == pytest.approx(0.2)
    with pytest.raises(RolloutError) as error:
        parse_steps("5,25,50")
    assert str(error.value) == (
        "invalid steps '5,25,50': the last step must be 100 (the challenger takes all traffic "
        "before it is promoted); add 100, like 5,25,50,100"
    )
    with pytest.raises(RolloutError, match="each step must be larger than the one before"):
        parse_steps("50,25,100")
    with pytest.raises(RolloutError, match="whole percentages separated by commas"):
        parse_steps("5%,100")
    with pytest.raises(RolloutError, match="invalid --every: invalid duration '10 parsecs'"):
        parse_every("10 parsecs")


# --- the store, on both backends ------------------------------------------------------------


@dataclass
class Backend:
    """A routing store and a prediction log sharing one database, and a way to open more."""

    store: RoutingStore
    log: PredictionLog
    reopen: Callable[[], RoutingStore]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    schema = f"mlprod_rollout_{uuid.uuid4().hex[:10]}"
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    path = tmp_path / "predictions.sqlite"
    log: PredictionLog = PostgresPredictionLog(url, schema) if url else SqlitePredictionLog(path)
    opened: list[RoutingStore] = []

    def reopen() -> RoutingStore:
        """Another connection to the same store, as another server has."""
        opened.append(RoutingStore.postgres(url, schema) if url else RoutingStore.sqlite(path))
        return opened[-1]

    yield Backend(reopen(), log, reopen)
    for store in opened:
        store.close()
    log.close()
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


BASE = RoutingPolicy(
    "flights-ab", (Variant("control", "flights@champion", 1),), assign_by="tailnum"
)
WHO = Action("ops@example.com", "test")


def test_policy_revisions_count_up_and_a_stale_compare_and_set_loses(backend: Backend) -> None:
    store = backend.store
    assert store.latest_revision() == 0 and store.policy() is None
    first = store.publish(BASE, WHO)
    assert first is not None and first.revision == 1
    other = backend.reopen()  # another server's connection
    assert other.policy() == BASE.with_revision(1)
    assert other.publish(BASE, WHO, expect_revision=0) is None  # someone published meanwhile
    second = other.publish(BASE, WHO, expect_revision=1)
    assert second is not None and second.revision == 2 and store.latest_revision() == 2
    assert [(p.revision, p.variants) for _, p in store.revisions()] == [
        (1, BASE.variants),
        (2, BASE.variants),
    ]
    assert [e.action for e in store.audit_trail()] == ["test", "test"]


@dataclass
class FakeRegistry:
    """The registry of the controller tests: pins aliases, records promotions."""

    deciles: list[float] | None = field(default_factory=lambda: list(UNIFORM))
    promoted: list[str] = field(default_factory=list)
    fail_promotion: bool = False

    def pin(self, model: str) -> str:
        return {"flights@champion": "flights/1"}.get(model, model)

    def promote(self, model: str) -> None:
        if self.fail_promotion:
            raise RolloutError("the registry is down")
        self.promoted.append(model)

    def score_deciles(self, model: str) -> list[float] | None:
        return self.deciles


LIMITS = GuardrailLimits(min_requests=20, max_p99_ratio=3.0)


def _start(
    backend: Backend, registry: FakeRegistry, steps: str = "50,100", every: float = 0.2
) -> RolloutState:
    """A rollout of flights/2 against the champion, flights/1."""
    return start_rollout(backend.store, registry, BASE, "flights/2", steps, every, LIMITS, WHO)


def _serve(
    log: PredictionLog,
    experiment: str,
    variant: str,
    n: int,
    scores: Any = None,
    latency_ms: float = 2.0,
) -> None:
    """Log ``n`` served predictions of a variant, as the router would."""
    now = datetime.now(UTC).replace(tzinfo=None)
    values = np.linspace(0.01, 0.99, n) if scores is None else np.resize(scores, n)
    log.append(
        [
            PredictionRecord(
                prediction_id=uuid.uuid4().hex,
                predicted_at=now,
                prediction_time=now,
                model_name="flights",
                model_version="2" if variant == "challenger" else "1",
                keys={"flight_id": i},
                request={},
                features={},
                score=float(values[i]),
                decision=False,
                experiment=experiment,
                variant=variant,
                assignment="sticky",
                latency_ms=latency_ms,
            )
            for i in range(n)
        ]
    )


def test_a_rollout_steps_through_and_promotes_once(backend: Backend) -> None:
    registry = FakeRegistry()
    state = _start(backend, registry)
    assert (state.control, state.challenger, state.percent) == ("flights/1", "flights/2", 50)
    policy = backend.store.policy()
    assert policy is not None and [(v.model, v.weight) for v in policy.variants] == [
        ("flights/1", 50),
        ("flights/2", 50),
    ]
    assert policy.assign_by == "tailnum" and policy.experiment == "rollout-flights-v2"
    # Two servers' controllers judge the same rollout.
    one = RolloutController(backend.store, backend.log, registry, judge_every_s=0)
    two = RolloutController(backend.reopen(), backend.log, registry, judge_every_s=0)
    _serve(backend.log, state.experiment, "challenger", 10)
    _serve(backend.log, state.experiment, "control", 10)
    time.sleep(0.25)
    assert one.tick() == state  # 10 requests < min_requests: not judged yet
    _serve(backend.log, state.experiment, "challenger", 10)
    stepped = [one.tick(), two.tick()]
    assert [s.percent for s in stepped if s is not None] == [100, 100]
    assert backend.store.rollout().version == 2  # type: ignore[union-attr]  # moved once
    _serve(backend.log, state.experiment, "challenger", 25)
    assert one.tick().status == "running"  # type: ignore[union-attr]  # the step is too young
    time.sleep(0.25)
    done = [two.tick(), one.tick()]
    assert {s.status for s in done if s is not None} == {"completed"}
    assert registry.promoted in (["flights/2"], ["flights/2", "flights/2"])
    final = backend.store.policy()
    assert final is not None and [(v.name, v.model) for v in final.variants] == [
        ("control", "flights/2")
    ]
    actions = [(e.actor, e.action) for e in reversed(backend.store.audit_trail())]
    assert actions == [
        ("ops@example.com", "test"),
        ("rollout-controller", "rollout.step"),
        ("rollout-controller", "rollout.promote"),
    ]
    assert backend.store.latest_revision() == 3


def test_of_two_servers_moving_the_same_step_at_once_exactly_one_wins(backend: Backend) -> None:
    from dataclasses import replace

    from mlprod.serve.routing.rollout import step_policy

    state = _start(backend, FakeRegistry(), steps="10,50,100")
    stores = [backend.reopen() for _ in range(4)]
    moved: list[Any] = []
    barrier = threading.Barrier(len(stores))

    def move(store: RoutingStore) -> None:
        new = replace(state, step=1, step_started_at=datetime.now(UTC).replace(tzinfo=None))
        barrier.wait()
        moved.append(store.transition(state, new, step_policy(state, 1), WHO))

    threads = [threading.Thread(target=move, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(m is not None for m in moved) == 1
    assert backend.store.rollout().version == 2  # type: ignore[union-attr]
    assert backend.store.latest_revision() == 2  # one policy for the step, not four


def test_failures_of_the_challenger_roll_it_back_with_the_reason(backend: Backend) -> None:
    registry = FakeRegistry()
    state = _start(backend, registry, steps="5,25,100", every=3600)
    _serve(backend.log, state.experiment, "challenger", 18)
    _serve(backend.log, state.experiment, "control", 50)
    for _ in range(2):
        backend.log.record_error(
            ScoringError(state.experiment, "challenger", "flights", "2", "ValueError: bad row")
        )
    # Rolled back within the step, without waiting for it to end.
    after = RolloutController(backend.store, backend.log, registry, judge_every_s=0).tick()
    assert after is not None and after.status == "rolled_back" and after.percent == 0
    assert after.reason == (
        "guardrail tripped at 5%: error_rate: 2 of 20 challenger requests failed (10.00% > 1.00%)"
    )
    assert after.measures["tripped"] == ["error_rate"]
    policy = backend.store.policy()
    assert policy is not None and [(v.model, v.weight) for v in policy.variants] == [
        ("flights/1", 100)
    ]
    assert registry.promoted == []
    rollback = backend.store.audit_trail()[0]
    assert (rollback.actor, rollback.action) == ("rollout-controller", "rollout.rollback")
    assert rollback.detail["reason"] == after.reason
    with pytest.raises(RolloutError, match="no rollout is running; the latest, of flights/2, is"):
        abort_rollout(backend.store, WHO)


def test_shifted_scores_roll_back_and_a_restarted_controller_resumes(backend: Backend) -> None:
    registry = FakeRegistry()
    state = _start(backend, registry, steps="10,100", every=3600)
    with pytest.raises(RolloutError, match="a rollout of flights/2 is running"):
        _start(backend, registry)
    # A "restart": new connections, a new controller, the same state.
    store = backend.reopen()
    assert store.rollout() == state
    _serve(backend.log, state.experiment, "challenger", 40, scores=[0.97, 0.98, 0.99])
    _serve(backend.log, state.experiment, "control", 40)
    after = RolloutController(store, backend.log, registry, judge_every_s=0).tick()
    assert after is not None and after.status == "rolled_back"
    assert after.reason is not None and "score_psi: the challenger's scores shifted" in after.reason


def test_an_abort_sends_traffic_back_and_a_failed_promotion_halts(backend: Backend) -> None:
    registry = FakeRegistry()
    _start(backend, registry)
    aborted = abort_rollout(backend.store, Action("alice", "rollout.abort", peer="10.0.0.1:5"))
    assert aborted.status == "aborted" and aborted.reason == "aborted by alice at 50%"
    entry = backend.store.audit_trail()[0]
    assert (entry.actor, entry.peer, entry.action) == ("alice", "10.0.0.1:5", "rollout.abort")
    registry.fail_promotion = True
    state = _start(backend, registry, steps="100", every=0.1)
    _serve(backend.log, state.experiment, "challenger", 20)
    time.sleep(0.15)
    halted = RolloutController(backend.store, backend.log, registry, judge_every_s=0).tick()
    assert halted is not None and halted.status == "halted"
    assert halted.reason == (
        "the last step passed but promoting flights/2 failed: the registry is down"
    )


# --- whole rollouts on a real server ---------------------------------------------------------

TOKEN = "rollout-test-" + uuid.uuid4().hex


def _raising_on_unknown_planes(pipeline: Any) -> Any:
    """The pipeline with a model that fails on rows without ``plane_year`` (a plane missing
    from the planes table): a logistic regression on that one column, which refuses NaN, as a
    model fitted without missing values would. Made of scikit-learn classes only, so that it
    saves and loads as any model does."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from mlprod.train.ensemble import EncodedModel
    from mlprod.train.models import FittedModel

    native = pipeline.scorer.members[0]  # LightGBM's encoder: missing values stay NaN
    column = native.encoder.columns_.index("plane_year")
    width = len(native.encoder.columns_)
    x = np.zeros((4, width))
    x[:, column] = [1980.0, 1995.0, 2005.0, 2013.0]
    estimator = Pipeline(
        [
            ("plane_year", ColumnTransformer([("keep", "passthrough", [column])])),
            ("model", LogisticRegression()),
        ]
    ).fit(x, [1, 0, 0, 1])
    pipeline.scorer = EncodedModel(native.encoder, FittedModel("logistic", {}, estimator, 0.0))
    return pipeline


def _register(uri: str, name: str, artefact: Path) -> int:
    from mlprod.registry.tracking import log_training_run

    return int(log_training_run(uri, name, {}, {}, {}, artefact, None, name).model_version)


@pytest.fixture(scope="module")
def fleet(
    deployed: Any, tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[Any]:
    """A project of its own registry, holding the deployed flights model as version 1
    (champion) and version 2 (the same model: a healthy challenger), and two faulty
    challengers: version 3, the same model behind a miscalibration that shifts every score up,
    and version 4, which raises on flights whose plane is unknown. Online features are a copy
    of the deployed store; the log is in PostgreSQL."""
    import shutil

    import yaml

    from mlprod import Project
    from mlprod.artefact import load_artefact, save_artefact
    from mlprod.registry.models import promote
    from mlprod.train.calibration import Calibrator

    folder = tmp_path_factory.mktemp("fleet")
    (folder / "data").symlink_to(deployed.folder / "data")
    (folder / ".mlprod").mkdir()
    for online in (deployed.folder / ".mlprod").glob("online.sqlite*"):
        shutil.copyfile(online, folder / ".mlprod" / online.name)
    config = yaml.safe_load((deployed.folder / "mlprod.yaml").read_text())
    schema = f"mlprod_fleet_{uuid.uuid4().hex[:8]}"
    config["log"] = {"kind": "postgres", "url": postgres_url, "schema": schema}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    project = Project.load(folder)
    source = deployed.deployment().located.path
    uri, name = project.tracking_uri(), project.registry_name
    shifted = load_artefact(source)
    miscalibrated = Calibrator("sigmoid")
    miscalibrated.method_, miscalibrated.slope_, miscalibrated.intercept_ = "sigmoid", 1.0, 3.0
    shifted.calibrator = miscalibrated
    save_artefact(shifted, folder / "shifted")
    save_artefact(_raising_on_unknown_planes(load_artefact(source)), folder / "raising")
    versions = [_register(uri, name, source), _register(uri, name, source)]
    versions += [_register(uri, name, folder / "shifted"), _register(uri, name, folder / "raising")]
    assert versions == [1, 2, 3, 4]
    promote(uri, name, 1)
    yield project
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass(frozen=True)
class Batch:
    """Flights departing in the same hour, scored together two hours before it."""

    at: str
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def traffic(fleet: Any) -> list[Batch]:
    """September and October flights, the model's validation months (so a healthy
    challenger's scores match its training reference), by departure hour, hours shuffled."""
    import duckdb

    fields = [f.name for f in fleet.deployment().request_fields]
    with duckdb.connect(str(fleet.folder / "data" / "nycflights13.duckdb"), read_only=True) as con:
        rows = con.sql(
            f"SELECT {', '.join(fields)}, time_hour - INTERVAL 2 HOUR AS at FROM flights "
            "WHERE month IN (9, 10) AND tailnum IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY time_hour ORDER BY hash(flight_id)) <= 2 "
            "ORDER BY time_hour, flight_id"
        ).to_arrow_table()
    batches: dict[str, list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        batches.setdefault(row.pop("at").isoformat(), []).append(row)
    # Two flights an hour, hours in a random order: flights of one hour share its weather and
    # delays, so a step's sample must span many hours to be a sample of the reference months.
    shuffled = [Batch(at, found) for at, found in batches.items()]
    random.Random(0).shuffle(shuffled)
    return shuffled


# A small sample's PSI is biased up by about (bins - 1) / n: 150 requests keep it near 0.06.
LIVE_LIMITS = GuardrailLimits(min_requests=150, max_p99_ratio=5.0, max_score_psi=0.3)


@dataclass
class Live:
    """A server of the fleet on loopback, with its HTTP client."""

    client: Any
    server: Any
    thread: threading.Thread
    service: Any

    stopped: bool = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(15)
        self.client.close()
        self.service.close()


def _start_server(project: Any, limits: GuardrailLimits = LIVE_LIMITS) -> Live:
    import httpx

    from mlprod.serve.app import create_app
    from mlprod.serve.routing.rollout import MlflowRegistry
    from mlprod.serve.routing.router import RegistryLoader, RoutedService
    from mlprod.serve.routing.sync import ServerRouting

    store, log = project.online_store(), project.prediction_log()
    loader = RegistryLoader(project.folder, project.tracking_uri(), store, log)
    policy = RoutingPolicy(
        "flights-live", (Variant("control", "flights@champion", 1),), assign_by="tailnum"
    )
    service = RoutedService(policy, loader, store, log)
    routing = ServerRouting(
        RoutingStore.for_log(project.config.log, project.folder),
        log,
        MlflowRegistry(project.tracking_uri()),
        limits,
        poll_s=0.1,
        judge_every_s=0.2,
    )
    app = create_app(service, routing=routing, admin_token=TOKEN)
    server, thread, url = start_server(app)
    client = httpx.Client(
        base_url=url,
        timeout=30,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Actor": "release-bot"},
    )
    return Live(client, server, thread, service)


@pytest.fixture(scope="module")
def live(fleet: Any) -> Iterator[Live]:
    started = _start_server(fleet)
    yield started
    started.stop()


def _drive(live: Live, traffic: list[Batch], timeout: float = 120) -> dict[str, Any]:
    """Send traffic, a departure hour a request, until the rollout is no longer running."""
    deadline = time.monotonic() + timeout
    sent = 0
    while time.monotonic() < deadline:
        batch = traffic[sent % len(traffic)]
        answer = live.client.post("/predict", params={"at": batch.at}, json=batch.records)
        assert answer.status_code == 200, answer.text
        sent += 1
        state = live.client.get("/admin/rollout").json()["rollout"]
        if state["status"] != "running":
            return dict(state)
    raise AssertionError(f"the rollout still runs after {sent} requests")


def _served(live: Live) -> list[dict[str, Any]]:
    """The variants the server serves once it has applied the newest stored policy (it does
    within a poll of the store)."""
    deadline = time.monotonic() + 10
    while True:
        shown = live.client.get("/admin/routing").json()
        if shown["applied_revision"] == shown["stored_revision"] or time.monotonic() > deadline:
            return list(shown["policy"]["variants"])
        time.sleep(0.05)


def _planes(project: Any) -> set[str]:
    import duckdb

    with duckdb.connect(
        str(project.folder / "data" / "nycflights13.duckdb"), read_only=True
    ) as con:
        return {row[0] for row in con.sql("SELECT tailnum FROM planes").fetchall()}


def _champion(project: Any) -> int:
    from mlprod.registry.models import locate

    return locate(project.tracking_uri(), project.registry_name, "champion").version


def _metric(live: Live, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(live.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_live_rollout_completes_and_promotes_the_challenger(
    live: Live, fleet: Any, traffic: list[Batch]
) -> None:
    assert _champion(fleet) == 1
    started = live.client.post(
        "/admin/rollout", json={"model": "flights/2", "steps": "25,100", "every": "0.3s"}
    )
    assert started.status_code == 201, started.text
    assert started.json()["rollout"]["control"] == "flights/1"
    final = _drive(live, traffic)
    assert final["status"] == "completed", final
    assert _champion(fleet) == 2
    assert _served(live) == [{"name": "control", "model": "flights/2", "weight": 100.0}]
    batch = traffic[0]
    answer = live.client.post("/predict", params={"at": batch.at}, json=batch.records).json()
    assert {p["model_version"] for p in answer["predictions"]} == {"2"}
    log = fleet.prediction_log()
    try:
        logged = log.predictions(experiment=final["experiment"]).to_pylist()
    finally:
        log.close()
    by_variant = {(r["variant"], r["model_version"]) for r in logged}
    assert by_variant == {("control", "1"), ("challenger", "2"), ("control", "2")}
    audit = live.client.get("/admin/audit").json()["audit"]
    mine = [
        (a["actor"], a["action"]) for a in audit if a["detail"].get("challenger") == "flights/2"
    ]
    assert mine[::-1] == [
        ("release-bot", "rollout.start"),
        ("rollout-controller", "rollout.step"),
        ("rollout-controller", "rollout.promote"),
    ]
    assert _metric(live, "mlprod_rollout_status", challenger="flights/2", status="completed") == 1
    assert _metric(live, "mlprod_rollout_step_percent", challenger="flights/2") == 100


def test_a_live_rollout_of_shifted_scores_is_rolled_back_with_the_reason(
    live: Live, fleet: Any, traffic: list[Batch], caplog: pytest.LogCaptureFixture
) -> None:
    champion = _champion(fleet)
    started = live.client.post(
        "/admin/rollout", json={"model": "flights/3", "steps": "50,100", "every": "1h"}
    )
    assert started.status_code == 201, started.text
    with caplog.at_level("WARNING", logger="mlprod.serve"):
        final = _drive(live, traffic)
    assert final["status"] == "rolled_back", final
    assert final["reason"].startswith("guardrail tripped at 50%: score_psi: the challenger's")
    assert final["measures"]["tripped"] == ["score_psi"]
    assert any(
        "rolled back" in r.getMessage() and "score_psi" in r.getMessage() for r in caplog.records
    )
    assert _champion(fleet) == champion  # nothing promoted
    assert _served(live) == [{"name": "control", "model": f"flights/{champion}", "weight": 100.0}]
    assert _metric(live, "mlprod_rollout_status", challenger="flights/3", status="rolled_back") == 1
    assert (
        _metric(
            live, "mlprod_rollout_guardrail_tripped", challenger="flights/3", guardrail="score_psi"
        )
        == 1
    )
    status = live.client.get("/admin/rollout").json()
    assert status["rollout"]["reason"] == final["reason"] and status["live"] is None


def test_a_live_rollout_of_a_challenger_that_fails_is_rolled_back_without_failed_answers(
    live: Live, fleet: Any, traffic: list[Batch]
) -> None:
    champion = _champion(fleet)
    # The challenger is warmed with the latest request's record: one whose plane is known.
    known = next(b for b in traffic if b.records[0]["tailnum"] in _planes(fleet))
    assert live.client.post("/predict", params={"at": known.at}, json=known.records).is_success
    started = live.client.post(
        "/admin/rollout", json={"model": "flights/4", "steps": "50,100", "every": "1h"}
    )
    assert started.status_code == 201, started.text
    final = _drive(live, traffic)  # every answer is a 200: the control answers for failures
    assert final["status"] == "rolled_back", final
    assert "error_rate" in final["measures"]["tripped"]
    assert "challenger requests failed" in final["reason"]
    assert _champion(fleet) == champion
    log = fleet.prediction_log()
    try:
        errors = log.scoring_errors().to_pylist()
        fallbacks = log.predictions(experiment=final["experiment"]).to_pylist()
    finally:
        log.close()
    mine = [e for e in errors if e["experiment"] == final["experiment"]]
    assert mine and {(e["variant"], e["model_version"]) for e in mine} == {("challenger", "4")}
    assert any(r["assignment"] == "fallback" and r["variant"] == "control" for r in fallbacks)


def test_a_rollout_survives_a_server_restart(live: Live, fleet: Any, traffic: list[Batch]) -> None:
    champion = _champion(fleet)
    challenger = 1 if champion != 1 else 2
    started = live.client.post(
        "/admin/rollout",
        json={"model": f"flights/{challenger}", "steps": "50,100", "every": "1h"},
    )
    assert started.status_code == 201, started.text
    before = started.json()["rollout"]
    live.stop()
    again = _start_server(fleet)
    try:
        # Before any traffic, the restarted server serves the stored rollout step.
        served = again.client.get("/admin/routing").json()
        assert [(v["model"], v["weight"]) for v in served["policy"]["variants"]] == [
            (f"flights/{champion}", 50.0),
            (f"flights/{challenger}", 50.0),
        ]
        versions = set()
        for batch in traffic[:20]:
            answer = again.client.post("/predict", params={"at": batch.at}, json=batch.records)
            versions |= {p["model_version"] for p in answer.json()["predictions"]}
        assert versions == {str(champion), str(challenger)}
        state = again.client.get("/admin/rollout").json()["rollout"]
        assert (state["status"], state["step_started_at"]) == ("running", before["step_started_at"])
        aborted = again.client.post("/admin/rollout/abort")
        assert aborted.status_code == 200 and aborted.json()["rollout"]["status"] == "aborted"
        served = again.client.get("/admin/routing").json()["policy"]["variants"]
        assert [(v["model"], v["weight"]) for v in served] == [(f"flights/{champion}", 100.0)]
    finally:
        again.stop()


def test_the_command_line_sets_routing_starts_shows_and_aborts_a_rollout(fleet: Any) -> None:
    import json

    from typer.testing import CliRunner

    from mlprod.cli import app

    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, "--project", str(fleet.folder)])

    done = cli(
        "routing", "set", "-v", "control=flights/1:90", "-v", "challenger=flights/2:10",
        "--experiment", "cli-ab", "--assign-by", "tailnum", "--actor", "carol", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    shown = json.loads(cli("routing", "show", "--json").stdout)
    assert shown["policy"]["experiment"] == "cli-ab"
    assert [v["weight"] for v in shown["policy"]["variants"]] == [90.0, 10.0]
    assert shown["origin"] == f"revision {shown['policy']['revision']}"
    bad = cli("rollout", "start", "flights/3", "--steps", "5,50")
    assert bad.exit_code == 2 and bad.stderr == (
        "error: invalid steps '5,50': the last step must be 100 (the challenger takes all "
        "traffic before it is promoted); add 100, like 5,50,100\n"
    )
    started = cli(
        "rollout", "start", "flights/3", "--steps", "10,100", "--every", "1h", "--actor", "carol"
    )
    assert started.exit_code == 0, started.output
    assert started.stdout.startswith(
        "rollout " + started.stdout.split()[1] + " flights/3 takes 10% of 'rollout-flights-v3' "
        "from flights/1; then 100%, each step at least 1h and 200 requests."
    )
    again = cli("rollout", "start", "flights/2")
    assert again.exit_code == 2 and again.stderr == (
        "error: a rollout of flights/3 is running (at 10%); abort it first with "
        "'mlprod rollout abort'\n"
    )
    refused = cli("routing", "set", "-v", "control=flights/1:1")
    assert refused.exit_code == 2 and "a rollout of flights/3 is running" in refused.stderr
    status = cli("rollout", "status")
    assert status.exit_code == 0 and "running at 10%" in status.stdout
    assert "challenger requests" in status.stdout  # the live measures of the step
    aborted = cli("rollout", "abort", "--actor", "carol")
    assert aborted.exit_code == 0, aborted.output
    assert aborted.stdout.endswith("aborted by carol at 10%; all traffic to flights/1\n")
    store = RoutingStore.for_log(fleet.config.log, fleet.folder)
    try:
        trail = [(e.actor, e.action) for e in store.audit_trail(3)]
    finally:
        store.close()
    assert trail == [
        ("carol", "rollout.abort"),
        ("carol", "rollout.start"),
        ("carol", "routing.set"),
    ]
