"""``mlprod simulate``: replay history as live traffic against a running server.

A thin shell over :func:`mlprod.loop.simulate.simulate`, registered on the main command by
:mod:`mlprod.cli`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

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
    errors,
)

if TYPE_CHECKING:
    from mlprod.loop.simulate import SimulationSummary


def moment(text: str, option: str, *, until: bool = False) -> datetime:
    """A UTC time from an option: ``2013-12-01`` (a day: its midnight, or with ``until`` the
    midnight after it, so the day is included) or an ISO 8601 time (naive means UTC)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        return datetime.combine(day, datetime.min.time()) + (
            timedelta(days=1) if until else timedelta(0)
        )
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected a date such as 2013-12-01 or a time such as 2013-12-01T06:00, got '{text}'",
            param_hint=option,
        ) from None
    return found.astimezone(UTC).replace(tzinfo=None) if found.tzinfo else found


@app.command("simulate")
def simulate(
    url: Annotated[
        str, typer.Option("--url", help="The running server, e.g. http://127.0.0.1:8000.")
    ],
    start: Annotated[
        str, typer.Option("--from", help="First simulated day (or a UTC time), e.g. 2013-12-01.")
    ],
    end: Annotated[
        str,
        typer.Option(
            "--to", help="Last simulated day, included (or a UTC time, excluded), e.g. 2013-12-31."
        ),
    ],
    speed: Annotated[
        float,
        typer.Option(
            min=0,
            help="Simulated seconds per wall second (3600: an hour a second); 0: as fast as the "
            "server answers.",
        ),
    ] = 0.0,
    shift: Annotated[
        list[str] | None,
        typer.Option(
            "--shift",
            help="Change the replayed rows, e.g. \"dep_delay*2 where carrier='UA'\": "
            "COLUMN OP VALUE with OP one of * + - =, then optionally where COLUMN=VALUE "
            "and ...; repeatable.",
        ),
    ] = None,
    shift_from: Annotated[
        str | None, typer.Option("--shift-from", help="Shift rows from this day (or UTC time) on.")
    ] = None,
    shift_to: Annotated[
        str | None,
        typer.Option("--shift-to", help="Shift rows up to this day, included (or UTC time)."),
    ] = None,
    sample: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Predict this share of the spine's rows (events are all pushed).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    connections: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 8,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for a server that is still starting.")
    ] = 0.0,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Replay the spine between two days as live traffic against a running server: events
    pushed at their availability time, predictions at the spine time, outcomes when their
    label becomes known. Serve a store materialized as of --from (`mlprod materialize
    --as-of`). Exits 1 when the server refused anything."""
    from mlprod.loop.simulate import simulate as run_simulation

    first, last = moment(start, "--from"), moment(end, "--to", until=True)
    window = (
        moment(shift_from, "--shift-from") if shift_from else None,
        moment(shift_to, "--shift-to", until=True) if shift_to else None,
    )
    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json, counts=True) as progress:
        summary = run_simulation(
            loaded,
            url=url,
            start=first,
            end=last,
            speed=speed,
            shift=shift or [],
            shift_from=window[0],
            shift_to=window[1],
            sample=sample,
            seed=seed,
            connections=connections,
            wait=wait,
            progress=progress,
        )
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.refused_total:
        raise typer.Exit(1)


def summary_line(summary: SimulationSummary) -> str:
    """One line: what was sent, what the server took, how fast."""
    events = ", ".join(f"{s} {n:,}" for s, n in summary.events.items())
    return (
        f"simulated {summary.start} to {summary.end} ({summary.days} days): "
        f"{summary.predictions:,} predictions in {summary.prediction_requests:,} requests, "
        f"{sum(summary.events.values()):,} events ({events}; {summary.events_applied:,} new "
        f"rows), {summary.outcomes:,} outcomes ({summary.outcomes_pending:,} known only "
        f"later), {summary.refused_total:,} refused; {summary.elapsed:.1f} s, "
        f"{summary.predictions_per_second:,.0f} predictions/s, "
        f"{summary.requests_per_second:,.0f} requests/s"
    )


def _print_summary(summary: SimulationSummary) -> None:
    for shift in summary.shifts:
        console.print(f"shift: {escape(shift)}", highlight=False, soft_wrap=True)
    console.print(escape(summary_line(summary)), highlight=False, soft_wrap=True)
    for kind, count in sorted(summary.refused.items()):
        errors.print(f"[red]refused:[/red] {count:,} x {escape(kind)}", highlight=False)
    for message in summary.refusals:
        errors.print(f"  {escape(message)}", highlight=False, soft_wrap=True)
