"""``mlprod experiment report NAME``: the readout of a live experiment, as tables or JSON.

A thin shell over :mod:`mlprod.evaluate.experiment`, registered on the main command by
:mod:`mlprod.cli`. The expected weights of the sample-ratio check are, first found:
``--weights``; the routing store's policy revisions for this experiment (what the servers
served, period by period); the ``deploy:`` section of mlprod.yaml when it runs this experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mlprod.cli import Debug, Json, ProjectDir, _load, _print_json, _run, app, console

if TYPE_CHECKING:
    from mlprod.api import Project
    from mlprod.evaluate.experiment import ExperimentReport, VariantReadout
    from mlprod.evaluate.experiment_assignment import WeightPeriod
    from mlprod.serve.routing.policy import RoutingPolicy
    from mlprod.serve.routing.state import RoutingStore

experiment_app = typer.Typer(
    help="Read out live experiments (A/B tests) from the prediction log.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="The experiment (deploy.experiment).")],
    since: Annotated[
        datetime | None,
        typer.Option("--since", help="Only predictions made at or after this UTC time."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Expected weights for the sample-ratio check, control first, e.g. "
            "control=50,challenger=50 (default: the deploy: section of mlprod.yaml).",
        ),
    ] = None,
    assign_by: Annotated[
        str | None,
        typer.Option(
            "--assign-by",
            help="The request field assignment was sticky by: its entities are the units of "
            "the tests (default: the policy's assign_by).",
        ),
    ] = None,
    control: Annotated[
        str | None,
        typer.Option("--control", help="The variant the others are compared with."),
    ] = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Per variant: requests, latency, scores, decisions and, once outcomes have joined, AUC
    and business value, each tested against the control; and a sample-ratio check."""
    from mlprod.evaluate.experiment import experiment_report
    from mlprod.evaluate.experiment_assignment import parse_weights

    loaded = _run(debug, lambda: _load(project))
    served = _run(debug, lambda: _served_policy(loaded, name))
    expected, source = served.weights, served.source
    if weights is not None:
        expected, source = _run(debug, lambda: parse_weights(weights)), "--weights"
    log = _run(debug, loaded.prediction_log)
    try:
        result = _run(
            debug,
            lambda: experiment_report(
                log,
                name,
                weights=expected,
                weights_source=source,
                unit=assign_by if assign_by is not None else served.assign_by,
                control=control,
                value=loaded.config.train.value if loaded.config.train else None,
                since=since,
            ),
        )
    finally:
        log.close()
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_report(result)


Weights = dict[str, float] | list["WeightPeriod"] | None


@dataclass(frozen=True)
class _Served:
    """What the experiment was served under, as far as the store or mlprod.yaml say."""

    weights: Weights = None
    source: str | None = None
    assign_by: str | None = None


def _served_policy(loaded: Project, name: str) -> _Served:
    """The weights and sticky field the experiment was served under: the routing store's
    policies (what the servers applied), else the deploy: section of mlprod.yaml."""
    from mlprod.serve.routing.state import RoutingStore

    store = RoutingStore.for_log(loaded.config.log, loaded.folder)
    try:
        stored = _stored_policy(store, name)
    finally:
        store.close()
    if stored.weights:
        return stored
    deploy = loaded.config.deploy
    if deploy is None or deploy.experiment != name:
        return _Served()
    weights = {v.name: float(v.weight) for v in deploy.variants}
    return _Served(weights, "mlprod.yaml deploy", deploy.assign_by)


def _stored_policy(store: RoutingStore, name: str) -> _Served:
    """Every stored revision as a weight period (another experiment's: no weights)."""
    from mlprod.evaluate.experiment_assignment import WeightPeriod

    def weights(policy: RoutingPolicy) -> dict[str, float]:
        if policy.experiment != name:
            return {}
        return {v.name: float(v.weight) for v in policy.variants}

    stored = store.revisions()
    ours = [policy for _, policy in stored if policy.experiment == name]
    if not ours:
        return _Served()
    periods = [WeightPeriod(at, weights(policy)) for at, policy in stored]
    revisions = f"revision {ours[0].revision}" + (
        f" to {ours[-1].revision}" if len(ours) > 1 else ""
    )
    return _Served(periods, f"the routing store ({revisions})", ours[-1].assign_by)


def _ci(ci: tuple[float, float], show: Callable[[float], str]) -> str:
    return f"[{show(ci[0])}, {show(ci[1])}]"


def _pct(v: float) -> str:
    return f"{v:.1%}"


def _auc(v: float) -> str:
    return f"{v:.3f}"


def _money(v: float) -> str:
    return f"{v:,.0f}"


# Each row of the variants table: heading, and how to show it for a variant ("" when unknown).
def _rows(currency: str) -> list[tuple[str, Callable[[VariantReadout], str]]]:
    unit = f" ({currency})" if currency else ""

    def outcome(show: Callable[[Any], str]) -> Callable[[VariantReadout], str]:
        return lambda v: show(v.outcomes) if v.outcomes else "no outcomes yet"

    def interval(e: Any, show: Callable[[float], str]) -> str:
        return "" if e is None else f"{show(e.value)} {_ci(e.ci, show)}"

    return [
        ("models", lambda v: ", ".join(v.models)),
        ("requests", lambda v: f"{v.requests:,}"),
        ("fallbacks / scoring errors", lambda v: f"{v.fallbacks:,} / {v.errors:,}"),
        ("latency p50 / p99 ms", lambda v: _latency(v.latency_ms)),
        ("score mean", lambda v: f"{v.score['mean']:.3f}" if v.score else ""),
        (
            "score p10 / p50 / p90",
            lambda v: (
                " / ".join(f"{v.score[q]:.3f}" for q in ("p10", "p50", "p90")) if v.score else ""
            ),
        ),
        ("decision rate", lambda v: interval(v.decision_rate, _pct)),
        ("labelled", outcome(lambda o: f"{o.labelled:,}")),
        ("positive rate", outcome(lambda o: interval(o.positive_rate, _pct))),
        ("AUC", outcome(lambda o: interval(o.auc, _auc) if o.auc else "one class only")),
        (
            f"value per 1,000{unit}",
            outcome(lambda o: interval(o.value, _money) if o.value else "not configured"),
        ),
    ]


def _latency(latency: dict[str, float] | None) -> str:
    return "" if latency is None else f"{latency['p50']:.1f} / {latency['p99']:.1f}"


# The tests against the control: key, heading, how a difference is shown.
_TESTS: list[tuple[str, str, Callable[[float], str]]] = [
    ("decision_rate", "decision rate", lambda v: f"{v * 100:+.2f} pp"),
    ("positive_rate", "positive rate", lambda v: f"{v * 100:+.2f} pp"),
    ("auc", "AUC", lambda v: f"{v:+.4f}"),
    ("value_per_1000", "value per 1,000", lambda v: f"{v:+,.1f}"),
]


def _print_report(report: ExperimentReport) -> None:
    since = f" since {report.since:%Y-%m-%d %H:%M:%S}" if report.since else ""
    units = f"; units: {report.unit} (sticky)" if report.unit else ""
    console.print(
        escape(f"experiment '{report.experiment}'{since}: control '{report.control}'{units}"),
        highlight=False,
        soft_wrap=True,
    )
    console.print(_variants_table(report.variants, report.currency, report.level))
    _print_tests(report)
    _print_sample_ratio(report)
    if report.shadows:
        console.print("shadows (scored on served requests, never answered):", highlight=False)
        console.print(_variants_table(report.shadows, report.currency, report.level))
    for variant in (*report.variants, *report.shadows):
        for note in variant.outcomes.notes if variant.outcomes else ():
            console.print(escape(f"note: {variant.name}: {note}"), highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(escape(f"note: {note}"), highlight=False, soft_wrap=True)


def _variants_table(variants: tuple[VariantReadout, ...], currency: str, level: float) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, caption=escape(f"[low, high]: {level:.0%} CI")
    )
    table.add_column("metric")
    for variant in variants:
        table.add_column(escape(variant.name), justify="right")
    for heading, show in _rows(currency):
        table.add_row(heading, *[escape(show(v)) for v in variants])
    return table


def _print_tests(report: ExperimentReport) -> None:
    treatments = [v for v in report.variants if v.vs_control]
    if not treatments:
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for heading in ("vs control", "metric", "difference", f"{report.level:.0%} CI", "p-value"):
        table.add_column(
            heading, justify="left" if heading in ("vs control", "metric") else "right"
        )
    table.add_column("")
    for variant in treatments:
        tests = variant.vs_control or {}
        for key, heading, show in _TESTS:
            result = tests.get(key)
            if result is None:
                reason = "no outcomes yet" if key != "decision_rate" else "no requests"
                table.add_row(escape(variant.name), heading, reason, "", "", "")
                continue
            verdict = "[green]differs[/green]" if result.significant else "no difference found"
            table.add_row(
                escape(variant.name),
                heading,
                show(result.difference),
                _ci(result.ci, show),
                f"{result.p_value:.3g}",
                verdict,
            )
    console.print(table)


def _print_sample_ratio(report: ExperimentReport) -> None:
    ratio = report.sample_ratio
    if ratio is None:
        console.print(
            "sample ratio: not checked (no weights; give --weights control=50,challenger=50)",
            highlight=False,
        )
        return
    unit = f" {report.unit}s" if report.unit else ""
    observed = ", ".join(
        f"{escape(n)} {count:,}{escape(unit)} (expected {ratio.expected[n]:,.0f})"
        for n, count in ratio.observed.items()
    )
    verdict = (
        f"[red]MISMATCH[/red] (p < {ratio.threshold:g}): the assignment is broken, "
        "distrust the differences"
        if ratio.mismatch
        else "ok"
    )
    console.print(
        f"sample ratio vs weights from {escape(report.weights_source or '')}: {observed}; "
        f"chi-square {ratio.chi2:.2f}, p {ratio.p_value:.3g}: {verdict}",
        highlight=False,
        soft_wrap=True,
    )
