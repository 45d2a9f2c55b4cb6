"""``mlprod rollout start|status|abort`` and ``mlprod routing show|set``: the routing state in
the prediction log's database, changed from the command line.

The commands write to the same store the servers poll, so a running server picks a change up
within a second; the rollout itself is moved by the servers (``mlprod serve``), which judge its
steps on their live traffic. A thin shell over :mod:`mlprod.serve.routing`.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from mlprod.cli import Debug, Json, ProjectDir, _load, _print_json, _run, app, console

if TYPE_CHECKING:
    from mlprod.api import Project
    from mlprod.serve.routing.guardrails import GuardrailLimits
    from mlprod.serve.routing.policy import RoutingPolicy
    from mlprod.serve.routing.state import RolloutState, RoutingStore

T = TypeVar("T")

rollout_app = typer.Typer(
    help="Move traffic to a new version step by step, guarded by its live metrics.",
    no_args_is_help=True,
)
routing_app = typer.Typer(
    help="The routing policy the servers follow: variants, weights, shadows.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")
app.add_typer(routing_app, name="routing")

Actor = Annotated[
    str | None,
    typer.Option("--actor", help="Who does this, for the audit trail (default: user@host)."),
]


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _with_store(folder: Path, debug: bool, work: Callable[[Project, RoutingStore], T]) -> T:
    """Load the project and run ``work`` on its routing store, closed after; errors as one line."""
    from mlprod.serve.routing.state import RoutingStore

    loaded = _run(debug, lambda: _load(folder))

    def run() -> T:
        store = RoutingStore.for_log(loaded.config.log, loaded.folder)
        try:
            return work(loaded, store)
        finally:
            store.close()

    return _run(debug, run)


def _configured(project: Project) -> RoutingPolicy | None:
    from mlprod.serve.routing.policy import policy_from_config

    deploy = project.config.deploy
    return policy_from_config(deploy) if deploy is not None else None


def _current_policy(store: RoutingStore, project: Project) -> RoutingPolicy:
    """The stored policy, else mlprod.yaml's, else the champion alone."""
    from mlprod.serve.routing.rollout import base_policy

    return base_policy(store, _configured(project), f"{project.registry_name}@champion")


@rollout_app.command("start")
def rollout_start(
    model: Annotated[str, typer.Argument(help="The challenger: NAME/VERSION or NAME@ALIAS.")],
    steps: Annotated[
        str, typer.Option(help="The challenger's share of traffic at each step, in percent.")
    ] = "5,25,50,100",
    every: Annotated[
        str, typer.Option(help="How long each step lasts at least (10m, 1h, 30s).")
    ] = "10m",
    experiment: Annotated[
        str | None,
        typer.Option(help="The experiment name its predictions are logged under."),
    ] = None,
    actor: Actor = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Move traffic to MODEL step by step; roll back if a guardrail trips, promote at the end.

    The servers running this project judge each step on its live traffic against the
    guardrails of deploy.guardrails, roll the challenger back when one trips, and promote it
    to champion after the last step.
    """
    from mlprod.serve.routing.guardrails import GuardrailLimits
    from mlprod.serve.routing.rollout import MlflowRegistry, start_rollout
    from mlprod.serve.routing.state import Action

    def start(loaded: Project, store: RoutingStore) -> tuple[RolloutState, GuardrailLimits]:
        deploy = loaded.config.deploy
        limits = GuardrailLimits.from_config(deploy.guardrails if deploy is not None else None)
        registry = MlflowRegistry(loaded.tracking_uri())
        base = _current_policy(store, loaded)
        action = Action(_actor(actor), "rollout.start", {"via": "cli"})
        state = start_rollout(
            store, registry, base, model, steps, every, limits, action, experiment
        )
        return state, limits

    state, limits = _with_store(project, debug, start)
    if as_json:
        _print_json(state.to_json())
        return
    console.print(
        escape(
            f"rollout {state.rollout_id}: {state.challenger} takes {state.percent}% of "
            f"'{state.experiment}' from {state.control}; then "
            f"{', '.join(f'{s}%' for s in state.steps[1:]) or 'promotion'}, each step at least "
            f"{every} and {limits.min_requests} requests. Servers running this project apply it "
            "within a second; see 'mlprod rollout status'."
        ),
        highlight=False,
        soft_wrap=True,
    )


@rollout_app.command("status")
def rollout_status(
    project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """The latest rollout: its step, its status and why, and its guardrails' measures."""
    from mlprod.serve.routing.rollout import MlflowRegistry, judge_step
    from mlprod.serve.routing.state import RUNNING

    def status(
        loaded: Project, store: RoutingStore
    ) -> tuple[RolloutState | None, dict[str, Any] | None]:
        state = store.rollout()
        if state is None or state.status != RUNNING:
            return state, None
        log = loaded.prediction_log()
        try:
            verdict = judge_step(state, log, MlflowRegistry(loaded.tracking_uri()))
        finally:
            log.close()
        return state, {"judged": verdict.judged, **verdict.measures}

    state, live = _with_store(project, debug, status)
    if as_json:
        _print_json({"rollout": state.to_json() if state else None, "live": live})
        return
    if state is None:
        console.print("no rollout yet; start one with 'mlprod rollout start MODEL'")
        return
    _print_rollout(state, live)


def _print_rollout(state: RolloutState, live: dict[str, Any] | None) -> None:
    colour = {"running": "yellow", "completed": "green"}.get(state.status, "red")
    console.print(
        f"rollout {state.rollout_id} of {escape(state.challenger)} against "
        f"{escape(state.control)}: [{colour}]{state.status}[/{colour}] at {state.percent}% "
        f"(steps {','.join(map(str, state.steps))}%, at least {state.every_s:g}s each; "
        f"started {state.started_at:%Y-%m-%d %H:%M:%S} UTC)",
        highlight=False,
        soft_wrap=True,
    )
    if state.reason:
        console.print(f"reason: {escape(state.reason)}", highlight=False, soft_wrap=True)
    measures = live if live is not None else state.measures
    if not measures:
        return
    limits = state.guardrails
    table = Table(
        "measure",
        "this step" if live is not None else "at the last judgement",
        "limit",
        title=None,
    )
    rows = [
        ("challenger requests", "requests", "min_requests", "{:.0f}"),
        ("error rate", "error_rate", "max_error_rate", "{:.2%}"),
        ("p99 latency ratio", "p99_ratio", "max_p99_ratio", "{:.2f}x"),
        ("score PSI", "score_psi", "max_score_psi", "{:.3f}"),
    ]
    for heading, key, limit, shape in rows:
        value, bound = measures.get(key), limits.get(limit)
        table.add_row(
            heading,
            "" if value is None else shape.format(value),
            "" if bound is None else shape.format(bound),
        )
    console.print(table)


@rollout_app.command("abort")
def rollout_abort(
    actor: Actor = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Stop the running rollout: all traffic goes back to the control."""
    from mlprod.serve.routing.rollout import abort_rollout
    from mlprod.serve.routing.state import Action

    def abort(loaded: Project, store: RoutingStore) -> RolloutState:
        return abort_rollout(store, Action(_actor(actor), "rollout.abort", {"via": "cli"}))

    state = _with_store(project, debug, abort)
    if as_json:
        _print_json(state.to_json())
    else:
        console.print(
            escape(f"rollout {state.rollout_id} {state.reason}; all traffic to {state.control}"),
            highlight=False,
        )


@routing_app.command("show")
def routing_show(
    project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """The routing policy the servers follow (the newest stored, else mlprod.yaml's)."""

    def show(loaded: Project, store: RoutingStore) -> tuple[RoutingPolicy | None, str]:
        stored = store.policy()
        if stored is not None:
            return stored, f"revision {stored.revision}"
        return _configured(loaded), "from mlprod.yaml (no revision stored)"

    policy, origin = _with_store(project, debug, show)
    if as_json:
        _print_json({"policy": policy.to_json() if policy else None, "origin": origin})
        return
    if policy is None:
        console.print("no routing policy: the servers serve one model (mlprod serve --model)")
        return
    _print_policy(policy, origin)


def _print_policy(policy: RoutingPolicy, origin: str) -> None:
    assigned = f"sticky by {policy.assign_by}" if policy.assign_by else "at random"
    console.print(
        escape(f"experiment '{policy.experiment}' ({origin}), assigned {assigned}"),
        highlight=False,
    )
    total = sum(v.weight for v in policy.variants) or 1.0
    table = Table("variant", "model", "share")
    for variant in policy.variants:
        table.add_row(variant.name, variant.model, f"{variant.weight / total:.1%}")
    for shadow in policy.shadows:
        table.add_row(shadow.name, shadow.model, "shadow")
    console.print(table)


@routing_app.command("set")
def routing_set(
    variant: Annotated[
        list[str],
        typer.Option(
            "--variant",
            "-v",
            help="NAME=MODEL:WEIGHT, e.g. control=flights@champion:90 (repeat; the first is "
            "the control).",
        ),
    ],
    shadow: Annotated[
        list[str] | None,
        typer.Option("--shadow", help="NAME=MODEL, scored and logged, never answered."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="The experiment name (default: the current one).")
    ] = None,
    assign_by: Annotated[
        str | None,
        typer.Option(help="A request field for sticky assignment (default: the current one)."),
    ] = None,
    actor: Actor = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Store a new routing policy; running servers warm and swap to it within a second.

    Refused while a rollout runs, as the rollout sets the weights.
    """
    from mlprod.errors import RolloutError
    from mlprod.serve.routing.policy import RoutingPolicy
    from mlprod.serve.routing.state import RUNNING, Action

    def change(loaded: Project, store: RoutingStore) -> RoutingPolicy:
        running = store.rollout()
        if running is not None and running.status == RUNNING:
            raise RolloutError(
                f"a rollout of {running.challenger} is running and sets the routing; abort "
                "it first with 'mlprod rollout abort'"
            )
        current = _current_policy(store, loaded)
        policy = RoutingPolicy(
            experiment=experiment or current.experiment,
            variants=tuple(variants),
            shadows=tuple(shadows),
            assign_by=assign_by if assign_by is not None else current.assign_by,
            salt=current.salt if experiment is None else None,
        )
        action = Action(_actor(actor), "routing.set", {"via": "cli", "policy": policy.to_json()})
        published = store.publish(policy, action)
        assert published is not None
        return published

    variants = _run(debug, lambda: [_variant(text, weighted=True) for text in variant])
    shadows = _run(debug, lambda: [_variant(text, weighted=False) for text in shadow or []])
    policy = _with_store(project, debug, change)
    if as_json:
        _print_json(policy.to_json())
    else:
        _print_policy(policy, f"revision {policy.revision}, stored")


def _variant(text: str, *, weighted: bool) -> Any:
    """``NAME=MODEL:WEIGHT`` (or ``NAME=MODEL`` for a shadow) as a Variant."""
    from mlprod.errors import ConfigError
    from mlprod.serve.routing.policy import Variant

    name, equals, rest = text.partition("=")
    model, colon, weight = rest.rpartition(":") if weighted else (rest, "", "")
    shape = "NAME=MODEL:WEIGHT, like challenger=flights/4:10" if weighted else "NAME=MODEL"
    if not equals or not name or (weighted and not colon) or not model:
        raise ConfigError(f"invalid variant '{text}': expected {shape}")
    try:
        return Variant(name.strip(), model.strip(), float(weight) if weighted else 0.0)
    except ValueError:
        raise ConfigError(
            f"invalid variant '{text}': the weight '{weight}' is not a number; expected {shape}"
        ) from None
