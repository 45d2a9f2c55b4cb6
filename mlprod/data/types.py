"""The column types a contract speaks of, and which engine types belong to each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlprod.project.config import ColumnType

if TYPE_CHECKING:
    import pyarrow as pa

    ARROW_TYPES: dict[ColumnType, pa.DataType]

_FAMILIES: dict[str, ColumnType] = {
    "TINYINT": "int",
    "SMALLINT": "int",
    "INTEGER": "int",
    "BIGINT": "int",
    "HUGEINT": "int",
    "UTINYINT": "int",
    "USMALLINT": "int",
    "UINTEGER": "int",
    "UBIGINT": "int",
    "UHUGEINT": "int",
    "FLOAT": "float",
    "DOUBLE": "float",
    "DECIMAL": "float",
    "VARCHAR": "string",
    "BOOLEAN": "bool",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMPTZ_NS": "timestamp",
    "DATE": "date",
}
# A declared type also accepts these narrower families without loss.
_ACCEPTS: dict[ColumnType, set[ColumnType]] = {"float": {"int"}}


def type_family(duckdb_type: str) -> ColumnType | None:
    """``DECIMAL(5,2)`` -> ``float``; None for types a contract cannot declare."""
    base = duckdb_type.split("(")[0].strip().upper()
    return _FAMILIES.get(base)


def duckdb_types(schema: pa.Schema) -> dict[str, str]:
    """An Arrow schema's columns and their types as DuckDB names them: what the contracts'
    type families are read from, whichever engine holds the data."""
    import duckdb

    relation = duckdb.from_arrow(schema.empty_table())
    return {c: str(t) for c, t in zip(relation.columns, relation.types, strict=True)}


def accepts(declared: ColumnType, found: ColumnType | None) -> bool:
    return found == declared or found in _ACCEPTS.get(declared, set())


def __getattr__(name: str) -> Any:
    """``ARROW_TYPES``: the Arrow type a value of each contract type is held in (times:
    microseconds, naive UTC). Made on first use, so checking a config never imports Arrow."""
    if name != "ARROW_TYPES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pyarrow as pa

    types: dict[ColumnType, pa.DataType] = {
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),
        "date": pa.date32(),
    }
    globals()["ARROW_TYPES"] = types
    return types
