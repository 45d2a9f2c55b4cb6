"""Gradual rollout: a challenger takes a growing share of traffic, step by step, while its
guardrails hold on each step's live traffic; a tripped guardrail rolls it back at once, and
passing the last step promotes it to ``champion`` in the registry.

The state lives in the routing store (:mod:`.state`), so it survives a restart and every server
sees the same one. :meth:`RolloutController.tick` runs in every server at each poll of the
store (:mod:`.sync`); a few times a step (every 5 s at most) it judges the current step on the
prediction log (:mod:`.guardrails`) and moves the rollout with a compare-and-set, so when
several servers judge the same step, exactly one moves it:

- a guardrail tripped (once ``min_requests`` were seen): back to 100 % control, status
  ``rolled_back`` and the reason, at any time within the step;
- the step passed and ``every`` has elapsed since it began: the next step's weights, or after
  the last step the promotion (status ``completed``, the challenger alone as control);
- the promotion failed (the registry cannot be reached): status ``halted`` with the reason; the
  challenger keeps serving all traffic until someone promotes it by hand or rolls back.

Policies pin versions (``flights/3``, not ``flights@champion``), so moving the alias at the end
changes nothing a server is serving.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from mlprod.errors import MlprodError, RolloutError
from mlprod.project.durations import parse_duration
from mlprod.serve.deployment import parse_model_reference
from mlprod.serve.predlog import PredictionLog
from mlprod.serve.routing.guardrails import GuardrailLimits, Verdict, judge, step_traffic
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.state import (
    ABORTED,
    COMPLETED,
    HALTED,
    ROLLED_BACK,
    RUNNING,
    Action,
    RolloutState,
    RoutingStore,
    now_utc,
)

logger = logging.getLogger("mlprod.serve")

CONTROL, CHALLENGER = "control", "challenger"
CONTROLLER = "rollout-controller"  # the actor of automatic moves in the audit trail
# How often a server reads a step's predictions at most (a quarter of a shorter step): that
# costs more than the poll of the state, so a step is judged a few times, not every second.
JUDGE_EVERY_S = 5.0


class RolloutRegistry(Protocol):
    """What a rollout needs of the model registry."""

    def pin(self, model: str) -> str:
        """``flights@champion`` -> ``flights/3`` (the version the reference stands for now)."""
        ...

    def promote(self, model: str) -> None:
        """Point ``champion`` at a pinned ``NAME/VERSION``."""
        ...

    def score_deciles(self, model: str) -> list[float] | None:
        """The deciles of the validation scores the model was trained with."""
        ...


class MlflowRegistry:
    """:class:`RolloutRegistry` over mlprod's MLflow registry."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._deciles = lru_cache(maxsize=16)(self._load_deciles)

    def pin(self, model: str) -> str:
        from mlprod.registry.models import locate

        reference = parse_model_reference(model)
        located = locate(self.tracking_uri, reference.name, reference.spec)
        return f"{located.name}/{located.version}"

    def promote(self, model: str) -> None:
        from mlprod.registry.models import promote

        reference = parse_model_reference(model)
        promote(self.tracking_uri, reference.name, int(reference.spec))

    def score_deciles(self, model: str) -> list[float] | None:
        return self._deciles(model)

    def _load_deciles(self, model: str) -> list[float] | None:
        from mlprod.artefact import load_artefact
        from mlprod.registry.models import locate

        reference = parse_model_reference(model)
        located = locate(self.tracking_uri, reference.name, reference.spec)
        score = load_artefact(located.path).reference.get("score") or {}
        deciles = score.get("deciles") or None
        return [float(d) for d in deciles] if deciles else None


def parse_steps(steps: str | Sequence[int]) -> tuple[int, ...]:
    """``"5,25,50,100"``: the challenger's traffic share at each step, in percent, rising, and
    ending at 100 (where completing the step promotes it)."""
    text = steps if isinstance(steps, str) else ",".join(str(s) for s in steps)
    try:
        parsed = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise RolloutError(
            f"invalid steps '{text}': expected whole percentages separated by commas, "
            "like 5,25,50,100"
        ) from None
    if any(not 0 < s <= 100 for s in parsed):
        raise RolloutError(f"invalid steps '{text}': every step is a percentage from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(parsed)):
        raise RolloutError(f"invalid steps '{text}': each step must be larger than the one before")
    if parsed[-1] != 100:
        raise RolloutError(
            f"invalid steps '{text}': the last step must be 100 (the challenger takes all "
            f"traffic before it is promoted); add 100, like {','.join(map(str, parsed))},100"
        )
    return parsed


def parse_every(every: str | float) -> float:
    """``10m``, ``30s``, ``1h``, ``0.2s``: the shortest time a step lasts, in seconds."""
    if isinstance(every, int | float):
        seconds = float(every)
    else:
        try:
            seconds = parse_duration(every).total_seconds()
        except ValueError as exc:
            raise RolloutError(f"invalid --every: {exc}") from None
    if seconds <= 0:
        raise RolloutError(f"invalid --every '{every}': a step must last longer than 0 seconds")
    return seconds


def step_policy(state: RolloutState, step: int) -> RoutingPolicy:
    """The policy of step ``step``: the control and the challenger at its weights."""
    percent = state.steps[step]
    return _policy(
        state,
        (
            Variant(CONTROL, state.control, 100 - percent),
            Variant(CHALLENGER, state.challenger, percent),
        ),
    )


def control_policy(state: RolloutState) -> RoutingPolicy:
    """All traffic back to the control (a rollback or an abort)."""
    return _policy(state, (Variant(CONTROL, state.control, 100),))


def promoted_policy(state: RolloutState) -> RoutingPolicy:
    """The promoted challenger alone, as the new control."""
    return _policy(state, (Variant(CONTROL, state.challenger, 100),))


def _policy(state: RolloutState, variants: tuple[Variant, ...]) -> RoutingPolicy:
    base = RoutingPolicy.from_json(state.base)
    taken = {CONTROL, CHALLENGER}
    return RoutingPolicy(
        experiment=state.experiment,
        variants=variants,
        shadows=tuple(s for s in base.shadows if s.name not in taken),
        assign_by=base.assign_by,
        salt=base.salt,
    )


def base_policy(
    store: RoutingStore, configured: RoutingPolicy | None, default_model: str
) -> RoutingPolicy:
    """The policy a rollout starts from when no server is asked: the newest stored one, else
    the ``deploy:`` section's, else ``default_model`` alone (``flights@champion``)."""
    stored = store.policy()
    if stored is not None:
        return stored
    if configured is not None:
        return configured
    name = parse_model_reference(default_model).name
    return RoutingPolicy(f"{name}-main", (Variant(CONTROL, default_model, 1),))


def start_rollout(
    store: RoutingStore,
    registry: RolloutRegistry,
    base: RoutingPolicy,
    challenger: str,
    steps: str | Sequence[int],
    every: str | float,
    limits: GuardrailLimits,
    action: Action,
    experiment: str | None = None,
) -> RolloutState:
    """Start moving traffic from ``base``'s control to ``challenger`` (both pinned to their
    versions now), at the first step's weights."""
    parsed, seconds = parse_steps(steps), parse_every(every)
    pinned = registry.pin(challenger)
    control = registry.pin(base.control.model)
    if pinned == control:
        raise RolloutError(
            f"{challenger} is {pinned}, the version the control ({base.control.model}) serves "
            "already; roll out another version"
        )
    name = experiment or re.sub(r"[^A-Za-z0-9_-]", "-", f"rollout-{pinned.replace('/', '-v')}")
    now = now_utc()
    state = RolloutState(
        rollout_id=0,
        experiment=name,
        challenger=pinned,
        control=control,
        base=base.to_json(),
        steps=parsed,
        every_s=seconds,
        guardrails=limits.to_json(),
        step=0,
        status=RUNNING,
        reason=None,
        measures={},
        started_at=now,
        step_started_at=now,
        updated_at=now,
    )
    policy = step_policy(state, 0)  # validates the experiment name
    detail = {
        "challenger": pinned,
        "control": control,
        "steps": list(parsed),
        "every_s": seconds,
        "experiment": name,
        **dict(action.detail),
    }
    started = store.start_rollout(state, policy, replace(action, detail=detail))
    logger.info(
        "rollout %d of %s against %s started: steps %s %%, at least %gs each",
        started.rollout_id,
        pinned,
        control,
        ",".join(map(str, parsed)),
        seconds,
    )
    return started


def abort_rollout(store: RoutingStore, action: Action) -> RolloutState:
    """Stop the running rollout and send all traffic back to the control."""
    for _ in range(5):  # the controller may move the step meanwhile: read again and retry
        state = store.rollout()
        if state is None or state.status != RUNNING:
            latest = (
                f"; the latest, of {state.challenger}, is {state.status}"
                if state is not None
                else ""
            )
            raise RolloutError(f"no rollout is running{latest}")
        now = now_utc()
        reason = f"aborted by {action.actor} at {state.percent}%"
        new = replace(state, status=ABORTED, reason=reason, updated_at=now)
        detail = {"rollout_id": state.rollout_id, "challenger": state.challenger, **action.detail}
        moved = store.transition(state, new, control_policy(state), replace(action, detail=detail))
        if moved is not None:
            logger.warning("rollout %d of %s %s", state.rollout_id, state.challenger, reason)
            return moved
    raise RolloutError("the rollout kept changing while it was being aborted; try again")


def judge_step(state: RolloutState, log: PredictionLog, registry: RolloutRegistry) -> Verdict:
    """The guardrails' verdict on the current step of ``state`` so far."""
    traffic = step_traffic(log, state.experiment, CHALLENGER, CONTROL, since=state.step_started_at)
    before = state.measures.get("control_p99_ms")
    return judge(
        traffic,
        GuardrailLimits.from_json(state.guardrails),
        registry.score_deciles(state.challenger),
        before if isinstance(before, int | float) else None,
    )


@dataclass
class RolloutController:
    """Judges the running rollout's current step and moves it (see the module docstring)."""

    store: RoutingStore
    log: PredictionLog
    registry: RolloutRegistry
    clock: Callable[[], datetime] = now_utc
    judge_every_s: float = JUDGE_EVERY_S
    _next_judgement: dict[int, datetime] = field(default_factory=dict)

    def tick(self) -> RolloutState | None:
        """One judgement; returns the rollout as it is after it (None when there is none)."""
        state = self.store.rollout()
        if state is None or state.status != RUNNING:
            return state
        now = self.clock()
        if now < self._next_judgement.get(state.rollout_id, now):
            return state
        wait = min(self.judge_every_s, state.every_s / 4)
        self._next_judgement = {state.rollout_id: now + timedelta(seconds=wait)}
        verdict = judge_step(state, self.log, self.registry)
        measures: dict[str, Any] = {k: v for k, v in verdict.measures.items() if v is not None}
        if verdict.tripped:
            reason = f"guardrail tripped at {state.percent}%: {verdict.reason()}"
            measures["tripped"] = [name for name, _ in verdict.tripped]
            new = replace(
                state, status=ROLLED_BACK, reason=reason, measures=measures, updated_at=now
            )
            action = self._action(
                "rollout.rollback", state, reason=reason, tripped=[n for n, _ in verdict.tripped]
            )
            moved = self.store.transition(state, new, control_policy(state), action)
            if moved is not None:
                logger.warning(
                    "rollout %d of %s rolled back: %s", state.rollout_id, state.challenger, reason
                )
            return moved or self.store.rollout()
        if not verdict.judged or (now - state.step_started_at).total_seconds() < state.every_s:
            return state
        if state.step + 1 < len(state.steps):
            new = replace(
                state, step=state.step + 1, measures=measures, step_started_at=now, updated_at=now
            )
            action = self._action("rollout.step", state, percent=new.percent, measures=measures)
            moved = self.store.transition(state, new, step_policy(state, state.step + 1), action)
            if moved is not None:
                logger.info(
                    "rollout %d of %s: step %d%% passed, now at %d%%",
                    state.rollout_id,
                    state.challenger,
                    state.percent,
                    new.percent,
                )
            return moved or self.store.rollout()
        return self._promote(state, measures, now)

    def _promote(
        self, state: RolloutState, measures: dict[str, Any], now: datetime
    ) -> RolloutState | None:
        """Move champion to the challenger, then record completion. Both servers that might
        get here move the alias to the same version, which is harmless; only one records."""
        try:
            self.registry.promote(state.challenger)
        except MlprodError as exc:
            reason = f"the last step passed but promoting {state.challenger} failed: {exc}"
            new = replace(state, status=HALTED, reason=reason, measures=measures, updated_at=now)
            moved = self.store.transition(
                state, new, None, self._action("rollout.halt", state, reason=reason)
            )
            if moved is not None:
                logger.error("rollout %d halted: %s", state.rollout_id, reason)
            return moved or self.store.rollout()
        new = replace(state, status=COMPLETED, measures=measures, updated_at=now)
        action = self._action("rollout.promote", state, measures=measures)
        moved = self.store.transition(state, new, promoted_policy(state), action)
        if moved is not None:
            logger.info(
                "rollout %d completed: %s promoted to champion", state.rollout_id, state.challenger
            )
        return moved or self.store.rollout()

    @staticmethod
    def _action(name: str, state: RolloutState, **detail: Any) -> Action:
        return Action(
            CONTROLLER,
            name,
            {"rollout_id": state.rollout_id, "challenger": state.challenger, **detail},
        )
