"""What keeps a running server on the shared routing state: a background thread that, about
once a second, runs the rollout controller, applies the store's newest policy when its revision
changed, and refreshes the rollout gauges of ``/metrics``.

Every worker and replica runs one, so all follow the same policy within a second or so, and a
server that restarts applies the stored policy before it takes its first request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Gauge

from mlprod.errors import MlprodError
from mlprod.project.serving import LogSpec
from mlprod.serve.predlog import PredictionLog
from mlprod.serve.routing.guardrails import GuardrailLimits
from mlprod.serve.routing.policy import RoutingPolicy
from mlprod.serve.routing.rollout import (
    JUDGE_EVERY_S,
    MlflowRegistry,
    RolloutController,
    RolloutRegistry,
)
from mlprod.serve.routing.state import STATUSES, RolloutState, RoutingStore

logger = logging.getLogger("mlprod.serve")

POLL_S = 1.0
RETRY_S = 10.0  # a policy that failed to load is tried again after this long


@runtime_checkable
class Routed(Protocol):
    """The part of ``RoutedService`` the sync needs."""

    @property
    def policy(self) -> RoutingPolicy: ...

    def apply(self, policy: RoutingPolicy) -> None: ...


@dataclass
class ServerRouting:
    """The routing state a server is wired to: the store in its log's database, the registry
    (to pin, promote and read reference scores) and the guardrail limits of its config."""

    store: RoutingStore
    log: PredictionLog
    registry: RolloutRegistry
    limits: GuardrailLimits = field(default_factory=GuardrailLimits)
    poll_s: float = POLL_S
    judge_every_s: float = JUDGE_EVERY_S


def server_routing(
    log_spec: LogSpec,
    project_dir: Path,
    log: PredictionLog,
    tracking_uri: str,
    guardrails: object | None = None,
) -> ServerRouting:
    """The routing state of a project's server: the store in its log's database, its registry,
    and the limits of ``deploy.guardrails``."""
    return ServerRouting(
        RoutingStore.for_log(log_spec, project_dir),
        log,
        MlflowRegistry(tracking_uri),
        GuardrailLimits.from_config(guardrails),
    )


class RolloutGauges:
    """``mlprod_rollout_status``, ``mlprod_rollout_step_percent`` and
    ``mlprod_routing_revision`` in a server's metrics registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.status = Gauge(
            "mlprod_rollout_status",
            "The latest rollout: 1 for its current status, 0 for the others.",
            ["challenger", "status"],
            registry=registry,
        )
        self.percent = Gauge(
            "mlprod_rollout_step_percent",
            "The challenger's share of traffic in the latest rollout, in percent.",
            ["challenger"],
            registry=registry,
        )
        self.tripped = Gauge(
            "mlprod_rollout_guardrail_tripped",
            "1 for each guardrail that rolled back the latest rollout.",
            ["challenger", "guardrail"],
            registry=registry,
        )
        self.revision = Gauge(
            "mlprod_routing_revision",
            "The routing policy revision this server applies (0: its configuration's).",
            registry=registry,
        )
        self._shown: str | None = None

    def observe(self, state: RolloutState | None, revision: int) -> None:
        self.revision.set(revision)
        if state is None:
            return
        if self._shown is not None and self._shown != state.challenger:
            self.status.clear()
            self.percent.clear()
            self.tripped.clear()
        self._shown = state.challenger
        for status in STATUSES:
            self.status.labels(state.challenger, status).set(int(status == state.status))
        self.percent.labels(state.challenger).set(state.percent)
        for name in state.measures.get("tripped") or ():
            self.tripped.labels(state.challenger, str(name)).set(1)


class RoutingSync:
    """The background loop of one server (see the module docstring)."""

    def __init__(
        self,
        service: Routed,
        routing: ServerRouting,
        gauges: RolloutGauges | None = None,
    ) -> None:
        self.service, self.routing, self.gauges = service, routing, gauges
        self.controller = RolloutController(
            routing.store, routing.log, routing.registry, judge_every_s=routing.judge_every_s
        )
        self.applied = 0  # the revision being served (0: the configuration's policy)
        self._failed: tuple[int, float] | None = None  # a revision that failed, and when
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def apply_latest(self, *, force: bool = False) -> RoutingPolicy | None:
        """Apply the store's newest policy if it is newer than what is served (or ``force``:
        again, re-resolving aliases); returns it when it was applied."""
        with self._lock:
            revision = self.routing.store.latest_revision()
            if revision == 0 or (revision == self.applied and not force):
                return None
            if not force and self._failed is not None:
                failed, at = self._failed
                if failed == revision and time.monotonic() - at < RETRY_S:
                    return None
            policy = self.routing.store.policy()
            if policy is None:
                return None
            try:
                self.service.apply(policy)
            except MlprodError as exc:
                self._failed = (policy.revision, time.monotonic())
                logger.error(
                    "routing policy revision %d cannot be applied, still serving revision %d: %s",
                    policy.revision,
                    self.applied,
                    exc,
                )
                raise
            self.applied, self._failed = policy.revision, None
            logger.info(
                "routing policy revision %d applied: %s",
                policy.revision,
                ", ".join(f"{v.name}={v.model}:{v.weight:g}" for v in policy.variants),
            )
            return policy

    def step(self) -> None:
        """One round: judge the rollout, follow the newest policy, refresh the gauges."""
        state: RolloutState | None = None
        try:
            state = self.controller.tick()
        except MlprodError as exc:  # the store or log unreachable: said once a round, no trace
            logger.error("judging the rollout failed: %s", exc)
        except Exception:  # the loop must live on; the next round tries again
            logger.exception("judging the rollout failed")
        try:
            self.apply_latest()
        except MlprodError:
            pass  # logged by apply_latest; the current policy stays
        except Exception:
            logger.exception("following the routing policy failed")
        if self.gauges is not None:
            self.gauges.observe(state, self.applied)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mlprod-routing", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.routing.poll_s):
            self.step()
