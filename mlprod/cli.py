"""The ``mlprod`` command: a thin shell over :mod:`mlprod.api`.

Our own errors become one red line and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlprod.api import Project
from mlprod.errors import MlprodError

app = typer.Typer(
    help="Take a tabular model through its whole life in production.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Validate the project configuration or print its schema.", no_args_is_help=True
)
features_app = typer.Typer(
    help="Build the training matrix and inspect feature definitions.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(features_app, name="features")

console = Console()
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
def _user_errors(debug: bool) -> Iterator[None]:
    try:
        yield
    except MlprodError as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            errors.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _run(debug: bool, action: Callable[[], T]) -> T:
    with _user_errors(debug):
        return action()


@config_app.command("check")
def config_check(project: ProjectDir = Path("."), debug: Debug = False) -> None:
    """Validate mlprod.yaml and every reference in it, without reading data."""
    loaded = _run(debug, lambda: Project.load(project))
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
    project: ProjectDir = Path("."), as_of: AsOf = None, as_json: Json = False, debug: Debug = False
) -> None:
    """Build the point-in-time correct training matrix (Parquet plus a metadata file)."""
    loaded = _run(debug, lambda: Project.load(project))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    # Errors are reported after the progress display has closed, so they stand alone.
    with (
        _user_errors(debug),
        Progress(*columns, console=errors, transient=True, disable=as_json) as progress,
    ):
        summary = loaded.write_features(as_of, progress)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict()) + "\n")
        return
    events = summary.events
    table = Table(title=f"training matrix of '{loaded.config.name}'", show_header=False)
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


@features_app.command("list")
def features_list(project: ProjectDir = Path("."), debug: Debug = False) -> None:
    """List the features with their kind, source and dependencies."""
    loaded = _run(debug, lambda: Project.load(project))
    graph = _run(debug, lambda: loaded.graph)
    table = Table("name", "kind", "source", "depends on", "categorical")
    for node in graph.nodes.values():
        feature: Any = node.feature
        table.add_row(
            node.name,
            feature.kind,
            getattr(feature, "source", ""),
            ", ".join(node.deps),
            "yes" if feature.categorical else "",
        )
    console.print(table)


@features_app.command("sql")
def features_sql(
    name: Annotated[str | None, typer.Argument(help="A feature (default: all of them).")] = None,
    project: ProjectDir = Path("."),
    debug: Debug = False,
) -> None:
    """Print the SQL that computes a feature (with what it depends on)."""
    loaded = _run(debug, lambda: Project.load(project))
    sys.stdout.write(_run(debug, lambda: loaded.feature_sql(name)) + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()
