"""Aggregates the online store summarizes itself, so a long window's rows stay in the store.

A count, count_distinct, sum, mean, std, min or max needs only a few numbers of its window:
the number of rows, of values and of distinct values, the smallest and largest value, and the
sum and sum of squares. A store
that can compute them exactly (:class:`~mlprod.data.online_store.SummarizingStore`) is sent one
``Summarize`` per distinct window (features of one key and window share it), and the values are
derived here:

* count, count_distinct, min and max are the store's own, exactly what the rows give;
* sum and mean come from the exact integer sum ``S`` (the store summarizes a sum only when every
  value is an integer below 2**53): ``float(S)`` is the correctly rounded sum, as ``math.fsum``
  of the rows is, so both are the same float;
* std is the exact sample variance ``(n·Q - S²) / (n·(n-1))`` (``Q`` the sum of squares),
  rounded once, then its square root: within an ulp or two of the two-pass formula on rows,
  far inside the parity tolerance (1e-9).

An empty window gives what it gives on rows: count 0, sum 0.0, the rest NULL.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

from mlprod.data.online_store import OnlineRows, Read, Summarize, Summary
from mlprod.features.online_plan import OnlineFeature
from mlprod.project.config import AggregateFeature

SUMMARIZED = frozenset(("count", "count_distinct", "sum", "mean", "std", "min", "max"))
_KINDS = {"count": "counts", "min": "orders", "max": "orders", "count_distinct": "distincts"}
_Window = tuple[
    int, str, tuple[Any, ...], int | None, int
]  # (request row, table, key, since, until)


class Summaries:
    """The summaries one level of a request asks for: one per request row, key and window."""

    def __init__(self) -> None:
        self._wants: dict[_Window, tuple[Read, dict[str, set[int]]]] = {}
        self._features: list[tuple[int, str, _Window]] = []

    def __bool__(self) -> bool:
        return bool(self._wants)

    def add(self, row: int, read: Read, online: OnlineFeature) -> None:
        """Ask for what aggregate ``online`` needs over ``read`` (a range) for request ``row``."""
        feature = online.node.feature
        assert isinstance(feature, AggregateFeature)
        window = (row, read.table, read.key, read.since, read.until)
        _, needs = self._wants.setdefault(
            window, (read, {"counts": set(), "orders": set(), "totals": set(), "distincts": set()})
        )
        if online.value >= 0:
            needs[_KINDS.get(feature.function, "totals")].add(online.value)
        self._features.append((row, online.node.name, window))

    def requests(self) -> list[Summarize]:
        """One ``Summarize`` per window, in the order ``results`` expects the answers."""
        return [
            Summarize(
                read,
                tuple(sorted(needs["counts"])),
                tuple(sorted(needs["orders"])),
                tuple(sorted(needs["totals"])),
                tuple(sorted(needs["distincts"])),
            )
            for read, needs in self._wants.values()
        ]

    def results(
        self, answers: Sequence[Summary | OnlineRows]
    ) -> Iterator[tuple[tuple[int, str], Summary | OnlineRows]]:
        """``((request row, feature), its window's answer)`` for every feature added."""
        by_window = dict(zip(self._wants, answers, strict=True))
        for row, name, window in self._features:
            yield (row, name), by_window[window]


def summarized_value(online: OnlineFeature, summary: Summary) -> Any:
    """An aggregate's value from its window's summary (the same as from its rows)."""
    feature = online.node.feature
    assert isinstance(feature, AggregateFeature)
    function = feature.function
    if online.value < 0:
        return summary.rows  # a count of rows
    column = summary.columns[online.value]
    if function == "count":
        return column.count
    if function == "count_distinct":
        return column.distinct
    if function == "min":
        return column.minimum
    if function == "max":
        return column.maximum
    n, total, squares = column.count, column.total, column.squares
    assert total is not None and squares is not None
    if function == "sum":
        return float(total)
    if n == 0:
        return None
    if function == "mean":
        return float(total) / n
    if n < 2:
        return None  # a sample standard deviation needs two values
    return math.sqrt(Fraction(n * squares - total * total, n * (n - 1)))
