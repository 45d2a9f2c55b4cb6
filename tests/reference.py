"""A brute-force reference for the training matrix: plain loops over rows, no SQL, no pandas.

It states the point-in-time rule as directly as possible, so the compiled DuckDB query can be
checked against it. A row of a source is visible to a prediction at ``t`` only if its
availability time is known and strictly before ``t``:

* aggregate: rows with the same key whose availability is in ``[t - lag - window, t - lag)``
  and that pass the filter (a filter that is NULL rejects the row);
* asof: the latest row with the same key available before ``t`` (ties on availability go to
  the largest non-null value), NULL when older than ``t - max_staleness``;
* lookup: the one row of a static table with the same key.

NULL keys, on either side, never match anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

Row = Mapping[str, Any]
RowFn = Callable[[Row], Any]
Pairs = tuple[tuple[str, str], ...]  # (spine column, source column)


@dataclass(frozen=True)
class RefSource:
    rows: Sequence[Row]
    available_at: RowFn | None = None  # None: a static dimension table


@dataclass(frozen=True)
class RefSpine:
    rows: Sequence[Row]
    keys: tuple[str, ...]
    time: RowFn
    label: RowFn
    label_available_at: RowFn


@dataclass(frozen=True)
class RefAggregate:
    name: str
    source: str
    keys: Pairs
    function: str
    value: RowFn | None
    window: timedelta
    lag: timedelta = timedelta(0)
    filter: RowFn | None = None


@dataclass(frozen=True)
class RefAsof:
    name: str
    source: str
    keys: Pairs
    value: RowFn
    max_staleness: timedelta | None = None


@dataclass(frozen=True)
class RefLookup:
    name: str
    source: str
    keys: Pairs
    value: RowFn


RefFeature = RefAggregate | RefAsof | RefLookup


def keys_match(spine_row: Row, row: Row, keys: Pairs) -> bool:
    """Every key equal and not NULL (NULL = NULL is not a match in SQL)."""
    for spine_column, source_column in keys:
        left, right = spine_row[spine_column], row[source_column]
        if left is None or right is None or left != right:
            return False
    return True


def aggregate(feature: RefAggregate, source: RefSource, spine_row: Row, t: datetime) -> Any:
    assert source.available_at is not None
    start = t - feature.lag - feature.window
    end = t - feature.lag
    rows_in_window = 0
    values: list[tuple[datetime, Any]] = []  # (available_at, non-null value)
    for row in source.rows:
        if not keys_match(spine_row, row, feature.keys):
            continue
        available_at = source.available_at(row)
        if available_at is None or not (start <= available_at < end):
            continue
        if feature.filter is not None and feature.filter(row) is not True:
            continue
        rows_in_window += 1
        if feature.value is not None:
            value = feature.value(row)
            if value is not None:
                values.append((available_at, value))
    plain = [value for _, value in values]
    function = feature.function
    if function == "count":
        return rows_in_window if feature.value is None else len(plain)
    if function == "sum":
        return math.fsum(plain) if plain else 0.0
    if function == "mean":
        return math.fsum(plain) / len(plain) if plain else None
    if function == "min":
        return min(plain) if plain else None
    if function == "max":
        return max(plain) if plain else None
    if function == "std":
        return statistics.stdev(plain) if len(plain) >= 2 else None
    if function == "count_distinct":
        return len(set(plain))
    if function == "last":
        if not values:
            return None
        best_at, best_value = values[0]
        for available_at, value in values[1:]:
            if available_at > best_at or (available_at == best_at and value > best_value):
                best_at, best_value = available_at, value
        return best_value
    raise AssertionError(function)


def asof(feature: RefAsof, source: RefSource, spine_row: Row, t: datetime) -> Any:
    assert source.available_at is not None
    latest: datetime | None = None
    tied_values: list[Any] = []
    for row in source.rows:
        if not keys_match(spine_row, row, feature.keys):
            continue
        available_at = source.available_at(row)
        if available_at is None or not available_at < t:
            continue
        if latest is None or available_at > latest:
            latest, tied_values = available_at, [feature.value(row)]
        elif available_at == latest:
            tied_values.append(feature.value(row))
    if latest is None:
        return None
    if feature.max_staleness is not None and latest < t - feature.max_staleness:
        return None
    non_null = [value for value in tied_values if value is not None]
    return max(non_null) if non_null else None


def lookup(feature: RefLookup, source: RefSource, spine_row: Row) -> Any:
    matches = [row for row in source.rows if keys_match(spine_row, row, feature.keys)]
    assert len(matches) <= 1, "a lookup table has at most one row per key"
    return feature.value(matches[0]) if matches else None


def _nulls_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


def training_matrix(
    spine: RefSpine,
    sources: Mapping[str, RefSource],
    features: Sequence[RefFeature],
    as_of: datetime,
) -> list[dict[str, Any]]:
    """The training matrix, one dict per row, in the engine's column and row order."""
    out: list[dict[str, Any]] = []
    for event in spine.rows:
        t = spine.time(event)
        label = spine.label(event)
        label_at = spine.label_available_at(event)
        if t is None or label is None or label_at is None or not label_at < as_of:
            continue
        record: dict[str, Any] = {key: event[key] for key in spine.keys}
        record.update(prediction_time=t, label=label, label_available_at=label_at)
        for feature in features:
            source = sources[feature.source]
            if isinstance(feature, RefAggregate):
                record[feature.name] = aggregate(feature, source, event, t)
            elif isinstance(feature, RefAsof):
                record[feature.name] = asof(feature, source, event, t)
            else:
                record[feature.name] = lookup(feature, source, event)
        out.append(record)
    out.sort(key=lambda r: (r["prediction_time"], *[_nulls_last(r[key]) for key in spine.keys]))
    return out
