"""A/B experiments between two real versions of the flights model, on a real server.

Assignment is checked first on its own (the documented hash, uniformity, weights, salts), then
end to end on loopback with the prediction log in SQLite and in PostgreSQL: weights over
6,000 records, stickiness by tailnum across a restart, random assignment without the key,
shadows logged and never answered, a failing variant answered by the control and recorded,
``mlprod serve`` with a ``deploy:`` section, and a version-1 log migrated in place.
"""

from __future__ import annotations

import collections
import hashlib
import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import expect
import httpx
import numpy as np
import psycopg
import pytest
import yaml
from live_server import free_port
from psycopg import sql
from routing_project import (
    AT,
    FaultyLoader,
    LogFactory,
    TwoVersions,
    open_log,
    routed,
    serving,
    two_versions,
)

from mlprod.errors import ConfigError
from mlprod.project.deploy import DeployConfig
from mlprod.project.loading import parse_config
from mlprod.serve.predlog import (
    SCHEMA_VERSION,
    PostgresPredictionLog,
    PredictionLog,
    PredictionRecord,
    ScoringError,
    SqlitePredictionLog,
)
from mlprod.serve.routing.assignment import assign, hash_unit
from mlprod.serve.routing.policy import RoutingPolicy, Variant, policy_from_config
from mlprod.serve.routing.router import RegistryLoader, same_features

__all__ = ["open_log", "two_versions"]  # fixtures, used by name

V1, V2 = "flights/1", "flights/2"


def binomial_ok(count: int, n: int, p: float, sds: float = 4.5) -> bool:
    """``count`` successes of ``n`` draws with probability ``p``, within ``sds`` standard
    deviations (a false alarm about once in 150,000 runs at 4.5)."""
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def ab(*, weights: tuple[float, float] = (50, 50), **options: Any) -> RoutingPolicy:
    return RoutingPolicy(
        options.pop("experiment", "flights-ab"),
        (Variant("control", V1, weights[0]), Variant("challenger", V2, weights[1])),
        **options,
    )


# --- assignment, on its own ---------------------------------------------------------------------


def test_sticky_assignment_is_the_documented_hash() -> None:
    policy = ab(weights=(30, 70), assign_by="tailnum", salt="s1")
    for i in range(2000):
        tailnum = f"N{i:05d}"
        digest = hashlib.sha256(f"s1:tailnum:{tailnum}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        expected = "control" if u < 0.3 else "challenger"
        assert assign(policy, {"tailnum": tailnum}) == (expected, "sticky")
    # The salt defaults to the experiment's name.
    assert hash_unit("flights-ab", "tailnum", "N14228") == (
        int.from_bytes(hashlib.sha256(b"flights-ab:tailnum:N14228").digest()[:8], "big") / 2**64
    )
    assert assign(ab(assign_by="tailnum"), {"tailnum": "N14228"}) == assign(
        ab(assign_by="tailnum", salt="flights-ab"), {"tailnum": "N14228"}
    )


def test_hashed_keys_are_uniform_on_the_unit_interval() -> None:
    """Chi-square over 20 equal bins of 100,000 keys (19 degrees of freedom: 43.8 is the 0.1%
    critical value)."""
    bins = 20
    counts = np.zeros(bins)
    for i in range(100_000):
        counts[int(hash_unit("exp", "tailnum", f"N{i}") * bins)] += 1
    expected = 100_000 / bins
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8


def test_weights_split_entities_in_proportion_and_zero_weights_get_none() -> None:
    policy = RoutingPolicy(
        "three",
        (
            Variant("a", V1, 2),
            Variant("off", V1, 0),
            Variant("b", V2, 3),
            Variant("c", V2, 5),
        ),
        assign_by="id",
    )
    n = 100_000
    counts = collections.Counter(assign(policy, {"id": i})[0] for i in range(n))
    assert counts["off"] == 0
    for name, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        assert binomial_ok(counts[name], n, share), (name, counts)


def test_experiments_with_other_salts_split_independently() -> None:
    first, second = ab(assign_by="k"), ab(assign_by="k", experiment="other")
    n = 40_000
    cells = collections.Counter(
        (assign(first, {"k": i})[0], assign(second, {"k": i})[0]) for i in range(n)
    )
    for cell in (("control", "control"), ("control", "challenger"), ("challenger", "control")):
        assert binomial_ok(cells[cell], n, 0.25), cells


def test_records_without_the_key_are_drawn_at_random() -> None:
    policy = ab(weights=(25, 75), assign_by="tailnum")
    n = 20_000
    picks = [assign(policy, {"tailnum": None}) for _ in range(n)]
    assert {reason for _, reason in picks} == {"random"}
    assert binomial_ok(sum(name == "control" for name, _ in picks), n, 0.25)
    assert assign(ab(), {"tailnum": "N1"})[1] == "random"  # no assign_by: always random


def test_the_deploy_section_becomes_a_policy_and_round_trips_as_json() -> None:
    section = yaml.safe_load(
        """
        experiment: flights-ab
        assign_by: tailnum
        variants:
          - {name: control, model: flights@champion, weight: 50}
          - {name: challenger, model: flights/4, weight: 50}
        shadows: [{name: next, model: flights/5}]
        guardrails: {max_error_rate: 0.02}
        """
    )
    deploy = DeployConfig.model_validate(section)
    policy = policy_from_config(deploy)
    assert policy == RoutingPolicy(
        "flights-ab",
        (Variant("control", "flights@champion", 50), Variant("challenger", "flights/4", 50)),
        (Variant("next", "flights/5", 1.0),),
        assign_by="tailnum",
    )
    assert deploy.guardrails.max_error_rate == 0.02 and deploy.guardrails.min_requests == 200
    assert RoutingPolicy.from_json(policy.with_revision(7).to_json()) == policy.with_revision(7)
    assert policy.control.name == "control" and policy.salt_text == "flights-ab"
    assert policy.models == ("flights@champion", "flights/4", "flights/5")


def test_an_invalid_policy_says_what_to_fix() -> None:
    with expect.raises(
        ConfigError,
        "experiment 'x' names variant(s) a more than once; give every variant and shadow its "
        "own name",
    ):
        RoutingPolicy("x", (Variant("a", V1),), (Variant("a", V2),))
    with expect.raises(
        ConfigError,
        "the variants of experiment 'x' have weights summing to 0; give at least one served "
        "variant a weight above 0",
    ):
        RoutingPolicy("x", (Variant("a", V1, 0),))
    with expect.raises(ConfigError, "variant 'a' has weight -1.0; expected a number >= 0"):
        Variant("a", V1, -1.0)
    with expect.raises(
        ConfigError,
        "invalid model 'flights/x': after '/' comes a version number",
    ):
        Variant("a", "flights/x")


def test_a_deploy_section_with_mistakes_says_where(flights_config: dict[str, Any]) -> None:
    cases = [
        (
            {"experiment": "ab", "variants": [{"name": "a", "model": "flights/x"}]},
            "mlprod.yaml: deploy.variants[0].model: invalid model 'flights/x': name a model as "
            "NAME@ALIAS (flights@champion) or NAME/VERSION (flights/4)",
        ),
        (
            {"experiment": "a b", "variants": [{"name": "a", "model": "flights"}]},
            "mlprod.yaml: deploy.experiment: invalid name 'a b': start with a letter, then "
            "letters, digits, '_' or '-'",
        ),
        (
            {"experiment": "ab", "variants": [{"name": "a", "model": "flights", "wieght": 2}]},
            "mlprod.yaml: deploy.variants[0].wieght: unknown key 'wieght' (did you mean 'weight'?)",
        ),
        (
            {"experiment": "ab", "variants": [{"name": "a", "model": "flights", "weight": 0}]},
            "mlprod.yaml: deploy: the variants' weights sum to 0; give one a weight above 0",
        ),
    ]
    for section, message in cases:
        with expect.raises(ConfigError, message):
            parse_config({**flights_config, "deploy": section}, file="mlprod.yaml")


# --- on a real server -------------------------------------------------------------------------


def _predict(client: httpx.Client, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = client.post("/predict", params={"at": AT}, json=records)
    assert answer.status_code == 200, answer.text
    predictions: list[dict[str, Any]] = answer.json()["predictions"]
    return predictions


def _logged(log: PredictionLog) -> dict[str, dict[str, Any]]:
    return {row["prediction_id"]: row for row in log.predictions().to_pylist()}


VERSION_OF = {"control": "1", "challenger": "2"}


def test_weights_are_honoured_over_6000_records(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    service = routed(two_versions, ab(weights=(70, 30)), open_log())
    records = two_versions.records
    assert len(records) == 6000
    try:
        with serving(service) as client:
            answers = [
                p for i in range(0, 6000, 1000) for p in _predict(client, records[i : i + 1000])
            ]
        logged = _logged(service.log)
    finally:
        service.close()
    assert len(answers) == 6000
    counts = collections.Counter(p["variant"] for p in answers)
    assert binomial_ok(counts["control"], 6000, 0.7), counts
    assert {(p["variant"], p["model_version"]) for p in answers} == set(VERSION_OF.items())
    assert {p["experiment"] for p in answers} == {"flights-ab"}
    assert len(logged) == 6000
    for p in answers:
        row = logged[p["prediction_id"]]
        assert (row["experiment"], row["variant"], row["assignment"], row["served"]) == (
            "flights-ab",
            p["variant"],
            "random",
            True,
        )
        assert row["model_version"] == p["model_version"] and row["score"] == p["score"]
        assert row["latency_ms"] is not None and row["latency_ms"] > 0


def test_the_same_tailnum_gets_the_same_variant_also_after_a_restart(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    policy = ab(assign_by="tailnum")
    records = two_versions.records[:1500]
    keyless = [{**r, "tailnum": None} for r in two_versions.records[1500:1900]]
    by_tailnum: dict[str, set[str]] = collections.defaultdict(set)
    first = routed(two_versions, policy, open_log())
    try:
        with serving(first) as client:
            for start in range(0, 1500, 500):
                for record, p in zip(
                    records[start : start + 500],
                    _predict(client, records[start : start + 500]),
                    strict=True,
                ):
                    by_tailnum[record["tailnum"]].add(p["variant"])
            random_answers = _predict(client, keyless)
    finally:
        first.close()
    assert all(len(variants) == 1 for variants in by_tailnum.values())
    assert len(by_tailnum) > 300
    chosen = {t: next(iter(v)) for t, v in by_tailnum.items()}
    assert chosen == {t: assign(policy, {"tailnum": t})[0] for t in chosen}
    assert binomial_ok(sum(v == "control" for v in chosen.values()), len(chosen), 0.5)
    # Without the key: per record, at random.
    assert binomial_ok(sum(p["variant"] == "control" for p in random_answers), 400, 0.5)

    # A new process of the server (new service, new connections), other batches, other order.
    shuffled = random.Random(1).sample(records, len(records))
    second = routed(two_versions, policy, open_log())
    try:
        with serving(second) as client:
            again = {
                record["tailnum"]: p["variant"]
                for start in range(0, 1500, 300)
                for record, p in zip(
                    shuffled[start : start + 300],
                    _predict(client, shuffled[start : start + 300]),
                    strict=True,
                )
            }
        logged = second.log.predictions().to_pylist()
    finally:
        second.close()
    assert again == chosen
    reasons = collections.Counter(row["assignment"] for row in logged)
    assert reasons == {"sticky": 3000, "random": 400}


def test_a_shadow_is_logged_but_never_answered(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    policy = RoutingPolicy(
        "shadowed", (Variant("control", V1, 1),), (Variant("next", V2),), assign_by="tailnum"
    )
    service = routed(two_versions, policy, open_log())
    records = two_versions.records[:400]
    try:
        with serving(service) as client:
            answers = [
                p for i in range(0, 300, 100) for p in _predict(client, records[i : i + 100])
            ]
            answers += [_predict(client, [record])[0] for record in records[300:400]]
        service.shadow.wait()
        rows = service.log.predictions().to_pylist()
    finally:
        service.close()
    assert {(p["variant"], p["model_version"]) for p in answers} == {("control", "1")}
    served = [r for r in rows if r["served"]]
    shadows = [r for r in rows if not r["served"]]
    assert sorted(r["prediction_id"] for r in served) == sorted(p["prediction_id"] for p in answers)
    assert {(r["variant"], r["model_version"], r["assignment"]) for r in shadows} == {
        ("next", "2", "shadow")
    }
    assert sorted(r["keys"] for r in shadows) == sorted(r["keys"] for r in served)
    assert not {r["prediction_id"] for r in shadows} & {p["prediction_id"] for p in answers}


def test_a_failing_variant_is_answered_by_the_control_and_recorded(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    from mlprod.serve.routing.router import RoutedService

    project = two_versions.project
    store, log = project.online_store(), open_log()
    loader = FaultyLoader(project.folder, project.tracking_uri(), store, log, V2, "UA")
    policy = RoutingPolicy(
        "faulty",
        (Variant("control", V1, 1), Variant("challenger", V2, 1)),
        (Variant("next", V2),),  # the same bug in a shadow never reaches an answer
    )
    service = RoutedService(policy, loader, store, log)
    records = [r for r in two_versions.records if r["carrier"] in ("UA", "B6")][:300]
    try:
        with serving(service) as client:
            answers = [_predict(client, [record])[0] for record in records]
        service.shadow.wait()
        rows = {r["prediction_id"]: r for r in log.predictions().to_pylist()}
        errors = log.scoring_errors().to_pylist()
    finally:
        service.close()
    assert len(answers) == 300
    ua = [p for r, p in zip(records, answers, strict=True) if r["carrier"] == "UA"]
    b6 = [p for r, p in zip(records, answers, strict=True) if r["carrier"] == "B6"]
    assert ua and b6
    assert {p["model_version"] for p in ua} == {"1"}  # never version 2
    assert {p["model_version"] for p in b6} == {"1", "2"}
    fallbacks = [p for p in ua if rows[p["prediction_id"]]["assignment"] == "fallback"]
    assert all(p["variant"] == "control" for p in fallbacks)
    assert binomial_ok(len(fallbacks), len(ua), 0.5)
    served_errors = [e for e in errors if not e["message"].startswith("shadow: ")]
    shadow_errors = [e for e in errors if e["message"].startswith("shadow: ")]
    assert len(served_errors) == len(fallbacks)
    assert len(shadow_errors) == len(ua)  # one shadow job per request
    assert {(e["experiment"], e["variant"], e["model_version"]) for e in served_errors} == {
        ("faulty", "challenger", "2")
    }
    assert served_errors[0]["message"] == "ValueError: injected failure on carrier UA"
    shadow_rows = [r for r in rows.values() if not r["served"]]
    assert len(shadow_rows) == len(b6)  # the shadow logged what it could score


def test_mlprod_serve_runs_the_deploy_section_and_drains_shadows_on_shutdown(
    two_versions: TwoVersions, tmp_path: Path
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    source = two_versions.project.folder
    for name in ("data", ".mlprod"):
        (folder / name).symlink_to(source / name)
    config = yaml.safe_load((source / "mlprod.yaml").read_text())
    config["log"] = {"path": "log/predictions.sqlite"}
    config["deploy"] = {
        "experiment": "cli-ab",
        "assign_by": "tailnum",
        "variants": [
            {"name": "control", "model": "flights@champion", "weight": 50},
            {"name": "challenger", "model": V2, "weight": 50},
        ],
        "shadows": [{"name": "next", "model": V2}],
    }
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    with (tmp_path / "server.log").open("wb") as output:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlprod.cli", "serve"),
                *("--project", str(folder), "--port", str(port)),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
            answers = [
                p
                for i in range(0, 1000, 50)
                for p in _predict(client, two_versions.records[i : i + 50])
            ]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 0, (tmp_path / "server.log").read_text()
    printed = (tmp_path / "server.log").read_text()
    assert (
        "serving experiment cli-ab (control flights@champion 50%, challenger flights/2 50%; "
        "shadow next flights/2)" in printed
    )
    assert {p["experiment"] for p in answers} == {"cli-ab"}
    assert {(p["variant"], p["model_version"]) for p in answers} == set(VERSION_OF.items())
    log = SqlitePredictionLog(folder / "log" / "predictions.sqlite")
    rows = log.predictions().to_pylist()
    log.close()
    served = collections.Counter(r["served"] for r in rows)
    assert served == {True: 1000, False: 1000}  # every shadow drained at shutdown


# --- a version-1 log is migrated in place ------------------------------------------------------

_V1_SQLITE = (
    """CREATE TABLE mlprod_predictions (
        prediction_id TEXT PRIMARY KEY, predicted_at TEXT NOT NULL,
        prediction_time TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
        keys_json TEXT NOT NULL, keys TEXT NOT NULL, request TEXT NOT NULL,
        features TEXT NOT NULL, score REAL NOT NULL, decision INTEGER NOT NULL,
        source TEXT NOT NULL)""",
    """CREATE TABLE mlprod_feedback (
        feedback_id INTEGER PRIMARY KEY,
        prediction_id TEXT NOT NULL REFERENCES mlprod_predictions (prediction_id),
        label INTEGER NOT NULL, observed_at TEXT NOT NULL, received_at TEXT NOT NULL,
        source TEXT NOT NULL, UNIQUE (prediction_id, label, observed_at))""",
    """INSERT INTO mlprod_predictions VALUES ('old', '2026-03-01 12:00:00.000000',
        '2026-03-01 12:00:00.000000', 'flights', '1', '{"flight_id":1}', '{"flight_id":1}',
        '{"flight_id":1}', '{"distance":100.0}', 0.25, 0, 'rest')""",
    "PRAGMA user_version = 1",
)
_V1_POSTGRES = (
    """CREATE TABLE {s}.mlprod_predictions (
        prediction_id text PRIMARY KEY, predicted_at timestamp NOT NULL,
        prediction_time timestamp NOT NULL, model_name text NOT NULL,
        model_version text NOT NULL, keys_json text NOT NULL, keys jsonb NOT NULL,
        request jsonb NOT NULL, features jsonb NOT NULL, score double precision NOT NULL,
        decision boolean NOT NULL, source text NOT NULL)""",
    """CREATE TABLE {s}.mlprod_feedback (
        feedback_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        prediction_id text NOT NULL REFERENCES {s}.mlprod_predictions (prediction_id),
        label boolean NOT NULL, observed_at timestamp NOT NULL,
        received_at timestamp NOT NULL, source text NOT NULL,
        UNIQUE (prediction_id, label, observed_at))""",
    "CREATE TABLE {s}.mlprod_log_meta (schema_version integer NOT NULL)",
    "INSERT INTO {s}.mlprod_log_meta VALUES (1)",
    """INSERT INTO {s}.mlprod_predictions VALUES ('old', '2026-03-01 12:00:00',
        '2026-03-01 12:00:00', 'flights', '1', '{{"flight_id":1}}', '{{"flight_id":1}}',
        '{{"flight_id":1}}', '{{"distance":100.0}}', 0.25, false, 'rest')""",
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def version_1_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogFactory]:
    """A prediction log as mlprod wrote it before experiments (schema version 1), one row."""
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite"
        with sqlite3.connect(path) as conn:
            for statement in _V1_SQLITE:
                conn.execute(statement)
        conn.close()
        yield lambda: SqlitePredictionLog(path)
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"mlprod_v1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for statement in _V1_POSTGRES:
            conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))
    try:
        yield lambda: PostgresPredictionLog(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_a_version_1_log_is_migrated_in_place(version_1_log: LogFactory) -> None:
    log = version_1_log()
    try:
        (old,) = log.predictions().to_pylist()
        assert old["prediction_id"] == "old" and old["score"] == 0.25
        assert (old["experiment"], old["variant"], old["assignment"], old["served"]) == (
            None,
            None,
            None,
            True,
        )
        assert old["latency_ms"] is None
        at = datetime(2026, 3, 2, 12, 0)
        log.append(
            [
                PredictionRecord(
                    "new",
                    at,
                    at,
                    "flights",
                    "2",
                    {"flight_id": 2},
                    {"flight_id": 2},
                    {},
                    0.5,
                    True,
                    experiment="e",
                    variant="challenger",
                    assignment="sticky",
                    served=False,
                    latency_ms=1.5,
                )
            ]
        )
        log.record_error(ScoringError("e", "challenger", "flights", "2", "boom", at=at))
    finally:
        log.close()
    reopened = version_1_log()  # opening a migrated log again changes nothing
    try:
        rows = {r["prediction_id"]: r for r in reopened.predictions(experiment="e").to_pylist()}
        assert list(rows) == ["new"]
        assert (rows["new"]["variant"], rows["new"]["served"], rows["new"]["latency_ms"]) == (
            "challenger",
            False,
            1.5,
        )
        assert reopened.count() == 2
        assert reopened.scoring_errors().to_pylist() == [
            {
                "at": at,
                "experiment": "e",
                "variant": "challenger",
                "model_name": "flights",
                "model_version": "2",
                "message": "boom",
            }
        ]
        assert reopened.scoring_errors(since=datetime(2026, 3, 3)).num_rows == 0
        if isinstance(reopened, SqlitePredictionLog):
            with sqlite3.connect(reopened.path) as conn:
                assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
            conn.close()
    finally:
        reopened.close()


def test_a_shadow_reuses_the_features_of_a_version_with_the_same_definitions(
    two_versions: TwoVersions, tmp_path: Path
) -> None:
    """Version 2's features are version 1's without the weather: its shadow of version 1 is
    scored on version 1's feature values; the other way round it computes its own."""
    project = two_versions.project
    store, log = project.online_store(), SqlitePredictionLog(tmp_path / "log.sqlite")
    loader = RegistryLoader(project.folder, project.tracking_uri(), store, log)
    try:
        one, two = loader.load(V1), loader.load(V2)
        assert same_features(two, one) and same_features(one, one)
        assert not same_features(one, two)
    finally:
        store.close()
        log.close()


def test_shadows_that_cannot_keep_up_are_dropped_and_the_rest_drained_on_close(
    two_versions: TwoVersions, tmp_path: Path
) -> None:
    """A full shadow queue drops jobs (counted) instead of slowing answers; close() scores and
    logs whatever was queued before it returns."""
    from mlprod.serve.routing.router import RoutedService

    project = two_versions.project
    store, log = project.online_store(), SqlitePredictionLog(tmp_path / "log.sqlite")
    loader = RegistryLoader(project.folder, project.tracking_uri(), store, log)
    policy = RoutingPolicy("queue", (Variant("control", V1),), (Variant("next", V2),))
    service = RoutedService(policy, loader, store, log, shadow_queue=2)
    at = datetime.fromisoformat(AT)
    for record in two_versions.records[:12]:  # faster than the worker's 50 ms linger
        service.predict([record], at)
    service.close()
    reopened = SqlitePredictionLog(tmp_path / "log.sqlite")
    try:
        served = collections.Counter(r["served"] for r in reopened.predictions().to_pylist())
    finally:
        reopened.close()
    assert service.shadow.dropped >= 1  # the worker holds one job, the queue two
    assert served == {True: 12, False: 12 - service.shadow.dropped}
