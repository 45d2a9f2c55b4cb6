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
lookups from a plan derived (on first use, never pickled) from the fitted state.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        self.table = table
        self.rows = table.num_rows
        self._layout = _layout_of(table.schema)
        self._arrays: pa.RecordBatch | None = None
        self._tensor: np.ndarray | None = None
        self._in_tensor: dict[str, int] = {}

    def numbers(self, names: Sequence[str]) -> np.ndarray:
        """A (rows x names) float64 matrix of these numeric columns, NaN for nulls."""
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

    def texts(self, name: str) -> list[str | None] | None:
        """A column's values as the strings Arrow casts them to, or None to use Arrow."""
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
            _place(x, slots.start, self._codes(slots.name, table.column(slots.name)), native)
        return np.ascontiguousarray(x)

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
                _place(
                    x, slots.start, self._codes(slots.name, batch.table.column(slots.name)), native
                )
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
                categories.append(_CategorySlots(name, column, width, codes, unknown))
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

    def _codes(self, name: str, column: pa.ChunkedArray) -> np.ndarray:
        """Each value's code in the vocabulary, as float64 (NaN for a null)."""
        mapped = self.levels_[name].transform(column)
        codes = pc.index_in(mapped, value_set=pa.array(self._vocabulary(name), pa.string()))
        return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.float64)

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
