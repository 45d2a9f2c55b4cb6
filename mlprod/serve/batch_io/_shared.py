"""What inputs and outputs share: a table in a DuckDB file or in PostgreSQL, the syntax that
names one, and the first line of a driver's error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mlprod.data import postgres
from mlprod.errors import ScoreIOError


@dataclass(frozen=True)
class DuckDBTable:
    """A table in a DuckDB file (``FILE.duckdb:[SCHEMA.]TABLE``), read or written."""

    path: Path
    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.path}:{self.schema}.{self.table}"


@dataclass(frozen=True)
class PostgresTable:
    """A table in PostgreSQL (``postgresql://...#[SCHEMA.]TABLE``), read or written."""

    url: str = field(repr=False)  # may hold a password: never in a repr
    schema: str
    table: str

    def __str__(self) -> str:
        return f"{postgres.redact(self.url)}#{self.schema}.{self.table}"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_TABLE_FORMS = "FILE.duckdb:[SCHEMA.]TABLE or postgresql://USER@HOST:PORT/DB#[SCHEMA.]TABLE"


def _postgres_target(text: str, role: str) -> tuple[str, str, str]:
    # The last '#': an unencoded '#' in a password must not leak into a message as a table name.
    url, _, target = text.rpartition("#")
    if not url or "@" in target or "/" in target:
        raise ScoreIOError(
            f"the PostgreSQL {role} '{postgres.redact(text)}' names no table; add #TABLE or "
            f"#SCHEMA.TABLE, e.g. '{postgres.redact(text)}#public.scores'"
        )
    return url, *_qualified(target, "public", f"{postgres.redact(url)}#{target}")


def _duckdb_target(text: str) -> tuple[Path, str, str]:
    path, _, target = text.rpartition(".duckdb:")
    return Path(f"{path}.duckdb"), *_qualified(target, "main", text)


def _qualified(target: str, default_schema: str, shown: str) -> tuple[str, str]:
    parts = target.split(".")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise ScoreIOError(
            f"invalid table '{target}' in '{shown}'; expected TABLE or SCHEMA.TABLE, names of "
            "letters, digits and underscores that do not start with a digit"
        )
    return (default_schema, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _no_table(shown: str) -> str:
    return (
        f"'{shown}' is a DuckDB file but names no table; "
        f"write '{shown}:TABLE' or '{shown}:SCHEMA.TABLE'"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
