"""``mlprod monitor run`` and ``mlprod monitor report``: a thin shell over :mod:`mlprod.monitor`,
registered on the main command by :mod:`mlprod.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mlprod.cli import (
    Debug,
    Json,
    ProjectDir,
    _load,
    _print_json,
    _progress,
    _run,
    _user_errors,
    app,
    console,
)

if TYPE_CHECKING:
    from mlprod.monitor.run import MonitorRun

monitor_app = typer.Typer(
    help="Watch live traffic: drift, data quality, live and estimated performance, alerts.",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")

Recompute = Annotated[
    bool, typer.Option("--recompute", help="Summarise every window again from the archive.")
]


@monitor_app.command("run")
def monitor_run(
    recompute: Recompute = False,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Read what the prediction log gained, update the windows, apply the alert rules and
    send what changed to the configured sinks."""
    from mlprod.monitor.run import describe, run_monitor

    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json) as progress:
        result = run_monitor(loaded, recompute=recompute, progress=progress)
    if as_json:
        _print_json(describe(result))
        return
    _print_latest(result)
    console.print(result.summary_line())
    for failure in result.failures:
        console.print(f"[yellow]alert not delivered:[/yellow] {escape(failure.line())}")


@monitor_app.command("report")
def monitor_report(
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path(
        "monitoring.html"
    ),
    project: ProjectDir = Path("."),
    debug: Debug = False,
) -> None:
    """Write the monitoring dashboard as one self-contained HTML file."""
    from mlprod.monitor.dashboard import render
    from mlprod.monitor.report import dashboard_data
    from mlprod.monitor.run import run_monitor

    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(False) as progress:
        result = run_monitor(loaded, offline=True, progress=progress)
    page = _run(debug, lambda: render(dashboard_data(loaded, result)))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    console.print(f"{result.summary_line()}\nwrote the dashboard to {output}")


def _print_latest(result: MonitorRun) -> None:
    """The latest window of each version and variant: volume, scores, AUC, worst drift."""
    latest: dict[tuple[str, str, str], dict[str, float | None]] = {}
    worst: dict[tuple[str, str, str], tuple[str, float]] = {}
    last_start: dict[tuple[str, str, str], object] = {}
    for value in result.metrics:
        key = (value.window.model_name, value.window.model_version, value.window.variant)
        if last_start.get(key) != value.window.start:
            last_start[key] = value.window.start
            latest[key] = {}
            worst.pop(key, None)
        if value.subject == "model":
            latest[key][value.metric] = value.value
        elif (
            value.metric == "psi"
            and value.value is not None
            and (key not in worst or value.value > worst[key][1])
        ):
            worst[key] = (value.subject, value.value)
    if not latest:
        console.print("no predictions in the log yet")
        return
    table = Table(box=box.SIMPLE_HEAD, title="latest window")
    for heading in ("version", "variant", "rows", "mean score", "AUC", "est. AUC", "worst PSI"):
        table.add_column(heading)
    for key, metrics in sorted(latest.items()):
        drift = worst.get(key)
        table.add_row(
            f"{key[0]}/{key[1]}",
            key[2] or "-",
            _show(metrics.get("rows"), "{:,.0f}"),
            _show(metrics.get("score_mean"), "{:.3f}"),
            _show(metrics.get("auc"), "{:.3f}"),
            _show(metrics.get("estimated_auc"), "{:.3f}"),
            f"{drift[1]:.3f} ({escape(drift[0])})" if drift else "-",
        )
    console.print(table)


def _show(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)
