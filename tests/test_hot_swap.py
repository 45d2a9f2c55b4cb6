"""Changing the routing policy of a running server: never a failed request, never a mixed one.

Four client threads keep a real server (loopback, two real versions of the flights model, the
log in SQLite and in PostgreSQL) busy while the policy changes four times: to the other
version, to a 50/50 split (reloading the version dropped a moment ago), to an alias, and to
the same alias after it moved. Each answer names its experiment and version, so every request
is checked against the policies live while it ran.
"""

from __future__ import annotations

import gc
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import expect
import httpx
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

from mlprod.errors import ConfigError, RegistryError
from mlprod.registry.models import promote
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.router import RoutedService

__all__ = ["open_log", "two_versions"]  # fixtures, used by name

V1, V2 = "flights/1", "flights/2"


@dataclass(frozen=True)
class Answered:
    started: float
    finished: float
    status: int
    experiments: frozenset[str]
    versions: frozenset[str]
    ids: tuple[str, ...]


def _load(
    client: httpx.Client,
    records: list[dict[str, Any]],
    seed: int,
    stop: threading.Event,
    out: list[Answered],
    failures: list[str],
) -> None:
    draw = random.Random(seed)
    while not stop.is_set():
        batch = draw.sample(records, draw.randint(1, 5))
        started = time.monotonic()
        try:
            answer = client.post("/predict", params={"at": AT}, json=batch)
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
            continue
        finished = time.monotonic()
        if answer.status_code != 200:
            failures.append(answer.text)
            continue
        predictions = answer.json()["predictions"]
        out.append(
            Answered(
                started,
                finished,
                answer.status_code,
                frozenset(p["experiment"] for p in predictions),
                frozenset(p["model_version"] for p in predictions),
                tuple(p["prediction_id"] for p in predictions),
            )
        )


def test_three_swaps_under_load_fail_nothing_and_mix_nothing(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    uri, name = two_versions.uri, two_versions.name
    promote(uri, name, 2, alias="challenger")
    alias = f"{name}@challenger"
    first = RoutingPolicy("hot-0", (Variant("only", V1),))
    swaps: list[tuple[RoutingPolicy, int | None]] = [  # policy, and a version to move the alias to
        (RoutingPolicy("hot-1", (Variant("only", V2),)), None),
        (RoutingPolicy("hot-2", (Variant("a", V1, 1), Variant("b", V2, 1))), None),
        (RoutingPolicy("hot-3", (Variant("only", alias),)), None),
        (RoutingPolicy("hot-4", (Variant("only", alias),)), 1),
    ]
    allowed = {"hot-0": {"1"}, "hot-1": {"2"}, "hot-2": {"1", "2"}, "hot-3": {"2"}, "hot-4": {"1"}}
    service = routed(two_versions, first, open_log())
    # When each policy may have been live: from the start of its apply() to the end of the next.
    live: dict[str, list[float]] = {"hot-0": [float("-inf"), float("inf")]}
    answered: list[Answered] = []
    failures: list[str] = []
    stop = threading.Event()
    try:
        with serving(service) as client:
            threads = [
                threading.Thread(
                    target=_load,
                    args=(client, two_versions.records[:2000], seed, stop, answered, failures),
                )
                for seed in range(4)
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            previous = "hot-0"
            released: weakref.ref[Any] | None = None
            for policy, move_alias in swaps:
                if move_alias is not None:
                    promote(uri, name, move_alias, alias="challenger")
                started = time.monotonic()
                service.apply(policy)
                finished = time.monotonic()
                live[previous][1] = finished
                live[policy.experiment] = [started, float("inf")]
                previous = policy.experiment
                if policy.experiment == "hot-3":  # version 2, about to be left for good
                    released = weakref.ref(service._snapshot.control.service)
                time.sleep(1.5)
            stop.set()
            for thread in threads:
                thread.join(30)
        rows = {r["prediction_id"]: r for r in service.log.predictions().to_pylist()}
    finally:
        stop.set()
        service.close()

    assert failures == []
    assert {e for a in answered for e in a.experiments} == set(allowed)  # load spanned swaps
    for a in answered:
        assert len(a.experiments) == 1, a  # one policy per request
        (experiment,) = a.experiments
        assert a.versions <= allowed[experiment], a  # the versions of that policy only
        begin, end = live[experiment]
        assert a.started <= end and a.finished >= begin, a  # live at some point of the request
    assert sum(len(a.ids) for a in answered) == len(rows)  # every answer is in the log ...
    for a in answered:  # ... with what it answered
        assert {rows[i]["experiment"] for i in a.ids} == set(a.experiments)
        assert {rows[i]["model_version"] for i in a.ids} == set(a.versions)
    assert len(answered) > 200
    assert service.policy.experiment == "hot-4"
    gc.collect()
    assert released is not None and released() is None  # version 2 is no longer held


def test_a_policy_that_cannot_be_served_leaves_the_current_one(
    two_versions: TwoVersions, open_log: LogFactory
) -> None:
    project = two_versions.project
    store, log = project.online_store(), open_log()
    loader = FaultyLoader(project.folder, project.tracking_uri(), store, log, V2, None)
    current = RoutingPolicy("kept", (Variant("only", V1),), assign_by="tailnum")
    service = RoutedService(current, loader, store, log)
    try:
        with serving(service) as client:
            record = two_versions.records[0]

            def answer() -> dict[str, Any]:
                got = client.post("/predict", params={"at": AT}, json=record)
                assert got.status_code == 200, got.text
                prediction: dict[str, Any] = got.json()["predictions"][0]
                return prediction

            assert answer()["experiment"] == "kept"
            with expect.raises(
                RegistryError,
                "model 'flights' has no version 99; its versions are 1, 2",
            ):
                service.apply(
                    RoutingPolicy("missing", (Variant("only", f"{two_versions.name}/99"),))
                )
            with expect.raises(
                ConfigError,
                "experiment 'typo' assigns by 'tailnumb', which is not a request field of its "
                "variants (did you mean 'tailnum'?)",
            ):
                service.apply(RoutingPolicy("typo", (Variant("only", V1),), assign_by="tailnumb"))
            # Warmed with the latest request before it takes traffic: version 2 always raises.
            with expect.raises(
                ConfigError,
                "model flights/2 of experiment 'broken' failed to score a recent request "
                "(ValueError: injected failure on carrier any); the routing policy was not "
                "changed",
            ):
                service.apply(RoutingPolicy("broken", (Variant("only", V2),)))
            assert service.policy == current
            assert answer()["experiment"] == "kept"
    finally:
        service.close()
