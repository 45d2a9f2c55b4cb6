"""One section of ``bench/RESULTS.md`` per benchmark, replaced on a rerun."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(heading: str, text: str, path: Path = RESULTS_MD) -> None:
    """Replace the section that starts with the line ``heading`` (``## Serving ...``) up to the
    next heading of its level or above, with ``text`` (which starts with that heading); append
    it when there is none."""
    current = path.read_text() if path.exists() else ""
    found = re.search(rf"^{re.escape(heading)}$", current, re.MULTILINE)
    if found is None:
        path.write_text(current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return
    level = len(heading) - len(heading.lstrip("#"))
    following = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(current, found.end())
    rest = current[following.start() :] if following else ""
    path.write_text(
        current[: found.start()] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    )
