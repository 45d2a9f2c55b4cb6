"""``mlprod retrain`` and ``mlprod watch``: the improvement loop from the command line.

A thin shell over :mod:`mlprod.loop.retrain` and :mod:`mlprod.loop.watch`, registered on the
main command by :mod:`mlprod.cli`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mlprod.cli import (
    AsOf,
    Debug,
    Json,
    ProjectDir,
    _load,
    _print_json,
    _print_warnings,
    _progress,
    _run,
    _user_errors,
    app,
    console,
    errors,
)

if TYPE_CHECKING:
    from mlprod.loop.retrain import RetrainResult
    from mlprod.loop.watch import Tick


@app.command("retrain")
def retrain(
    project: ProjectDir = Path("."),
    as_of: AsOf = None,
    retune: Annotated[
        bool | None,
        typer.Option(
            "--retune/--no-retune",
            help="Tune the hyper-parameters again (default: retrain.retune in mlprod.yaml).",
        ),
    ] = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Train a challenger on the newest data and compare it with the champion on the latest
    events neither trained on; register it, and per retrain.policy set its alias and start
    its rollout."""
    from mlprod.loop.retrain import retrain as run_retrain

    loaded = _run(debug, lambda: _load(project))
    kept = "nothing was registered (finished tuning trials are kept)"
    with _user_errors(debug, kept), _progress(as_json) as progress:
        result = run_retrain(loaded, as_of=as_of, retune=retune, progress=progress)
    if as_json:
        _print_json(result.to_dict())
        return
    _print_retrain(result)


def _print_retrain(result: RetrainResult) -> None:
    _print_warnings(result.training.warnings)
    for line in result.readout.splitlines():
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(f"readout: {escape(result.readout_path)}", highlight=False, soft_wrap=True)
    console.print(f"report: {escape(result.training.report_path)}", highlight=False, soft_wrap=True)


@app.command("watch")
def watch(
    project: ProjectDir = Path("."),
    once: Annotated[bool, typer.Option("--once", help="Run one tick and stop.")] = False,
    interval: Annotated[
        str | None,
        typer.Option(help="Time between ticks, like 5m or 1h (default: monitor.interval)."),
    ] = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Run the monitor on an interval; retrain on retrain.schedule or when an alert of
    retrain.on_alerts fires. Ctrl-C (or SIGTERM) stops it after the running tick."""
    from mlprod.errors import ConfigError
    from mlprod.loop.watch import watch as run_watch
    from mlprod.project.durations import parse_duration

    def every() -> timedelta | None:
        if interval is None:
            return None
        try:
            return parse_duration(interval)
        except ValueError as exc:
            raise ConfigError(f"invalid --interval: {exc}") from None

    loaded = _run(debug, lambda: _load(project))
    step = _run(debug, every)
    show = _print_json_tick if as_json else _print_tick
    with _user_errors(debug):
        ticks = run_watch(loaded, once=once, interval=step, on_tick=show)
    if once and ticks and ticks[-1].errors:
        raise typer.Exit(2)


def _print_json_tick(tick: Tick) -> None:
    _print_json(tick.to_dict())


def _print_tick(tick: Tick) -> None:
    ran = f"monitor: {tick.monitor}" if tick.monitor else "monitor did not run"
    alerts = f"; alerts fired: {', '.join(tick.alerts)}" if tick.alerts else ""
    console.print(
        escape(f"{tick.at:%Y-%m-%d %H:%M:%S} UTC: {ran}{alerts}"),
        highlight=False,
        soft_wrap=True,
    )
    if tick.retrain is not None:
        console.print(escape(f"retrained ({tick.retrain_reason}):"), highlight=False)
        _print_retrain(tick.retrain)
    for error in tick.errors:
        errors.print(f"[red]error:[/red] {escape(error)}", highlight=False, soft_wrap=True)
