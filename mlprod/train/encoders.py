"""Turn the training matrix into model inputs, with everything learned from training rows only.

Two encodings, chosen by the model:

* ``native`` (gradient boosting): numbers as they are, categoricals as integer codes of the
  levels seen in training (rare and unknown levels get their own codes), nulls as NaN;
* ``dense`` (linear models, SVMs, neural networks): numbers imputed with the training median,
  with a missing-value indicator, and scaled; categoricals one-hot encoded.

The fitted encoder travels inside the model artefact, so scoring applies the very same levels,
medians and scales.

Two paths give the same matrix, bit for bit. Large tables go column by column through
``pyarrow.compute``, whose calls cost tens of microseconds each whatever the row count. Tables
of at most :data:`SMALL_BATCH_ROWS` rows (a REST request) are read out of Arrow once, as a
:class:`SmallBatch` every encoder of an ensemble shares, and encoded with NumPy and dict
lookups from a plan derived (on first use, never pickled) from the fitted state; a REST
request's feature values, given as mappings, are read the same way without making a table
(:class:`RecordRows`). A dense encoding's values, without their matrix
(``TabularEncoder.dense_columns``), let a linear model score a large table from them
(:mod:`mlprod.train.linear`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.features.categorical import CategoryEncoder
from mlprod.project.config import CategoricalSpec

Encoding = Literal["native", "dense"]

SMALL_BATCH_ROWS = 64
"""Tables of 1 to this many rows take the small-batch path (here, in models and ensembles)."""

# Arrow's safe int-to-double cast refuses integers beyond 2**53; the small path leaves a column
# holding such a magnitude to the Arrow path, so that it fails (or not) exactly as it would there.
_EXACT = 2.0**53
_TENSOR_TYPES = frozenset(
    t.id
    for t in (
        pa.int8(), pa.int16(), pa.int32(), pa.int64(),
        pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
        pa.float32(), pa.float64(),
    )
)  # fmt: skip
_INTEGER_TYPES = frozenset(t for t in _TENSOR_TYPES if t not in (pa.float32().id, pa.float64().id))
_TEXT_TYPES = frozenset((pa.string().id, pa.large_string().id, pa.null().id))
_STRINGS = frozenset((pa.string().id, pa.large_string().id))
_INT64, _FLOAT64 = pa.int64().id, pa.float64().id


def is_small(rows: int) -> bool:
    """Whether a table of ``rows`` rows takes the small-batch path."""
    return 0 < rows <= SMALL_BATCH_ROWS


class SmallBatch:
    """A few rows read out of Arrow once, for every encoder that scores them.

    Numeric columns (integers and floats) come out together with one ``to_tensor`` call, as
    float64 with NaN for nulls: the values Arrow's cast to float64 gives. Text columns come out
    as Python strings; integer columns as the strings Arrow's cast to string gives. Any other
    type (times, booleans, decimals, dictionaries) is left to the Arrow path, column by column.
    """

    def __init__(self, table: pa.Table) -> None:
        self._table: pa.Table | None = table
        self.rows = table.num_rows
        self._layout = _layout_of(table.schema)
        self._arrays: pa.RecordBatch | None = None
        self._tensor: np.ndarray | None = None
        self._in_tensor: dict[str, int] = {}
        self._numbers: dict[tuple[str, ...], np.ndarray] = {}
        self._texts: dict[str, list[str | None] | None] = {}

    @property
    def table(self) -> pa.Table:
        """The rows as an Arrow table (for the columns only Arrow encodes exactly)."""
        assert self._table is not None
        return self._table

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        """A (rows x names) float64 matrix of these numeric columns, NaN for nulls; read-only,
        and read once for every encoder that asks for the same columns."""
        key = tuple(names)
        found = self._numbers.get(key)
        if found is None:
            found = self._numbers[key] = self._read_numbers(key)
            found.flags.writeable = False
        return found

    def texts(self, name: str) -> list[str | None] | None:
        """A column's values as the strings Arrow casts them to, or None to use Arrow (read
        once for every encoder that asks)."""
        if name not in self._texts:
            self._texts[name] = self._read_texts(name)
        return self._texts[name]

    def _read_numbers(self, names: tuple[str, ...]) -> np.ndarray:
        tensor = self._numeric()
        columns = [self._in_tensor.get(name, -1) for name in names]
        if min(columns) >= 0:  # the common case: all of them are in the tensor
            found: np.ndarray = tensor[:, columns]
            return found
        values: np.ndarray = tensor[:, [max(c, 0) for c in columns]]
        for index, column in enumerate(columns):
            if column < 0:  # not numeric, or beyond exact integers: the Arrow path
                values[:, index] = _numbers(self.table.column(names[index]))
        return values

    def _read_texts(self, name: str) -> list[str | None] | None:
        kind = self._layout.types.get(name)
        if kind in _TEXT_TYPES:
            values: list[str | None] = self._column(name).to_pylist()
            return values
        if kind in _INTEGER_TYPES:
            return [None if v is None else str(v) for v in self._column(name).to_pylist()]
        return None

    def _column(self, name: str) -> pa.Array:
        if self._arrays is None:
            self._arrays = self.table.combine_chunks().to_batches()[0]
        return self._arrays.column(self._layout.positions[name])

    def _numeric(self) -> np.ndarray:
        """Every numeric column (within exact range), read with one ``to_tensor`` call."""
        if self._tensor is None:
            layout = self._layout
            self._tensor = np.zeros((self.rows, 1))  # no numeric column: a placeholder
            if layout.numeric:
                if self._arrays is None:
                    self._arrays = self.table.combine_chunks().to_batches()[0]
                chosen = self._arrays.select([layout.positions[n] for n in layout.numeric])
                try:
                    tensor = chosen.to_tensor(null_to_nan=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    return self._tensor
                self._tensor = np.asarray(tensor, dtype=np.float64)
                exact = ~(np.abs(self._tensor) >= _EXACT).any(axis=0)
                self._in_tensor = {n: i for i, n in enumerate(layout.numeric) if exact[i]}
        return self._tensor


class RecordRows(SmallBatch):
    """A few feature rows given as mappings (a REST request's), read as :class:`SmallBatch`
    reads a table of them, without making the table.

    The rows stand for ``pa.Table.from_pylist(records, schema=schema)``, and every value is
    what that table would give: an ``int`` (within exact range) or ``float`` of a numeric
    column as its float64, ``None`` as NaN; a ``str`` of a text column, an ``int`` of an
    integer column as its text. A column holding anything else (a bool, a huge integer, a
    time) is read from that table, made on first need, so it encodes, or fails, as it would.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], schema: pa.Schema) -> None:
        self._table = None
        self._records = records
        self._schema = schema
        self.rows = len(records)
        self._layout = _layout_of(schema)
        self._arrays = None
        self._tensor = None
        self._in_tensor = {}
        self._numbers = {}
        self._texts = {}

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            self._table = pa.Table.from_pylist(list(self._records), schema=self._schema)
        return self._table

    def _read_texts(self, name: str) -> list[str | None] | None:
        kind = self._layout.types.get(name)
        if kind in _STRINGS or kind == _INT64:
            values = [record.get(name) for record in self._records]
            if kind in _STRINGS and all(v is None or type(v) is str for v in values):
                return values
            if kind == _INT64 and all(v is None or _is_int64(v) for v in values):
                return [None if v is None else str(v) for v in values]
        return super()._read_texts(name)

    def _numeric(self) -> np.ndarray:
        """The numeric columns' values, in one array made from lists (NumPy reads ``None``
        as NaN); a column holding a value Arrow would store or cast otherwise (a bool, an
        integer beyond 2**53, a float for an integer column, any value of a narrower type)
        is left to the Arrow path."""
        if self._tensor is None:
            numeric = self._layout.numeric
            kinds = [self._layout.types[name] for name in numeric]
            matrix = [[record.get(name) for name in numeric] for record in self._records]
            other = {j for j, kind in enumerate(kinds) if kind not in (_INT64, _FLOAT64)}
            for values in matrix:
                for j, value in enumerate(values):
                    given = type(value)
                    if not (
                        value is None
                        or (given is float and kinds[j] == _FLOAT64)
                        or (given is int and -_EXACT < value < _EXACT)
                    ):
                        other.add(j)
            if other:
                for values in matrix:
                    for j in other:
                        values[j] = 0.0  # a placeholder: numbers() reads these from Arrow
            if not numeric:
                matrix = [[0.0]] * self.rows  # no numeric column: a placeholder
            self._tensor = np.array(matrix, dtype=np.float64)
            self._in_tensor = {name: j for j, name in enumerate(numeric) if j not in other}
        return self._tensor


def _is_int64(value: Any) -> bool:
    """An ``int`` (not a bool) that an Arrow int64 column holds as it is."""
    return type(value) is int and -(2**63) <= value < 2**63


@dataclass(frozen=True)
class _Layout:
    """Where a table's columns are and what kind each is (by Arrow type id); no names when
    a name repeats, so that every column goes through ``table.column`` and its error."""

    types: dict[str, int]
    positions: dict[str, int]
    numeric: tuple[str, ...]


_LAYOUTS: tuple[tuple[pa.Schema, _Layout], ...] = ()  # the few table schemas seen last


def _layout_of(schema: pa.Schema) -> _Layout:
    global _LAYOUTS  # replaced whole, never changed in place: safe for concurrent requests
    for seen, layout in _LAYOUTS:
        if schema.equals(seen):
            return layout
    names = schema.names
    types: dict[str, int] = {}
    positions: dict[str, int] = {}
    if len(set(names)) == len(names):
        types = {name: kind.id for name, kind in zip(names, schema.types, strict=True)}
        positions = {name: i for i, name in enumerate(names)}
    numeric = tuple(name for name, kind in types.items() if kind in _TENSOR_TYPES)
    layout = _Layout(types, positions, numeric)
    _LAYOUTS = ((schema, layout), *_LAYOUTS[:7])
    return layout


@dataclass(frozen=True)
class _CategorySlots:
    """Where one categorical feature goes in a small batch's matrix, and its codes."""

    name: str
    start: int  # native: the code's column; dense: the first one-hot column
    width: int
    codes: dict[str, int]  # a value seen in training -> its code (kept level, or rare's)
    unknown: int  # the code of any other value
    known: pa.Array  # the values of ``codes``, as text ...
    lookup: np.ndarray  # ... their codes, and then the unknown code (float64)


@dataclass(frozen=True)
class _SmallPlan:
    """The fitted state laid out for encoding a few rows at once."""

    width: int
    numbers: tuple[str, ...]
    number_columns: np.ndarray  # native: the value's column; dense: the scaled value's
    missing_columns: np.ndarray  # dense: the missing indicator's column
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    categories: tuple[_CategorySlots, ...]


@dataclass(frozen=True)
class DenseLayout:
    """Where a dense encoding puts each part of a row (see :mod:`mlprod.train.linear`)."""

    width: int
    number_columns: np.ndarray  # each number's scaled value
    missing_columns: np.ndarray  # each number's missing indicator
    categories: tuple[tuple[int, int], ...]  # each categorical's first column and width


@dataclass(frozen=True)
class DenseColumns:
    """A dense encoding of rows before it is laid out as a matrix: the matrix's values,
    computed as ``transform`` computes them."""

    scaled: np.ndarray  # (numbers x rows): each number's scaled value
    missing: np.ndarray  # (numbers x rows), bool: each number's missing indicator
    codes: tuple[np.ndarray, ...]  # each categorical's code in its block, NaN for a null


@dataclass
class TabularEncoder:
    """Fitted on training rows; ``transform`` gives a float64 matrix."""

    features: list[str]
    categorical: dict[str, CategoricalSpec]
    encoding: Encoding
    levels_: dict[str, CategoryEncoder] = field(default_factory=dict)
    medians_: dict[str, float] = field(default_factory=dict)
    means_: dict[str, float] = field(default_factory=dict)
    scales_: dict[str, float] = field(default_factory=dict)
    columns_: list[str] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        """The fitted state only: the small-batch plan is derived again after loading."""
        state = self.__dict__.copy()
        state.pop("_small_plan", None)
        return state

    def fit(self, table: pa.Table) -> TabularEncoder:
        self.__dict__.pop("_small_plan", None)
        for name in self.features:
            column = table.column(name)
            if name in self.categorical or pa.types.is_string(column.type):
                spec = self.categorical.get(name, CategoricalSpec())
                self.levels_[name] = CategoryEncoder.fit(column, spec)
                continue
            if self.encoding == "native":  # trees take numbers as they are
                continue
            values = _numbers(column)
            finite = values[~np.isnan(values)]
            self.medians_[name] = float(np.median(finite)) if finite.size else 0.0
            filled = np.where(np.isnan(values), self.medians_[name], values)
            self.means_[name] = float(filled.mean()) if filled.size else 0.0
            std = float(filled.std()) if filled.size else 0.0
            self.scales_[name] = std if std > 0 else 1.0
        self.columns_ = self._output_columns()
        return self

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of categorical codes in a native matrix (for LightGBM)."""
        return [i for i, name in enumerate(self.features) if name in self.levels_]

    def transform(self, table: pa.Table) -> np.ndarray:
        if is_small(table.num_rows):
            return self.transform_batch(SmallBatch(table))
        return self.transform_large(table)

    def transform_large(self, table: pa.Table) -> np.ndarray:
        """Column by column through Arrow, each written in place into one preallocated matrix.

        Filled column-major (each column one contiguous write; a one-hot block set by row and
        code, not compared level by level), returned row-major: the layout the small path
        gives, so that linear models' dot products, and hence scores, agree bit for bit.
        """
        plan = self._plan()
        x = np.zeros((table.num_rows, plan.width), order="F")
        native = self.encoding == "native"
        for index, name in enumerate(plan.numbers):
            values = _numbers(table.column(name))
            if native:
                x[:, plan.number_columns[index]] = values
                continue
            missing = np.isnan(values)
            filled = np.where(missing, plan.medians[index], values)
            x[:, plan.number_columns[index]] = (filled - plan.means[index]) / plan.scales[index]
            x[:, plan.missing_columns[index]] = missing
        for slots in plan.categories:
            _place(x, slots.start, _codes(slots, table.column(slots.name)), native)
        return np.ascontiguousarray(x)

    def dense_layout(self) -> DenseLayout:
        """Where ``transform`` puts each part of a row (dense encoding only)."""
        if self.encoding != "dense":
            raise ValueError("a native encoding has no one-hot layout")
        plan = self._plan()
        categories = tuple((slots.start, slots.width) for slots in plan.categories)
        return DenseLayout(plan.width, plan.number_columns, plan.missing_columns, categories)

    def dense_columns(self, table: pa.Table) -> DenseColumns:
        """The values ``transform`` lays out (dense encoding only), without the matrix."""
        if self.encoding != "dense":
            raise ValueError("a native encoding has no one-hot layout")
        plan = self._plan()
        rows = table.num_rows
        scaled = np.empty((len(plan.numbers), rows))
        missing = np.empty((len(plan.numbers), rows), dtype=bool)
        for index, name in enumerate(plan.numbers):
            values = _numbers(table.column(name))
            np.isnan(values, out=missing[index])
            filled = np.where(missing[index], plan.medians[index], values)
            scaled[index] = (filled - plan.means[index]) / plan.scales[index]
        codes = tuple(_codes(slots, table.column(slots.name)) for slots in plan.categories)
        return DenseColumns(scaled, missing, codes)

    def transform_batch(self, batch: SmallBatch) -> np.ndarray:
        """The same matrix as ``transform`` gives, for a few rows read once (see SmallBatch)."""
        plan = self._plan()
        x = np.zeros((batch.rows, plan.width))
        if plan.numbers:
            values = batch.numbers(plan.numbers)
            if self.encoding == "native":
                x[:, plan.number_columns] = values
            else:
                missing = np.isnan(values)
                filled = np.where(missing, plan.medians, values)
                x[:, plan.number_columns] = (filled - plan.means) / plan.scales
                x[:, plan.missing_columns] = missing
        native = self.encoding == "native"
        for slots in plan.categories:
            texts = batch.texts(slots.name)
            if texts is None:  # a type only Arrow casts exactly: its own path
                _place(x, slots.start, _codes(slots, batch.table.column(slots.name)), native)
                continue
            for row, text in enumerate(texts):
                if text is None:
                    if native:
                        x[row, slots.start] = np.nan
                    continue
                code = slots.codes.get(text, slots.unknown)
                if native:
                    x[row, slots.start] = code
                else:
                    x[row, slots.start + code] = 1.0
        return x

    def _plan(self) -> _SmallPlan:
        plan: _SmallPlan | None = self.__dict__.get("_small_plan")
        if plan is None:
            plan = self._make_plan()
            self.__dict__["_small_plan"] = plan
        return plan

    def _make_plan(self) -> _SmallPlan:
        dense = self.encoding == "dense"
        numbers: list[str] = []
        number_columns: list[int] = []
        missing_columns: list[int] = []
        categories: list[_CategorySlots] = []
        column = 0
        for name in self.features:
            if name in self.levels_:
                vocabulary = self._vocabulary(name)
                first: dict[str, int] = {}
                for code, level in enumerate(vocabulary):
                    first.setdefault(level, code)  # index_in takes the first match
                levels = self.levels_[name].levels_by_value()
                codes = {value: first[level] for value, level in levels.items()}
                unknown = first[self.levels_[name].spec.unknown]
                width = len(vocabulary) if dense else 1
                known = pa.array(list(codes), pa.string())
                lookup = np.array([*codes.values(), unknown], dtype=np.float64)
                slots = _CategorySlots(name, column, width, codes, unknown, known, lookup)
                categories.append(slots)
                column += width
                continue
            numbers.append(name)
            number_columns.append(column)
            missing_columns.append(column + 1)
            column += 2 if dense else 1

        def stats(values: dict[str, float]) -> np.ndarray:
            return np.array([values[n] for n in numbers] if dense else [], dtype=np.float64)

        return _SmallPlan(
            width=column,
            numbers=tuple(numbers),
            number_columns=np.array(number_columns, dtype=np.intp),
            missing_columns=np.array(missing_columns if dense else [], dtype=np.intp),
            medians=stats(self.medians_),
            means=stats(self.means_),
            scales=stats(self.scales_),
            categories=tuple(categories),
        )

    def _vocabulary(self, name: str) -> list[str]:
        encoder = self.levels_[name]
        return [*encoder.levels_, encoder.spec.rare, encoder.spec.unknown]

    def _output_columns(self) -> list[str]:
        columns: list[str] = []
        for name in self.features:
            if name in self.levels_ and self.encoding == "dense":
                columns += [f"{name}={level}" for level in self._vocabulary(name)]
            elif self.encoding == "dense":
                columns += [name, f"{name}__missing"]
            else:
                columns.append(name)
        return columns


def _codes(slots: _CategorySlots, column: pa.ChunkedArray) -> np.ndarray:
    """Each value's code, as float64 (NaN for a null): the code of its level in the
    vocabulary, where ``CategoryEncoder.transform`` maps it (a value never seen in training:
    the unknown level's), looked up in one pass over the values as text."""
    strings = pc.cast(column, pa.string())
    found = pc.index_in(strings, value_set=slots.known)  # null: unseen, or a null
    index = pc.fill_null(found, len(slots.known)).to_numpy(zero_copy_only=False)
    codes: np.ndarray = slots.lookup[index]
    if strings.null_count:
        codes[pc.is_null(strings).to_numpy(zero_copy_only=False)] = np.nan
    return codes


def _place(x: np.ndarray, start: int, codes: np.ndarray, native: bool) -> None:
    """Write a categorical's codes at column ``start``: the code itself (native), or a one in
    the code's column of its one-hot block (dense; a null sets none)."""
    if native:
        x[:, start] = codes
        return
    rows = np.flatnonzero(~np.isnan(codes))
    x[rows, start + codes[rows].astype(np.intp)] = 1.0


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric, boolean or time column as float64 with NaN for nulls."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
    as_float = pc.cast(column, pa.float64())
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
