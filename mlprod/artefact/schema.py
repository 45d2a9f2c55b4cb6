"""What a model reads: the request fields, the spine keys and each feature column's type.

Training records it from the feature graph and the matrix; scoring checks every table against
it, so a missing or mistyped feature column is refused with its name instead of being scored
wrongly (or failing deep inside pyarrow). Columns that are not features are ignored: a
training matrix also holds keys, times and the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import ArtefactError, InputError, one_of

_TIMESTAMP = re.compile(r"^timestamp\[(\w+)(?:, tz=(.+))?\]$")
_DECIMAL = re.compile(r"^decimal(128|256)\((\d+), (-?\d+)\)$")


@dataclass(frozen=True)
class FeatureColumn:
    """One feature column as the model was trained on it."""

    name: str
    dtype: str  # the Arrow type as Arrow prints it: "double", "string", "timestamp[us]", ...
    definition_hash: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "dtype": self.dtype, "definition_hash": self.definition_hash}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureColumn:
        return cls(str(data["name"]), str(data["dtype"]), str(data["definition_hash"]))


@dataclass(frozen=True)
class InputSchema:
    """The model's input contract, saved in the manifest and on the pipeline.

    ``request``: the fields a prediction request carries, as
    ``mlprod.features.requests.RequestField.to_dict`` writes them (name, type, nullable, key);
    ``keys``: the spine keys; ``features``: the feature columns the model scores, in order.
    """

    request: tuple[dict[str, Any], ...]
    keys: tuple[str, ...]
    features: tuple[FeatureColumn, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": [dict(field) for field in self.request],
            "keys": list(self.keys),
            "features": [column.to_dict() for column in self.features],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSchema:
        return cls(
            tuple(dict(field) for field in data.get("request", [])),
            tuple(str(key) for key in data.get("keys", [])),
            tuple(FeatureColumn.from_dict(column) for column in data.get("features", [])),
        )

    @classmethod
    def of_table(
        cls,
        table: pa.Table,
        features: list[str],
        hashes: dict[str, str],
        keys: list[str],
        request: list[dict[str, Any]],
    ) -> InputSchema:
        """The schema of ``features`` as ``table`` holds them (the training matrix)."""
        columns = tuple(
            FeatureColumn(name, str(table.schema.field(name).type), hashes.get(name, ""))
            for name in features
        )
        return cls(tuple(request), tuple(keys), columns)


def feature_table(table: pa.Table, features: list[str], schema: InputSchema | None) -> pa.Table:
    """The feature columns of ``table``, in the model's order and cast to its types.

    Extra columns are ignored. A missing column, or one whose values cannot be the feature's
    type, is an :class:`InputError` naming it. Without a schema (artefacts saved before
    schemas were recorded) only the presence of the columns is checked.
    """
    names = tuple(features)
    key = (names, id(schema))
    known = _SELECTIONS.get(key)
    if known is None or known.schema is not schema or not table.schema.equals(known.given):
        try:
            selected = table.select(features)
        except (KeyError, pa.ArrowInvalid):
            raise _unselectable(table, features, schema) from None
        known = _check(table.schema, selected.schema, names, schema)
        _remember(key, known)
    else:
        selected = table.select(known.positions)  # as select(features), without name lookups
    if known.expected is None:  # the common case: the types are the model's, no copy
        return selected
    for index in known.mismatched:
        name, expected = features[index], known.expected.field(index).type
        column = _conform(selected.column(index), expected, name)
        selected = selected.set_column(index, name, column)
    return selected


@dataclass(frozen=True)
class _Selection:
    """What checking a table of one Arrow schema against one model's features found.

    Scoring one row at a time checks tables of the same schema again and again: a table whose
    schema equals ``given`` holds the feature columns at ``positions``, and its columns at
    ``mismatched`` need casting to ``expected`` (None: no column does). Only tables that passed
    ``select`` are remembered, and casts run every time, so every error is still raised as
    the full check raises it.
    """

    schema: InputSchema | None  # held, so that the id in the key stays this schema's
    given: pa.Schema
    positions: tuple[int, ...]
    expected: pa.Schema | None
    mismatched: tuple[int, ...]


def _check(
    given: pa.Schema, selected: pa.Schema, names: tuple[str, ...], schema: InputSchema | None
) -> _Selection:
    positions = tuple(given.get_field_index(name) for name in names)
    expected = None if schema is None else _arrow_schema(names, schema.features)
    if expected is None or selected.equals(expected):
        return _Selection(schema, given, positions, None, ())
    mismatched = tuple(
        index for index, kind in enumerate(selected.types) if kind != expected.field(index).type
    )
    return _Selection(schema, given, positions, expected, mismatched)


_SELECTIONS: dict[tuple[tuple[str, ...], int], _Selection] = {}
_MAX_SELECTIONS = 64  # models x request shapes one process scores; cleared when full


def _remember(key: tuple[tuple[str, ...], int], found: _Selection) -> None:
    if len(_SELECTIONS) >= _MAX_SELECTIONS:
        _SELECTIONS.clear()
    _SELECTIONS[key] = found


def _unselectable(table: pa.Table, features: list[str], schema: InputSchema | None) -> InputError:
    """Why the feature columns cannot be picked out of ``table``: missing, or given twice."""
    present = table.column_names
    missing = [name for name in features if name not in present]
    if not missing:
        twice = sorted({name for name in features if present.count(name) > 1})
        return InputError(f"feature column {one_of(twice)} is given more than once; give it once")
    expected = {c.name: c.dtype for c in schema.features} if schema else {}
    shown = ", ".join(
        f"'{name}'" + (f" ({expected[name]})" if name in expected else "") for name in missing[:12]
    )
    more = f" (and {len(missing) - 12} more)" if len(missing) > 12 else ""
    plural = "s" if len(missing) > 1 else ""
    return InputError(
        f"missing feature column{plural} {shown}{more}; the model scores rows with its "
        f"{len(features)} features: {one_of(features)}"
    )


@lru_cache(maxsize=64)
def _arrow_schema(features: tuple[str, ...], columns: tuple[FeatureColumn, ...]) -> pa.Schema:
    """The Arrow schema of the feature columns, in the model's order (parsed once)."""
    dtypes = {column.name: column.dtype for column in columns}
    return pa.schema([(name, arrow_type(dtypes[name])) for name in features])


def _conform(column: pa.ChunkedArray, expected: pa.DataType, name: str) -> pa.ChunkedArray:
    """The column as the feature's type: equal types pass, compatible ones are cast."""
    got = column.type
    if got == expected:
        return column
    if not (pa.types.is_null(got) or _compatible(got, expected)):
        shown = "string" if _is_text(got) else got  # large_string, categories: text to a user
        raise InputError(f"feature '{name}': expected {expected}, got {shown}")
    try:
        return pc.cast(column, expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            f"feature '{name}': expected {expected}, got {got} with values that do not "
            f"fit {expected} (e.g. fractions or out-of-range numbers)"
        ) from None


def _compatible(got: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type ``got`` may stand for a feature of type ``expected``: numbers
    for numbers, text for text, times for times (a cast then checks the values)."""
    kinds = (
        _is_number,
        _is_text,
        pa.types.is_boolean,
        pa.types.is_timestamp,
        pa.types.is_date,
        pa.types.is_time,
        pa.types.is_duration,
    )
    return any(kind(expected) and kind(got) for kind in kinds)


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):  # pandas categoricals
        return _is_text(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


@lru_cache(maxsize=512)  # scoring one row at a time parses the same few types again and again
def arrow_type(text: str) -> pa.DataType:
    """The Arrow type that Arrow prints as ``text`` (as the input schema records it)."""
    if found := _TIMESTAMP.match(text):
        return pa.timestamp(found.group(1), tz=found.group(2))
    if found := _DECIMAL.match(text):
        make = pa.decimal128 if found.group(1) == "128" else pa.decimal256
        return make(int(found.group(2)), int(found.group(3)))
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        raise ArtefactError(
            f"the artefact's input schema has a feature type '{text}' that this mlprod cannot "
            "read; upgrade mlprod or retrain the model"
        ) from None
