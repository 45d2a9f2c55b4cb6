"""The ``mlprod`` command: a thin shell over :mod:`mlprod.api`.

Our own errors become one red line and exit code 2; ``--debug`` shows the traceback. Ctrl-C
becomes one line saying what was kept, and exit code 130 (:mod:`mlprod.interrupts`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from mlprod.errors import MlprodError
from mlprod.formatting import format_size
from mlprod.interrupts import stop_cleanly
from mlprod.progress import ProgressCallback, ProgressTask
from mlprod.project.engine import EngineKind

if TYPE_CHECKING:
    from mlprod.api import Project, StepTime, TrainSummary

app = typer.Typer(
    help="Take a tabular model through its whole life in production.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Validate the project configuration or print its schema.", no_args_is_help=True
)
features_app = typer.Typer(
    help="Build the training matrix and inspect feature definitions.", no_args_is_help=True
)
models_app = typer.Typer(
    help="The model registry: versions, aliases, promotion.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")

# Piped or logged output is not cut to the 80 columns rich assumes without a terminal.
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True)
T = TypeVar("T")

ProjectDir = Annotated[
    Path, typer.Option("--project", "-p", help="The project folder (default: the current one).")
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
AsOf = Annotated[
    datetime | None,
    typer.Option(
        help="Build as of this UTC time: labels not known by then are left out (default: now)."
    ),
]


@contextmanager
def _user_errors(debug: bool, kept: str | None = None) -> Iterator[None]:
    """Our errors as red lines and exit code 2; Ctrl-C as ``interrupted; <kept>`` and 130."""
    with stop_cleanly(kept):
        try:
            yield
        except MlprodError as exc:
            if debug:
                raise
            for line in str(exc).splitlines():
                errors.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def _load(folder: Path) -> Project:
    """The project in ``folder``. ``mlprod.api`` (DuckDB, Arrow, the stores; the training
    stack only when training) is imported by the commands that load a project, not by the
    CLI itself, so ``--help`` starts quickly."""
    from mlprod.api import Project

    return Project.load(folder)


def _registry() -> Any:
    from mlprod.registry import models  # MLflow, for the registry commands only

    return models


def _describe_difference(difference: dict[str, Any]) -> str:
    from mlprod.api import describe_difference

    return describe_difference(difference)


def _run(debug: bool, action: Callable[[], T]) -> T:
    with _user_errors(debug):
        return action()


@config_app.command("check")
def config_check(project: ProjectDir = Path("."), debug: Debug = False) -> None:
    """Validate mlprod.yaml and every reference in it, without reading data."""
    loaded = _run(debug, lambda: _load(project))
    _run(debug, loaded.check)
    config = loaded.config
    console.print(
        f"[green]ok[/green] {project / 'mlprod.yaml'}: {len(config.sources)} sources, "
        f"{len(config.features)} features",
        soft_wrap=True,
        highlight=False,
    )


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of mlprod.yaml (for editor completion and validation)."""
    from mlprod.project.config import ProjectConfig

    sys.stdout.write(json.dumps(ProjectConfig.model_json_schema(by_alias=True), indent=2) + "\n")


@features_app.command("build")
def features_build(
    project: ProjectDir = Path("."),
    as_of: AsOf = None,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature",
            "-f",
            help="Build only this feature and what it needs (repeat for more; default: all), "
            "into subset.parquet: the training matrix is left as it is.",
        ),
    ] = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Build the point-in-time correct training matrix (Parquet plus a metadata file)."""
    loaded = _run(debug, lambda: _load(project))
    kept = "nothing was written"
    # Errors are reported after the progress display has closed, so they stand alone.
    with _user_errors(debug, kept), _progress(as_json, counts=False) as progress:
        summary = loaded.write_features(as_of, progress, feature or None)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict()) + "\n")
        return
    events = summary.events
    name = loaded.config.name
    title = (
        f"feature subset of '{name}' (the training matrix is left as it is)"
        if feature
        else f"training matrix of '{name}'"
    )
    table = Table(title=title, show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # paths whole, to copy
    table.add_row("rows", f"{summary.rows:,}")
    table.add_row("columns", f"{summary.columns}")
    table.add_row("events in the spine", f"{events['events']:,}")
    table.add_row("left out: label not yet known", f"{events['label_pending']:,}")
    table.add_row("left out: label is null", f"{events['label_missing']:,}")
    table.add_row("left out: no prediction time", f"{events['no_time']:,}")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("path", summary.path)
    table.add_row("metadata", summary.metadata_path)
    console.print(table)
    console.print(_steps_table(summary.steps, summary.seconds))


_SHOWN_STEPS = 8


def _steps_table(steps: list[StepTime], total: float) -> Table:
    """The slowest steps of a build (named as in ``features sql``) and what each was for."""
    table = Table(title="where the time went", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    table.add_column("for features")
    ranked = sorted(steps, key=lambda step: step.seconds, reverse=True)
    for step in ranked[:_SHOWN_STEPS]:
        share = f"{step.seconds / total:.0%}" if total > 0 else ""
        table.add_row(step.step, f"{step.seconds:.2f}", share, _for_features(step))
    rest = ranked[_SHOWN_STEPS:]
    if rest:
        seconds = sum(step.seconds for step in rest)
        share = f"{seconds / total:.0%}" if total > 0 else ""
        table.add_row(f"{len(rest)} more steps", f"{seconds:.2f}", share, "")
    return table


def _for_features(step: StepTime) -> str:
    names = list(step.features)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"(shared) {shown}" if step.prepares and names else shown


@features_app.command("list")
def features_list(
    project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """List the features with their kind, source and dependencies."""
    loaded = _run(debug, lambda: _load(project))
    graph = _run(debug, lambda: loaded.graph)
    rows = []
    for node in graph.nodes.values():
        feature: Any = node.feature
        rows.append(
            {
                "name": node.name,
                "kind": feature.kind,
                "source": getattr(feature, "source", None),
                "depends_on": list(node.deps),
                "categorical": feature.categorical is not None,
                "definition": feature.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            }
        )
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "kind", "source", "depends on", "categorical")
    for row in rows:
        table.add_row(
            row["name"],
            row["kind"],
            row["source"] or "",
            ", ".join(row["depends_on"]),
            "yes" if row["categorical"] else "",
        )
    console.print(table)


@features_app.command("sql")
def features_sql(
    name: Annotated[str | None, typer.Argument(help="A feature (default: all of them).")] = None,
    project: ProjectDir = Path("."),
    engine: Annotated[
        EngineKind | None,
        typer.Option(help="The engine whose SQL to print (default: the project's engine.kind)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Print the SQL that computes a feature (with what it depends on)."""
    loaded = _run(debug, lambda: _load(project))
    sys.stdout.write(_run(debug, lambda: loaded.feature_sql(name, engine=engine)) + "\n")


@contextmanager
def _progress(quiet: bool, counts: bool = True) -> Iterator[ProgressCallback]:
    """Progress drawn as rich bars on stderr (``counts``: with done/total beside each bar),
    cleared when the block ends."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        *([MofNCompleteColumn()] if counts else []),  # whole numbers, '?' for an unknown total
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, transient=True, disable=_no_bar(quiet)) as bars:
        yield _Bars(bars)


@dataclass
class _Bars:
    """mlprod's progress callback as rich bars: one bar per task."""

    bars: Progress

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        return _Bar(self.bars, self.bars.add_task(description, total=total), total)


@dataclass
class _Bar:
    bars: Progress
    task: TaskID
    total: float | None

    def advance(self, amount: float = 1) -> None:
        self.bars.advance(self.task, amount)

    def update(self, description: str | None = None, completed: float | None = None) -> None:
        self.bars.update(self.task, description=description, completed=completed)

    def finish(self, description: str | None = None) -> None:
        self.bars.update(self.task, description=description, completed=self.total)


def _no_bar(quiet: bool) -> bool:
    """No bar when asked, or when stderr is no terminal: there a bar cannot move, and closing
    it would only leave a blank line before an error."""
    return quiet or not errors.is_terminal


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


# The leaderboard's columns as people read them: heading, key, how to show a value.
_LEADERBOARD: list[tuple[str, str, Callable[[Any], str]]] = [
    ("model", "name", str),
    ("valid AUC", "valid_auc", lambda v: f"{v:.4f}"),
    ("± folds", "fold_auc_std", lambda v: f"{v:.3f}"),
    ("log-loss", "valid_log_loss", lambda v: f"{v:.4f}"),
    ("fit s", "fit_seconds", lambda v: f"{v:.1f}"),
    ("trials", "trials", str),
    ("size", "size_bytes", format_size),
    ("ms/row", "latency_ms", lambda v: f"{v:.3g}"),
]


def _print_training(summary: TrainSummary) -> None:
    title = f"model '{summary.model_name}' version {summary.model_version}: candidates"
    board = summary.leaderboard
    shown = [c for c in _LEADERBOARD if any(c[1] in row for row in board)]
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for index, (heading, _, _) in enumerate(shown):
        if index == 0:
            table.add_column(heading, no_wrap=True)
        else:
            table.add_column(heading, justify="right", no_wrap=True)
    for row in board:
        table.add_row(*[show(row[key]) if key in row else "" for _, key, show in shown])
    # Every column, whole, even where the terminal (or a pipe's default 80) is narrower.
    console.print(
        table, width=max(console.width, table.__rich_measure__(console, console.options).maximum)
    )
    low, high = summary.test_auc_ci
    console.print(
        f"test AUC {summary.test_auc:.4f} (95% CI {low:.4f} - {high:.4f}); baseline AUC "
        f"{summary.baseline_auc:.4f}; threshold {summary.threshold:.4f}"
        + (f"; test value {summary.test_value:,.0f}" if summary.test_value is not None else ""),
        highlight=False,
    )
    if summary.threshold_rule:
        console.print(f"threshold chosen by {summary.threshold_rule}", highlight=False)
    if summary.left_out is not None:
        reasons = {"label_pending": "label not yet known", "label_missing": "label is null"}
        reasons["no_time"] = "no prediction time"
        counts = "; ".join(f"{reasons.get(k, k)}: {v:,}" for k, v in summary.left_out.items())
        console.print(f"spine events left out: {counts}", highlight=False)
    looks = summary.test_set_used_before
    times = "time" if looks == 1 else "times"
    console.print(f"test set used {looks} {times} before", highlight=False)
    console.print(f"report: {summary.report_path}", soft_wrap=True, highlight=False)


def _print_warnings(warnings: Iterable[str]) -> None:
    """What a training found suspicious (a possible leak, a reused test set), before all else."""
    for warning in warnings:
        console.print(
            f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True
        )


@app.command("train")
def train(
    project: ProjectDir = Path("."), as_of: AsOf = None, as_json: Json = False, debug: Debug = False
) -> None:
    """Train the candidate models, choose one on validation, test it once and register it."""
    loaded = _run(debug, lambda: _load(project))
    kept = "nothing was registered (finished tuning trials are kept)"
    with _user_errors(debug, kept), _progress(as_json) as progress:
        summary = loaded.train(as_of, progress)
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_warnings(summary.warnings)
        _print_training(summary)


@app.command("run")
def run(
    project: ProjectDir = Path("."), as_of: AsOf = None, as_json: Json = False, debug: Debug = False
) -> None:
    """The whole loop to a registered model: features build -> train -> evaluate -> register."""
    loaded = _run(debug, lambda: _load(project))
    kept = (
        "nothing was registered (the training matrix, if written, and finished tuning trials "
        "are kept)"
    )
    with _user_errors(debug, kept), _progress(as_json) as progress:
        built, summary = loaded.run(as_of, progress)
    if as_json:
        _print_json({**summary.to_dict(), "features": built.to_dict()})
    else:
        _print_warnings(summary.warnings)
        console.print(f"training matrix: {built.rows:,} rows, {built.path}", highlight=False)
        _print_training(summary)


@app.command("evaluate")
def evaluate(
    version: Annotated[str, typer.Argument(help="A version number or alias.")] = "latest",
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Show the evaluation of a registered version: its test metrics and its report."""
    loaded = _run(debug, lambda: _load(project))
    result = _run(debug, lambda: loaded.evaluation(version))
    if as_json:
        _print_json(result)
    else:
        _print_evaluation(result)


# The evaluation's rows as people read them: heading, metric, how to show a value.
_EVALUATION: list[tuple[str, str, Callable[[Any], str]]] = [
    ("rows", "rows", lambda v: f"{v:,}"),
    ("positive rate", "positive_rate", lambda v: f"{v:.1%}"),
    ("AUC", "auc", lambda v: f"{v:.4f}"),
    ("PR AUC", "pr_auc", lambda v: f"{v:.4f}"),
    ("log-loss", "log_loss", lambda v: f"{v:.4f}"),
    ("Brier", "brier", lambda v: f"{v:.4f}"),
    ("KS", "ks", lambda v: f"{v:.3f}"),
    ("acted on (at threshold)", "acted_share", lambda v: f"{v:.1%}"),
    ("value", "value", lambda v: f"{v['total']:,.0f} {v.get('currency') or ''}".strip()),
]


def _print_evaluation(result: dict[str, Any]) -> None:
    """A version's metrics on validation and test as a table, then the baseline and report."""
    _print_warnings(result.get("warnings") or [])  # older versions recorded none
    console.print(
        escape(
            f"model '{result['model_name']}' version {result['version']}: {result['model']}, "
            f"trained {datetime.fromisoformat(result['created']):%Y-%m-%d %H:%M:%S %Z}"
        ),
        highlight=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("metric")
    splits = [split for split in ("validation", "test") if isinstance(result.get(split), dict)]
    for split in splits:
        table.add_column(split, justify="right")
    for heading, key, show in _EVALUATION:
        values = [result[split].get(key) for split in splits]
        if any(value is not None for value in values):
            table.add_row(heading, *[show(v) if v is not None else "" for v in values])
    if "test" in splits:
        low, high = result["test"]["auc_ci"]
        level = result["test"].get("auc_ci_level", 0.95)
        table.add_row(
            f"test AUC {level:.0%} CI", *([""] * (len(splits) - 1)), f"{low:.4f} - {high:.4f}"
        )
    console.print(table)
    console.print(f"threshold {result['threshold']:.4f}", highlight=False)
    baseline = result.get("baseline")
    if baseline:
        low, high = baseline["difference_ci"]
        console.print(
            escape(
                f"baseline {baseline['name']}: test AUC {baseline['auc']:.4f}; the model gains "
                f"{baseline['difference']:+.4f} ({baseline['level']:.0%} CI {low:+.4f} to "
                f"{high:+.4f})"
            ),
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report: {escape(result['report_path'])}", highlight=False, soft_wrap=True)


@app.command("reproduce")
def reproduce(
    version: Annotated[str, typer.Argument(help="A version number or alias.")],
    project: ProjectDir = Path("."),
    current_config: Annotated[
        bool,
        typer.Option(
            "--current-config",
            help="Retrain with today's mlprod.yaml instead of the version's recorded "
            "configuration, to see what the edits since change.",
        ),
    ] = False,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Retrain a version from its recorded inputs and compare its test-window predictions.

    The version's recorded definitions and training settings are used, so edits of
    mlprod.yaml since do not count (unless --current-config). Exits 0 when the predictions are
    identical and 1 when they differ, listing what differs now.
    """
    loaded = _run(debug, lambda: _load(project))
    with _user_errors(debug), _progress(as_json) as progress:
        result = loaded.reproduce(version, progress, current_config=current_config)
    if as_json:
        _print_json(result)
    else:
        _print_reproduction(result)
    if not result["reproduced"]:
        raise typer.Exit(1)


def _print_reproduction(result: dict[str, Any]) -> None:
    what = escape(f"model '{result['model_name']}' version {result['version']}")
    rows, largest = f"{result['rows']:,} test rows", f"{result['max_abs_difference']:.3g}"
    if result["reproduced"]:
        console.print(
            f"reproduced {what}: identical predictions on {rows} (max difference {largest}) "
            f"in {result['seconds']:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"[red]not reproduced[/red] {what}: predictions differ on "
            f"{result['rows_different']:,} of {rows} (max difference {largest})",
            highlight=False,
            soft_wrap=True,
        )
    for line in _config_used(result["config"]):
        console.print(escape(line), highlight=False, soft_wrap=True)
    differences = result["differences"]
    if not differences:
        console.print(
            "every recorded input is the same"
            + ("" if result["reproduced"] else "; the difference comes from training itself"),
            highlight=False,
        )
        return
    header = "what differs from the recording"
    if result["reproduced"]:
        header += " (it did not change the predictions)"
    console.print(f"{header}:", highlight=False)
    for difference in differences:
        console.print(
            f"  {escape(_describe_difference(difference))}", highlight=False, soft_wrap=True
        )


def _config_used(used: dict[str, Any]) -> list[str]:
    """Which configuration a reproduction trained with, and how today's compares."""
    if used["used"] == "current":
        return [
            f"trained with today's mlprod.yaml (config hash {used['hash']}; the version was "
            f"trained with {used['recorded_hash']})"
        ]
    settings = (
        "training settings"
        if used["train"] == "recorded"
        else "today's training settings (this version records none)"
    )
    lines = [f"trained with the recorded definitions and {settings} (config hash {used['hash']})"]
    if used["today_hash"] != used["recorded_hash"]:
        lines.append(
            f"mlprod.yaml has changed since (config hash {used['today_hash']}); "
            "--current-config retrains with it"
        )
    return lines


@models_app.command("list")
def models_list(
    project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """The registered models with their latest version and aliases."""
    loaded = _run(debug, lambda: _load(project))
    rows = _run(debug, lambda: _registry().list_models(loaded.tracking_uri()))
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "latest version", "aliases")
    for row in rows:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(row.get("aliases", {}).items()))
        table.add_row(str(row["name"]), str(row.get("latest_version", "")), aliases)
    console.print(table)


@models_app.command("show")
def models_show(
    name: str, project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """A registered model's versions, aliases and metrics."""
    loaded = _run(debug, lambda: _load(project))
    shown = _run(debug, lambda: _registry().show_model(loaded.tracking_uri(), name))
    if as_json:
        _print_json(shown)
    else:
        console.print_json(data=shown, default=str)


@models_app.command("promote")
def models_promote(
    name: str,
    version: int,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    project: ProjectDir = Path("."),
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Point an alias (champion by default) at a version."""
    loaded = _run(debug, lambda: _load(project))
    moved = _run(debug, lambda: _registry().promote(loaded.tracking_uri(), name, version, alias))
    if as_json:
        _print_json(moved)
        return
    previous = moved.get("previous")
    if previous is None:
        before = f"no version was {alias} before"
    elif previous == version:
        before = f"it was {alias} already"
    else:
        before = f"was version {previous}"
    console.print(f"{name}@{alias} -> version {version} ({before})", highlight=False)


@models_app.command("rollback")
def models_rollback(
    name: str, project: ProjectDir = Path("."), as_json: Json = False, debug: Debug = False
) -> None:
    """Move champion back to the previous champion."""
    loaded = _run(debug, lambda: _load(project))
    moved = _run(debug, lambda: _registry().rollback(loaded.tracking_uri(), name))
    if as_json:
        _print_json(moved)
    else:
        console.print(f"{name}@champion -> version {moved.get('version')}", highlight=False)


# These commands live in their own modules; importing them registers them on `app`.
from mlprod import (  # noqa: E402, F401
    cli_deploy,
    cli_experiment,
    cli_export,
    cli_init,
    cli_loop,
    cli_monitor,
    cli_rollout,
    cli_simulate,
)


def main() -> None:
    """The ``mlprod`` command. A usage mistake (an unknown option, a value that does not parse)
    is one line on stderr and exit code 2, like every other error, not a framed usage box."""
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - typer before it shipped its own click
        from click.exceptions import (  # type: ignore[assignment]
            ClickException,
            NoArgsIsHelpError,
        )
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()  # `mlprod` alone: the help
        raise SystemExit(exc.exit_code) from None
    except ClickException as exc:
        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "mlprod"
        errors.print(
            f"[red]error:[/red] {escape(exc.format_message())} (see {command} --help)",
            soft_wrap=True,
            highlight=False,
        )
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    # Run as a script, this module is __main__; the commands are registered on mlprod.cli.
    from mlprod.cli import main as registered

    registered()
