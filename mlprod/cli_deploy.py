"""The deployment commands of ``mlprod``: score, materialize, push, parity, serve, outcomes.

A thin shell over :mod:`mlprod.api`, registered on the main command by :mod:`mlprod.cli`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
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
    from fastapi import FastAPI

    from mlprod.api import Project
    from mlprod.serve.parity import ParityReport
    from mlprod.serve.routing.router import RoutedService
    from mlprod.serve.service import OnlineService

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="NAME@ALIAS or NAME/VERSION (default: the project's model at alias champion).",
    ),
]
At = Annotated[
    datetime | None,
    typer.Option(
        "--at",
        help="Prediction time (UTC) for rows without one (default: the spine's time for the "
        "spine source, else the input's prediction_time column, else now).",
    ),
]


@app.command("score")
def score(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A source name, a .parquet/.csv "
            "file, file.duckdb:table or postgresql://...#schema.table.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="A .parquet file, a folder/ (one "
            "file per run), file.duckdb:table or postgresql://...#schema.table.",
        ),
    ],
    model: Model = None,
    at: At = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Rerun with the same id to replace its rows.")
    ] = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Batch scoring: features as of each row's time, the model's score and decision."""
    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json, counts=False) as progress:
        summary = loaded.score(model, input, output, at, run_id, progress)
    if as_json:
        _print_json(summary.to_dict())
        return
    console.print(
        f"scored {summary.rows:,} rows with {summary.model} ({summary.decisions:,} decisions) "
        f"-> {escape(summary.where)} in {summary.seconds:.1f}s (run {summary.run_id})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("materialize")
def materialize(
    model: Model = None,
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="The state at this UTC time (default now).")
    ] = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Fill the online store with what the model's features read, as of now (or --as-of)."""
    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json, counts=False) as progress:
        summary = loaded.materialize(model, as_of, progress)
    if as_json:
        _print_json({"applied": summary.applied, "tables": summary.rows, "latest": summary.latest})
        return
    latest = ", ".join(f"{s} up to {t}" for s, t in summary.latest.items() if t is not None)
    console.print(
        f"online store: {summary.applied:,} new rows in {len(summary.rows)} tables ({latest})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("push")
def push(
    source: Annotated[str, typer.Argument(help="The source the events belong to.")],
    file: Annotated[Path, typer.Argument(help="A .parquet or .csv file of new rows.")],
    model: Model = None,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Apply new events of a source to the online store (an event pushed twice counts once)."""
    from mlprod.serve.batch_io import FileInput, read_input

    loaded = _run(debug, lambda: _load(project))
    rows = _run(
        debug, lambda: read_input(FileInput(file, "csv" if file.suffix == ".csv" else "parquet"))
    )
    summary = _run(debug, lambda: loaded.push(source, rows, model))
    if as_json:
        _print_json({"received": rows.num_rows, "applied": summary.applied})
        return
    console.print(
        f"{rows.num_rows:,} events of '{source}' received, {summary.applied:,} new rows applied",
        highlight=False,
    )


@app.command("parity")
def parity(
    model: Model = None,
    sample: Annotated[int, typer.Option("--sample", "-n", help="Events to replay.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Which events are drawn.")] = 0,
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Replay historical events online and in batch; exit 1 if any feature or score differs."""
    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json, counts=False) as progress:
        report = loaded.parity(model, sample, seed, progress)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_parity(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_parity(report: ParityReport) -> None:
    head = (
        f"parity of {report.model}: {report.events:,} events x {len(report.features)} features "
        f"and the score, online store {report.store}, {report.seconds:.1f}s"
    )
    if report.ok:
        console.print(f"[green]ok[/green] {head}: no differences", highlight=False)
        return
    console.print(f"[red]differences[/red] {head}", highlight=False)
    table = Table("column", "events", "example (keys, time)", "batch", "online")
    for name, examples in report.mismatches.items():
        first = examples[0]
        keys = ", ".join(f"{k}={v}" for k, v in first.keys.items())
        table.add_row(
            name,
            f"{report.counts[name]:,}",
            f"{keys} at {first.prediction_time}",
            repr(first.batch),
            repr(first.online),
        )
    console.print(table)


@app.command("serve")
def serve(
    model: Model = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port (each loads the model; a worker that dies "
            "is replaced). Each answers /metrics for itself.",
        ),
    ] = 1,
    graceful_timeout: Annotated[
        int,
        typer.Option(
            "--graceful-timeout",
            min=0,
            metavar="SECONDS",
            help="On SIGTERM or Ctrl-C, refuse new connections and let the requests in flight "
            "finish for up to this long, then exit 0.",
        ),
    ] = 30,
    project: ProjectDir = Path("."),
    debug: Debug = False,
) -> None:
    """Serve the model over HTTP: /predict, /invocations, /v2 (KServe), /docs, /metrics.

    With a ``deploy:`` section (and no --model), serve its experiment: the variants by weight,
    the shadows after each answer."""
    from mlprod.serve.process import run_server
    from mlprod.serve.routing.router import RoutedService

    loaded = _run(debug, lambda: _load(project))
    routed = model is None and loaded.config.deploy is not None
    # Refuses a bad artefact at start.
    service = _run(debug, lambda: _routed_service(loaded) if routed else loaded.service(model))
    version = f"{service.model_name}/{service.model_version}"
    what = _describe_routing(service) if isinstance(service, RoutedService) else version
    console.print(
        f"serving {what} on http://{host}:{port} (docs: http://{host}:{port}/docs)"
        + (f" with {workers} workers" if workers > 1 else ""),
        highlight=False,
    )
    run = partial(run_server, host=host, port=port, graceful_timeout=graceful_timeout)
    if workers == 1:
        run(_app(loaded, service))
        return
    service.close()
    os.environ[_WORKER_PROJECT] = str(loaded.folder.resolve())
    # Every worker serves the version resolved here, even if the alias moves meanwhile; an
    # experiment's workers each resolve its references (the routing store keeps them in step).
    os.environ[_WORKER_MODEL] = "" if routed else version
    run("mlprod.cli_deploy:worker_app", workers=workers)


_WORKER_PROJECT = "MLPROD_SERVE_PROJECT"
_WORKER_MODEL = "MLPROD_SERVE_MODEL"


def worker_app() -> FastAPI:
    """The app of one ``serve --workers`` process, from what the parent resolved (no model:
    the project's experiment)."""
    loaded = _load(Path(os.environ[_WORKER_PROJECT]))
    model = os.environ[_WORKER_MODEL]
    return _app(loaded, loaded.service(model) if model else _routed_service(loaded))


def _routed_service(loaded: Project) -> RoutedService:
    """The experiment of the project's ``deploy:`` section, on its online store and log."""
    from mlprod.serve.routing.policy import policy_from_config
    from mlprod.serve.routing.router import open_routed_service

    assert loaded.config.deploy is not None
    return open_routed_service(
        policy_from_config(loaded.config.deploy),
        loaded.folder,
        loaded.tracking_uri(),
        loaded.online_store(),
        loaded.prediction_log(),
        loaded.config.serve.max_records,
    )


def _describe_routing(service: RoutedService) -> str:
    policy = service.policy
    total = sum(v.weight for v in policy.variants)
    served = ", ".join(f"{v.name} {v.model} {100 * v.weight / total:.0f}%" for v in policy.variants)
    shadows = "".join(f"; shadow {v.name} {v.model}" for v in policy.shadows)
    return f"experiment {policy.experiment} ({served}{shadows})"


def _app(loaded: Project, service: OnlineService | RoutedService) -> FastAPI:
    """The server's app: scoring (routed when an experiment runs) and the monitoring of the
    project (``/dashboard``, the monitoring gauges on ``/metrics``)."""
    from mlprod.monitor.server import install_monitoring

    app = _scoring_app(loaded, service)
    install_monitoring(app, loaded)
    return app


def _scoring_app(loaded: Project, service: OnlineService | RoutedService) -> FastAPI:
    from mlprod.serve.app import create_app
    from mlprod.serve.routing.router import RoutedService

    limits = loaded.config.serve
    if not isinstance(service, RoutedService):
        return create_app(
            service, max_records=limits.max_records, max_body_bytes=limits.max_body_bytes
        )
    from mlprod.serve.routing.sync import server_routing

    deploy = loaded.config.deploy
    routing = server_routing(
        loaded.config.log,
        loaded.folder,
        service.log,
        loaded.tracking_uri(),
        deploy.guardrails if deploy is not None else None,
    )
    app = create_app(
        service,
        max_records=limits.max_records,
        max_body_bytes=limits.max_body_bytes,
        routing=routing,  # follows the stored policy and runs rollouts
    )
    _close_on_shutdown(app, service.close)  # scores the queued shadows first
    return app


def _close_on_shutdown(app: FastAPI, close: Callable[[], None]) -> None:
    """Run ``close`` (in a thread) when the server shuts down, after the app's own lifespan."""
    from starlette.concurrency import run_in_threadpool

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        async with inner(target) as state:
            try:
                yield state
            finally:
                await run_in_threadpool(close)

    app.router.lifespan_context = lifespan


@app.command("outcomes")
def outcomes(project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False) -> None:
    """Label logged predictions whose outcome the sources now know (the spine's label)."""
    loaded = _run(debug, lambda: _load(project))
    summary = _run(debug, loaded.outcomes)
    if as_json:
        _print_json(summary.to_dict())
        return
    console.print(
        f"{summary.labelled:,} of {summary.unlabelled:,} unlabelled predictions labelled; "
        f"{summary.pending:,} still pending",
        highlight=False,
    )
