"""``mlprod export prometheus-rules|grafana``: the project's monitoring for Prometheus and
Grafana, written from mlprod.yaml. A thin shell over :mod:`mlprod.monitor.export_prometheus`
and :mod:`mlprod.monitor.export_grafana`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlprod.cli import Debug, ProjectDir, _load, _run, app, console, errors

export_app = typer.Typer(
    help="Alerting rules and a dashboard for Prometheus and Grafana, from mlprod.yaml.",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

Output = Annotated[Path, typer.Option("--output", "-o", help="The file to write.")]


def _write(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all (a staging file renamed over ``path``); a failure is
    one red line and exit code 2."""
    staging = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        errors.print(
            f"[red]error:[/red] cannot write {escape(str(path))}: {escape(reason)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None


@export_app.command("prometheus-rules")
def export_prometheus_rules(
    output: Output, project: ProjectDir = Path("."), debug: Debug = False
) -> None:
    """Prometheus alerting rules for monitor.alerts, over the gauges 'mlprod serve' exports.

    Check them with 'promtool check rules FILE' and add FILE to rule_files in prometheus.yml.
    """
    from mlprod.monitor.export_prometheus import rules

    loaded = _run(debug, lambda: _load(project))
    text = _run(debug, lambda: rules(loaded.config))
    _write(output, text)
    count = len(loaded.config.monitor.alerts)
    console.print(
        escape(
            f"wrote {count} alerting rule{'' if count == 1 else 's'} of '{loaded.config.name}' "
            f"to {output}; check them with 'promtool check rules {output}'"
        ),
        highlight=False,
        soft_wrap=True,
    )


@export_app.command("grafana")
def export_grafana(output: Output, project: ProjectDir = Path("."), debug: Debug = False) -> None:
    """A Grafana dashboard (JSON) over the monitoring gauges 'mlprod serve' exports.

    Import it in Grafana and pick the Prometheus data source that scrapes the servers.
    """
    from mlprod.monitor.export_grafana import dashboard

    loaded = _run(debug, lambda: _load(project))
    board = _run(debug, lambda: dashboard(loaded.config))
    _write(output, json.dumps(board, indent=2) + "\n")
    panels = sum(1 for panel in board["panels"] if panel["type"] != "row")
    console.print(
        escape(
            f"wrote a Grafana dashboard of '{loaded.config.name}' ({panels} panels) to "
            f"{output}; import it in Grafana (Dashboards > New > Import)"
        ),
        highlight=False,
        soft_wrap=True,
    )
