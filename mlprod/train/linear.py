"""A linear model's scores from a dense encoding's values, without the one-hot matrix.

A logistic regression scores a row as the sum of the row's products with its coefficients
(:func:`mlprod.train.models.positive_probability`), over a dense matrix most of whose entries
are the zeros of one-hot blocks: writing that matrix is most of the cost of scoring a large
batch. The products that can be other than zero are few: each number's scaled value and
missing indicator times their coefficients, and each categorical's one coefficient, its
level's. Adding a zero leaves a sum as it is (but for the sign of a zero sum, which adding the
intercept erases), so these products, added in the order and grouping in which NumPy adds the
whole row, give the row's sum bit for bit.

NumPy sums a contiguous row pairwise (``pairwise_sum`` in its loops): fewer than 8 values one
after another; up to 128 values in 8 lanes (lane j adds values j, j + 8, ...) combined as
``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``, then the rest one after another; more
than 128 as two parts (the first a multiple of 8 long) summed apart and added.
:class:`RowSums` replays that grouping as chains of terms: a number's product, or a
categorical's coefficient where the row's level lies in the chain (a row has one level, so a
categorical's columns in one chain make one term). Each one is checked, when made, against
NumPy's own sum of random rows, and not used if they differ (another NumPy's summation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from mlprod.train.encoders import DenseColumns, DenseLayout

_LANES = 8  # NumPy's pairwise_sum: its unrolled lanes ...
_BLOCK = 128  # ... and PW_BLOCKSIZE, the longest run summed in lanes
_VALUE, _MISSING, _LEVEL = 0, 1, 2  # what a column holds: a number's value or indicator, a level
_CHECK_ROWS = 256


@dataclass(frozen=True)
class _Term:
    """One addend of a chain: a number's product, or a categorical's coefficient where the
    row's level lies in chain ``chain``."""

    kind: int
    index: int  # the number's or the categorical's position in the layout
    chain: int


@dataclass(frozen=True)
class _Chain:
    """Terms added one after another, starting from the first."""

    terms: tuple[_Term, ...]


@dataclass(frozen=True)
class _Lanes:
    """A run of at most 128 columns: 8 lane chains, combined, then the rest (if any)."""

    lanes: tuple[_Chain, ...]
    rest: _Chain | None


@dataclass(frozen=True)
class _Halves:
    first: _Node
    second: _Node


_Node = _Chain | _Lanes | _Halves


class _Parts:
    """One batch's addends: the numbers' products and each categorical's row coefficients."""

    def __init__(
        self, columns: DenseColumns, layout: DenseLayout, coef: np.ndarray, chains: np.ndarray
    ) -> None:
        self.values: np.ndarray = columns.scaled * coef[layout.number_columns][:, None]
        self.missing: np.ndarray = columns.missing * coef[layout.missing_columns][:, None]
        self.chains: list[np.ndarray] = []  # per categorical: each row's chain (-1: null)
        self.levels: list[np.ndarray] = []  # per categorical: each row's coefficient
        for (start, _), codes in zip(layout.categories, columns.codes, strict=True):
            null = np.isnan(codes)
            column = np.where(null, 0.0, codes).astype(np.intp) + start
            self.chains.append(np.where(null, -1, chains[column]))
            self.levels.append(coef[column])

    def term(self, term: _Term) -> np.ndarray:
        found: np.ndarray
        if term.kind == _VALUE:
            found = self.values[term.index]
        elif term.kind == _MISSING:
            found = self.missing[term.index]
        else:
            found = np.where(self.chains[term.index] == term.chain, self.levels[term.index], 0.0)
        return found

    def sum(self, node: _Node) -> np.ndarray:
        if isinstance(node, _Halves):
            total: np.ndarray = self.sum(node.first) + self.sum(node.second)
            return total
        if isinstance(node, _Chain):
            return self.chain(node)
        lanes = [self.chain(lane) for lane in node.lanes]
        combined: np.ndarray = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
            (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
        )
        if node.rest is not None:
            for term in node.rest.terms:
                combined += self.term(term)
        return combined

    def chain(self, chain: _Chain) -> np.ndarray:
        first, *others = chain.terms
        total = self.term(first)
        for index, term in enumerate(others):
            if index == 0:
                total = total + self.term(term)  # a new array, added to in place after
            else:
                total += self.term(term)
        return total


class RowSums:
    """``(x * coef).sum(axis=1)`` of a dense encoding ``x`` of rows, from its values."""

    def __init__(self, layout: DenseLayout, coef: np.ndarray, intercept: float) -> None:
        self.layout = layout
        self.coef = coef
        self.intercept = intercept
        owners: list[tuple[int, int]] = [(-1, -1)] * layout.width
        for index, column in enumerate(layout.number_columns):
            owners[int(column)] = (_VALUE, index)
        for index, column in enumerate(layout.missing_columns):
            owners[int(column)] = (_MISSING, index)
        for index, (start, width) in enumerate(layout.categories):
            owners[start : start + width] = [(_LEVEL, index)] * width
        if any(kind < 0 for kind, _ in owners):
            raise ValueError("a column of the layout holds nothing")
        self._owners = owners
        self._chains = np.full(layout.width, -1, dtype=np.intp)  # each column's chain
        self._count = 0
        self.tree = self._node(0, layout.width)

    def _node(self, start: int, n: int) -> _Node:
        if n < _LANES:
            return self._chain(range(start, start + n))
        if n <= _BLOCK:
            whole = n - n % _LANES
            lanes = tuple(self._chain(range(start + j, start + whole, _LANES)) for j in range(8))
            rest = self._chain(range(start + whole, start + n)) if whole < n else None
            return _Lanes(lanes, rest)
        half = n // 2
        half -= half % _LANES
        return _Halves(self._node(start, half), self._node(start + half, n - half))

    def _chain(self, columns: range) -> _Chain:
        chain, self._count = self._count, self._count + 1
        terms: list[_Term] = []
        for column in columns:
            kind, index = self._owners[column]
            self._chains[column] = chain
            if kind == _LEVEL and terms and terms[-1] == _Term(_LEVEL, index, chain):
                continue  # the same categorical's next column: one term
            terms.append(_Term(kind, index, chain))
        return _Chain(tuple(terms))

    def decisions(self, columns: DenseColumns) -> np.ndarray:
        """Each row's sum of products plus the intercept."""
        parts = _Parts(columns, self.layout, self.coef, self._chains)
        decision: np.ndarray = self.sum_of(parts) + self.intercept
        return decision

    def sum_of(self, parts: _Parts) -> np.ndarray:
        return parts.sum(self.tree)

    def probabilities(self, columns: DenseColumns) -> np.ndarray | None:
        """``expit`` of the decisions, as ``positive_probability`` gives them; None where it
        would hand the rows to scikit-learn (a value that is not finite)."""
        if not np.isfinite(columns.scaled).all():
            return None
        found: np.ndarray = expit(self.decisions(columns))
        return found

    def agrees_with_numpy(self, seed: int = 0) -> bool:
        """Whether these sums equal NumPy's sum of the matrix, on random rows."""
        layout = self.layout
        rng = np.random.default_rng(seed)
        numbers = len(layout.number_columns)
        scale = rng.choice([1e-6, 1.0, 1e6], size=(numbers, 1))
        scaled = rng.normal(size=(numbers, _CHECK_ROWS)) * scale
        missing = rng.random((numbers, _CHECK_ROWS)) < 0.3
        codes: list[np.ndarray] = []
        x = np.zeros((_CHECK_ROWS, layout.width))
        x[:, layout.number_columns] = scaled.T
        x[:, layout.missing_columns] = missing.T
        for start, width in layout.categories:
            code = rng.integers(0, width, _CHECK_ROWS).astype(np.float64)
            code[rng.random(_CHECK_ROWS) < 0.1] = np.nan
            present = np.flatnonzero(~np.isnan(code))
            x[present, start + code[present].astype(np.intp)] = 1.0
            codes.append(code)
        expected = (x * self.coef).sum(axis=1) + self.intercept
        got = self.decisions(DenseColumns(scaled, missing, tuple(codes)))
        return bool(np.array_equal(got, expected))


def row_sums(layout: DenseLayout, coef: np.ndarray, intercept: float) -> RowSums | None:
    """The row sums of a linear model over ``layout``, or None where they would not equal
    NumPy's (the model then scores its dense matrix)."""
    if coef.shape != (layout.width,):
        return None
    try:
        sums = RowSums(layout, coef, intercept)
    except ValueError:
        return None
    return sums if sums.agrees_with_numpy() else None
