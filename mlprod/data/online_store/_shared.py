"""What every online store backend shares: the public types, and keys, times, batches, layouts.

A key tuple becomes canonical JSON text (:func:`canonical_key`), a time epoch microseconds
(:func:`micros`); rows to write are checked against their table's declared layout and cleaned
into a ``_Batch`` once, whatever the backend.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.data.types import ARROW_TYPES
from mlprod.errors import OnlineStoreError, one_of
from mlprod.project.base import IDENTIFIER

ValueType = Literal["int", "float", "string", "bool", "timestamp", "date"]


@dataclass(frozen=True)
class TableLayout:
    keys: int  # number of key parts
    values: tuple[ValueType, ...]  # types of v0..vn


@dataclass(frozen=True)
class Read:
    table: str
    key: tuple[Any, ...]
    until: int  # exclusive upper bound on at (epoch microseconds)
    since: int | None = None  # inclusive lower bound; None = no lower bound
    latest: bool = False  # only the rows with the largest at < until (ties all returned)


@dataclass(frozen=True)
class Summarize:
    """A range read (``since <= at < until``) answered with exact summaries, not rows.

    Each tuple lists value columns: ``counts`` their non-null count, ``orders`` also their
    smallest and largest value, ``totals`` also their exact sum and sum of squares,
    ``distincts`` also their number of distinct values.
    """

    read: Read
    counts: tuple[int, ...] = ()
    orders: tuple[int, ...] = ()
    totals: tuple[int, ...] = ()
    distincts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ColumnSummary:
    """One value column over a range: ``total`` and ``squares`` are exact integers (every value
    was integral), or None when not asked for."""

    count: int
    minimum: Any = None
    maximum: Any = None
    total: int | None = None
    squares: int | None = None
    distinct: int | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a ``Summarize`` asked for: the number of rows and each column's summary."""

    rows: int
    columns: dict[int, ColumnSummary]


@dataclass(frozen=True, slots=True)
class OnlineRows:
    """The rows of one read, column by column, sorted by availability time then event id.

    Columns, not row objects: a request reads thousands of rows, and a feature takes its
    window as a slice found by bisecting ``ats``. Values are int, float, str, bool, datetime
    (naive UTC), date or None.
    """

    ats: Sequence[int]
    columns: tuple[Sequence[Any], ...]

    def __len__(self) -> int:
        return len(self.ats)

    def rows(self) -> list[tuple[Any, ...]]:
        """``(at, v0, v1, ...)`` per row, in order."""
        return list(zip(self.ats, *self.columns, strict=True))


@dataclass(frozen=True)
class Freshness:
    latest_at: datetime | None  # naive UTC, the largest ``latest_at`` marked
    rows: int  # rows applied in total since the store was cleared
    updated_at: datetime  # naive UTC wall clock of the last mark


class SummarizingStore(Protocol):
    """A store that can summarize a range inside its own engine (optional: SQLite)."""

    def read_summarized(
        self, reads: Sequence[Read], summaries: Sequence[Summarize]
    ) -> tuple[list[OnlineRows], list[Summary | OnlineRows]]:
        """``read(reads)`` and, in the same snapshot, each summary; where a summary would not
        be exact (a NaN, a value that is not an integer, an overflow) that range's rows."""


class OnlineStore(Protocol):
    def declare(self, layouts: Mapping[str, TableLayout], recreate: bool = False) -> None:
        """Create the tables that are missing; a changed layout is an error unless recreated."""

    def write(self, table: str, rows: pa.Table) -> int:
        """Store rows (``__k0..``, ``__at``, ``__id``, ``__v0..``); return how many were new."""

    def read(self, reads: Sequence[Read]) -> list[OnlineRows]:
        """One list per read, in order, sorted by at then event id."""

    def prune(self, table: str, before: int, keep_latest: bool = True) -> int:
        """Drop rows with ``at < before``; return how many.

        ``keep_latest`` keeps each key's latest rows before ``before`` (ties all), so every
        ``latest`` read with ``until >= before`` still finds what it found before.
        """

    def mark_applied(self, source: str, latest_at: datetime | None, rows: int) -> None:
        """Record that rows of a source were applied: rows add up, the largest at is kept."""

    def freshness(self) -> dict[str, Freshness]:
        """Per source, sorted by name: what ``mark_applied`` recorded."""

    def ping(self) -> None:
        """Raise ``OnlineStoreError`` when the store cannot be reached."""

    def clear(self) -> None:
        """Drop every table, row and mark of this store (to materialize from scratch)."""

    def close(self) -> None: ...


_IDENTIFIER = re.compile(IDENTIFIER)
_EPOCH = datetime(1970, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MICRO = timedelta(microseconds=1)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ARROW: dict[ValueType, pa.DataType] = ARROW_TYPES


def _check_id(kind: str, name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise OnlineStoreError(
            f"{kind} '{name}' cannot name anything in the online store: expected letters, digits "
            "and underscores, not starting with a digit"
        )
    return name


def micros(moment: datetime) -> int:
    """Epoch microseconds of a naive-UTC (or aware) datetime, exactly."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (moment - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _from_days(value: int) -> date:
    return date.fromordinal(value + _EPOCH_ORDINAL)


def _key_part(part: Any) -> Any:
    """A key part as a JSON value; None when the key can never match (None or NaN)."""
    if part is None or isinstance(part, str):
        return part
    if isinstance(part, bool | np.bool_):
        return bool(part)
    if isinstance(part, numbers.Integral):
        return int(part)
    if isinstance(part, numbers.Real | Decimal):
        number = float(part)
        if math.isnan(number):
            return None
        return int(number) if number.is_integer() else number
    if isinstance(part, datetime):
        return {"ts": from_micros(micros(part)).isoformat(timespec="microseconds")}
    if isinstance(part, date):
        return {"date": part.isoformat()}
    raise OnlineStoreError(
        f"a key part {part!r} of type {type(part).__name__} cannot be part of an online key; "
        "expected int, float, str, bool, date or datetime"
    )


def canonical_key(key: Sequence[Any]) -> str | None:
    """The stored text of a key tuple, or None when a part is null (such a key never matches)."""
    parts = [_key_part(part) for part in key]
    return None if any(part is None for part in parts) else _JSON(parts)


@dataclass(frozen=True)
class _Batch:
    """Rows to write, cleaned: keys canonical, at in µs, values cast to their declared type."""

    keys: list[str]
    ats: list[int]
    ids: list[str]
    values: list[pa.Array]  # one per value column, of the declared Arrow type
    types: tuple[ValueType, ...]


def _prepare(table: str, rows: pa.Table, layout: TableLayout) -> _Batch:
    keys = [f"__k{i}" for i in range(layout.keys)]
    values = [f"__v{i}" for i in range(len(layout.values))]
    expected = [*keys, "__at", "__id", *values]
    if sorted(rows.column_names) != sorted(expected):
        raise OnlineStoreError(
            f"rows written to online table '{table}' have columns {one_of(rows.column_names)}; "
            f"expected {one_of(expected)} (its declared layout)"
        )
    if rows.num_rows and rows["__id"].null_count:
        raise OnlineStoreError(f"rows written to online table '{table}' have null event ids (__id)")
    if not pa.types.is_timestamp(rows.schema.field("__at").type):
        raise OnlineStoreError(
            f"__at of rows written to online table '{table}' is {rows.schema.field('__at').type}; "
            "expected timestamp[us]"
        )
    ats = _cast(table, "__at", rows["__at"], pa.timestamp("us")).cast(pa.int64())
    texts = pa.array(_keys_text([rows[k].to_pylist() for k in keys]), pa.string())
    # Rows that can never match are not stored; the rest go in (key, at) order, which is the
    # order of SQLite's clustered index and keeps a Redis batch on few keys.
    rows = rows.append_column("__key", texts).set_column(
        rows.schema.get_field_index("__at"), "__at", ats
    )
    rows = rows.filter(pc.and_(pc.is_valid(texts), pc.is_valid(ats)))
    rows = rows.take(pc.sort_indices(rows, [("__key", "ascending"), ("__at", "ascending")]))
    return _Batch(
        keys=rows["__key"].to_pylist(),
        ats=rows["__at"].to_pylist(),
        ids=rows["__id"].cast(pa.string()).to_pylist(),
        values=[
            _cast(table, name, rows[name], _ARROW[kind])
            for name, kind in zip(values, layout.values, strict=True)
        ],
        types=layout.values,
    )


def _keys_text(columns: list[list[Any]]) -> list[str | None]:
    """Canonical keys of many rows; a column has one Python type, so its values cache safely."""
    cache: dict[tuple[Any, ...], str | None] = {}
    out: list[str | None] = []
    for parts in zip(*columns, strict=True):
        text = cache.get(parts, "")
        if text == "":
            text = cache[parts] = canonical_key(parts)
        out.append(text)
    return out


def _cast(table: str, name: str, column: pa.ChunkedArray, to: pa.DataType) -> pa.Array:
    array = column.combine_chunks()
    if pa.types.is_timestamp(array.type) and array.type.tz is not None:
        array = array.cast(pa.timestamp(array.type.unit))  # the UTC instants, naive
    try:
        return array.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise OnlineStoreError(
            f"column {name} of rows written to online table '{table}' is {array.type}, which "
            f"cannot be stored as {to} without loss ({str(exc).splitlines()[0]})"
        ) from None


Decoder = Callable[[Sequence[Any]], Sequence[Any]]  # a stored column to Python values


def each(decode: Callable[[Any], Any]) -> Decoder:
    """A column decoder applying ``decode`` to every value but NULL."""

    def column(values: Sequence[Any]) -> list[Any]:
        return [None if v is None else decode(v) for v in values]

    return column


def _block(
    records: Sequence[Sequence[Any]],
    start: int,
    width: int,
    decoders: Sequence[tuple[int, Decoder]],
    ats: Sequence[int] | None = None,
) -> OnlineRows:
    """``OnlineRows`` of records whose values are ``record[start:]`` (``width`` of them) and
    whose time is ``record[0]`` unless ``ats`` are given, decoded column by column."""
    if not records:
        return OnlineRows([], tuple([] for _ in range(width)))
    transposed: list[Sequence[Any]] = list(zip(*records, strict=True))
    columns = transposed[start:]
    for i, decode in decoders:
        columns[i] = decode(columns[i])
    return OnlineRows(transposed[0] if ats is None else ats, tuple(columns))


def _layout_error(table: str, old: TableLayout, new: TableLayout) -> OnlineStoreError:
    return OnlineStoreError(
        f"online table '{table}' is stored with {_describe(old)} but is now declared with "
        f"{_describe(new)}; materialize the online store from scratch to rebuild it"
    )


def _describe(layout: TableLayout) -> str:
    return f"{layout.keys} key part(s) and values ({', '.join(layout.values) or 'none'})"


def _undeclared(table: str, where: str) -> OnlineStoreError:
    return OnlineStoreError(
        f"online table '{table}' is not declared in the online store at {where}; "
        "materialize the online store first"
    )


def _check_read(read: Read, layout: TableLayout) -> None:
    if len(read.key) != layout.keys:
        raise OnlineStoreError(
            f"a read of online table '{read.table}' gives a key of {len(read.key)} part(s) "
            f"{read.key!r}; the table has {layout.keys}"
        )


def _encode_layout(layout: TableLayout) -> str:
    return _JSON({"keys": layout.keys, "values": list(layout.values)})


def _decode_layout(text: str | bytes) -> TableLayout:
    loaded = json.loads(text)
    return TableLayout(keys=loaded["keys"], values=tuple(loaded["values"]))


def _now() -> int:
    return micros(datetime.now(UTC))
