"""``mlprod init``: a first project from a table, registered on the main command by
:mod:`mlprod.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlprod.cli import Debug, Json, _print_json, _run, app, console


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="The project folder to write mlprod.yaml in.")],
    source: Annotated[
        str,
        typer.Option(
            "--from", help="The table: a .csv, .tsv or .parquet file, or FILE.duckdb:TABLE."
        ),
    ],
    label: Annotated[
        str,
        typer.Option(help="The outcome to predict, true/false or 0/1, e.g. \"churned = 'Yes'\"."),
    ],
    time: Annotated[
        str | None,
        typer.Option(help="The column that says when each row's prediction is made (optional)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="The column that names each row (optional).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The project's name (default: the folder's).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing mlprod.yaml.")] = False,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Write a working, commented mlprod.yaml for a table: then `mlprod run` trains."""
    from mlprod.scaffold import init_project

    summary = _run(
        debug,
        lambda: init_project(directory, source, label, time=time, key=key, name=name, force=force),
    )
    if as_json:
        _print_json(
            {
                "path": str(summary.path),
                "rows": summary.rows,
                "columns": summary.columns,
                "features": summary.features,
                "positives": summary.positives,
                "negatives": summary.negatives,
                "null_labels": summary.null_labels,
                "split": summary.split,
                "left_out": summary.left_out,
            }
        )
        return
    console.print(
        f"[green]wrote[/green] {summary.path}: {summary.rows:,} rows, {summary.features} "
        f"features from {summary.columns} columns, label true on {summary.positives:,} rows "
        f"({summary.positive_rate:.1%}), {summary.split} split",
        highlight=False,
        soft_wrap=True,
    )
    if summary.null_labels:
        console.print(
            f"  {summary.null_labels:,} rows have no label and are left out", highlight=False
        )
    for column, why in summary.left_out.items():
        console.print(f"  left out '{column}': {why}", highlight=False)
    console.print(f"next: mlprod run --project {directory}", highlight=False)
