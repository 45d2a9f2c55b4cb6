"""How sizes read to people, the same in the terminal and in the HTML report."""

from __future__ import annotations


def format_size(n_bytes: float) -> str:
    """``2.2 MB``, ``340 B``: binary units with one decimal, whole bytes below 1 KB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n_bytes) < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError(n_bytes)  # pragma: no cover
