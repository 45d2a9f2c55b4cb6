"""Small HTML building blocks for the report: escaping, number formats, tables and images.

Cells passed to ``table`` are HTML already; everything else escapes what it is given.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mlprod.evaluate.plots import to_png
from mlprod.formatting import format_size

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1240px; color: #222;
       padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
nav a { margin-right: 0.8rem; } .meta { color: #666; }
.cards { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.8rem 1rem; min-width: 220px; }
.card strong { font-size: 1.8rem; display: block; } .card p { margin: 0; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.chosen { font-weight: bold; }
.warnings { background: #fff4e5; border: 1px solid #f0b36b; padding: 0.6rem 2rem; }
"""


def escape(value: object) -> str:
    return html.escape(str(value))


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if not np.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 0.001:
        return f"{value:.4g}"
    return f"{value:.2e}"


def format_cell(value: object, column: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return format_size(float(value)) if column.endswith("_bytes") else f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return (
            format_size(float(value)) if column.endswith("_bytes") else format_number(float(value))
        )
    return escape(value)


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], bold: int | None = None
) -> str:
    """A table from cells that are already HTML (escape before calling)."""
    head = "".join(f"<th>{item}</th>" for item in header)
    body = "".join(
        f"<tr{' class=chosen' if i == bold else ''}>"
        + "".join(f"<td>{item}</td>" for item in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_records(rows: Sequence[dict[str, Any]], bold: int | None = None) -> str:
    """A table of dicts whose keys vary: the columns are every key, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return render_table(
        [escape(column.replace("_", " ")) for column in columns],
        [[format_cell(row.get(column), column) for column in columns] for row in rows],
        bold,
    )


def embed_image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def embed_charts(*figures: tuple[Figure, str]) -> str:
    images = "".join(embed_image(to_png(figure), alt) for figure, alt in figures)
    return f'<div class="charts">{images}</div>'
