"""Read PostgreSQL tables as Arrow over ADBC (DuckDB's postgres extension is not available).

The driver hands over the types Arrow has no equivalent for (``numeric``, PostGIS types, ...)
as opaque text that keeps the PostgreSQL type name; :func:`native_type` finds it, so a column
can be read as the contract declares it (a ``numeric`` declared float is cast to double
precision by PostgreSQL) or refused with its real type named.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.errors import SourceError, did_you_mean, one_of

if TYPE_CHECKING:  # Arrow is imported where rows move, not to check a config
    import pyarrow as pa

# SQLSTATEs for "no such table" and "no such schema".
_NO_TABLE = {"42P01", "3F000"}
# PostgreSQL's exact decimal types (``decimal`` is an alias of ``numeric``).
DECIMAL_TYPES = frozenset({"numeric", "decimal"})


def connect(url: str) -> Any:
    """An ADBC connection to PostgreSQL; failing to connect is a ``SourceError``, redacted."""
    import adbc_driver_postgresql.dbapi as pg

    try:
        return pg.connect(url)
    except Exception as exc:  # the driver raises its own error types
        raise SourceError(
            f"cannot connect to PostgreSQL at {redact(url)}: {_first_line(exc)}"
        ) from None


def table_types(url: str, schema: str, table: str) -> dict[str, pa.DataType]:
    """The columns of a table and their Arrow types, without reading its rows."""
    with connect(url) as conn:
        try:
            arrow_schema = conn.adbc_get_table_schema(table, db_schema_filter=schema)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) not in _NO_TABLE:
                raise SourceError(
                    f"cannot read the columns of '{schema}.{table}' from PostgreSQL at "
                    f"{redact(url)}: {_first_line(exc)}"
                ) from None
            conn.rollback()
            raise SourceError(
                f"PostgreSQL at {redact(url)} has no table '{schema}.{table}'"
                f"{_table_hint(conn, schema, table)}"
            ) from None
    return {field.name: field.type for field in arrow_schema}


def _table_hint(conn: Any, schema: str, table: str) -> str:
    """`` (did you mean 'x'?)``, the schema's tables, or that the schema does not exist."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            parameters=(schema,),
        )
        tables = [row[0] for row in cursor.fetchall()]
        if tables:
            return did_you_mean(table, tables) or f" (its tables: {one_of(tables)})"
        cursor.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            parameters=(schema,),
        )
        return "" if cursor.fetchall() else f" (there is no schema '{schema}')"


def native_type(arrow_type: pa.DataType) -> str | None:
    """The PostgreSQL type behind a column the driver could not map to Arrow (``numeric``),
    or None for a column it maps (``int8`` -> int64, ``text`` -> string, ...)."""
    import pyarrow as pa

    if isinstance(arrow_type, pa.OpaqueType):
        return str(arrow_type.type_name)
    return None


def read_table(
    url: str, schema: str, table: str, columns: list[str], as_float: Collection[str] = ()
) -> pa.Table:
    """Read the given columns of a table in one round trip (binary COPY inside the driver).

    ``as_float`` columns are cast to ``double precision`` by PostgreSQL (for ``numeric``
    columns, which otherwise arrive as text): the nearest double to each decimal.
    """
    query = exp.select(
        *[
            sql.alias(exp.cast(sql.col(c), exp.DataType.build("double")), c)
            if c in as_float
            else sql.col(c)
            for c in columns
        ]
    ).from_(exp.table_(table, db=schema, quoted=True))
    with connect(url) as conn, conn.cursor() as cursor:
        try:
            cursor.execute(query.sql("postgres"))
            result: pa.Table = cursor.fetch_arrow_table()
        except Exception as exc:
            raise SourceError(
                f"reading '{schema}.{table}' from PostgreSQL failed: {_first_line(exc)}"
            ) from None
    return result


def write_table(url: str, schema: str, table: str, data: pa.Table) -> None:
    """Create or replace a table from Arrow (used to load example data into PostgreSQL)."""
    with connect(url) as conn, conn.cursor() as cursor:
        cursor.adbc_ingest(table, data, mode="replace", db_schema_name=schema)
        conn.commit()


def redact(url: str) -> str:
    """A URL without its password (in the userinfo or a ``password=`` parameter), for messages."""
    url = _PASSWORD_PARAM.sub(r"\1***", url)
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)[^&\s]*", re.IGNORECASE)
# The driver's prefix ("IO: [libpq] Failed to connect: ") says nothing our message does not.
_DRIVER_PREFIX = re.compile(r"^(?:[A-Z_]+: )?\[libpq\] (?:Failed to connect: )?")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return _DRIVER_PREFIX.sub("", text.splitlines()[0]) if text else type(exc).__name__
