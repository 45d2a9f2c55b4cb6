"""Split the training matrix into training, validation and a sealed test window.

Out of time (the default and the honest one), with ``train_end``, ``valid_end`` and a ``gap``::

    train_start <= t < train_end                      training, if its label is known before
                                                      train_end + gap (validation starts)
    train_end <= t < train_end + gap                  left out
    train_end + gap <= t < valid_end                  validation, if its label is known before
                                                      valid_end + gap (the test starts)
    valid_end <= t < valid_end + gap                  left out
    valid_end + gap <= t < test_end (or no end)       test, sealed

``t`` is the prediction time. A random split (stratified by the label if asked, seeded) is
there for data whose rows do not depend on time.

The test rows come back sealed: nothing downstream can look at them (or their labels) until
the final evaluation opens them, and they can be opened once only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import TrainError, one_of
from mlprod.project.training import OutOfTimeSplit, RandomSplit

Mask = npt.NDArray[np.bool_]


class SealedTest:
    """The test rows, closed until the final evaluation opens them, once.

    Their count and window can be read while sealed; the rows themselves only through
    ``open(reason)``, which hands them over a single time and remembers why.
    """

    __slots__ = ("__table", "_opened_for", "_rows", "_window")

    def __init__(self, table: pa.Table, window: str) -> None:
        self.__table: pa.Table | None = table
        self._rows: int = table.num_rows
        self._window = window
        self._opened_for: str | None = None

    @property
    def rows(self) -> int:
        """How many test rows there are."""
        return self._rows

    @property
    def window(self) -> str:
        """Which rows are the test rows, e.g. ``2013-11-08 onwards``."""
        return self._window

    @property
    def is_open(self) -> bool:
        return self._opened_for is not None

    @property
    def opened_for(self) -> str | None:
        """The reason given when the test rows were opened, or None while sealed."""
        return self._opened_for

    def open(self, reason: str) -> pa.Table:
        """Hand over the test rows for the final evaluation; a second call raises TrainError."""
        if self._opened_for is not None:
            raise TrainError(
                f"the test window was already opened for '{self._opened_for}'; "
                "it is used exactly once, for the final evaluation"
            )
        if not reason.strip():
            raise ValueError("say why the test window is opened, e.g. 'final evaluation'")
        table, self.__table = self.__table, None
        assert table is not None
        self._opened_for = reason
        return table

    def __repr__(self) -> str:
        state = f"opened for {self._opened_for!r}" if self.is_open else "sealed"
        return f"SealedTest(rows={self._rows}, window={self._window!r}, {state})"


@dataclass(frozen=True)
class SplitData:
    """Training and validation rows, the sealed test rows, and what the split did."""

    train: pa.Table
    valid: pa.Table
    test: SealedTest
    summary: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"SplitData(train={self.train.num_rows} rows, valid={self.valid.num_rows} rows, "
            f"test={self.test!r})"
        )


def split_matrix(
    table: pa.Table,
    split: OutOfTimeSplit | RandomSplit,
    label: str = "label",
    time: str = "prediction_time",
    label_time: str = "label_available_at",
) -> SplitData:
    """Split the training matrix as ``split`` says; raises TrainError for an unusable split."""
    y = _labels(table, label)
    if table.num_rows == 0:
        raise TrainError("the training matrix has no rows; there is nothing to split")
    if isinstance(split, RandomSplit):
        return _random(table, y, split)
    return _out_of_time(table, y, split, _times(table, time), _times(table, label_time))


# --- out of time ---------------------------------------------------------------------------


def _out_of_time(
    table: pa.Table, y: Mask, split: OutOfTimeSplit, t: npt.NDArray[Any], known: npt.NDArray[Any]
) -> SplitData:
    if np.isnat(t).any():
        raise TrainError(
            f"{int(np.isnat(t).sum()):,} events have no prediction time; every event needs one "
            "to fall in a window (check the spine's time)"
        )
    start = _utc(split.train_start) if split.train_start else None
    train_end, valid_end = _utc(split.train_end), _utc(split.valid_end)
    test_end = _utc(split.test_end) if split.test_end else None
    valid_start, test_start = train_end + split.gap, valid_end + split.gap

    def between(low: datetime | None, high: datetime | None) -> Mask:
        inside = np.ones(len(t), dtype=bool)
        if low is not None:
            inside &= t >= _np(low)
        if high is not None:
            inside &= t < _np(high)
        return inside

    train_window = between(start, train_end)
    valid_window = between(valid_start, valid_end)
    test_window = between(test_start, test_end)
    train = train_window & (known < _np(valid_start))
    valid = valid_window & (known < _np(test_start))

    data_range = f"the data's prediction times run from {_when(t.min())} to {_when(t.max())}"
    windows = [
        ("training", start, train_end, train_window, train, "validation", valid_start),
        ("validation", valid_start, valid_end, valid_window, valid, "test", test_start),
    ]
    for name, low, high, window, kept, following, next_start in windows:
        if not window.any():
            raise TrainError(
                f"the {name} window {_span(low, high)} has no events; {data_range}. "
                "Move the split's dates into that range."
            )
        if not kept.any():
            raise TrainError(
                f"the {name} window {_span(low, high)} has {int(window.sum()):,} events, but "
                f"none of their labels is known before the {following} window starts "
                f"({_when(next_start)}); widen the gap or end the {name} window earlier"
            )
    if not test_window.any():
        raise TrainError(
            f"the test window {_span(test_start, test_end)} has no events; {data_range}. "
            "End the validation window earlier (valid_end) or build the matrix with newer data."
        )
    _check_classes(y[train], f"the training window {_span(start, train_end)}")
    _check_classes(y[valid], f"the validation window {_span(valid_start, valid_end)}")

    summary: dict[str, Any] = {
        "method": "out_of_time",
        "train": _stats(y, train, start, train_end)
        | {
            "left_out": {
                "before_start": int((t < _np(start)).sum()) if start else 0,
                "label_unknown": int((train_window & ~train).sum()),
            }
        },
        "valid": _stats(y, valid, valid_start, valid_end)
        | {
            "left_out": {
                "gap_before": int(between(train_end, valid_start).sum()),
                "label_unknown": int((valid_window & ~valid).sum()),
            }
        },
        "test": {
            "start": test_start.isoformat(),
            "end": test_end.isoformat() if test_end else None,
            "rows": int(test_window.sum()),
            "left_out": {
                "gap_before": int(between(valid_end, test_start).sum()),
                "after_end": int((t >= _np(test_end)).sum()) if test_end else 0,
            },
        },
    }
    return SplitData(
        train=table.filter(pa.array(train)),
        valid=table.filter(pa.array(valid)),
        test=SealedTest(table.filter(pa.array(test_window)), _span(test_start, test_end)),
        summary=summary,
    )


def _stats(y: Mask, rows: Mask, start: datetime | None, end: datetime) -> dict[str, Any]:
    n, positives = int(rows.sum()), int(y[rows].sum())
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        "rows": n,
        "positives": positives,
        "positive_rate": positives / n,
    }


# --- random --------------------------------------------------------------------------------


def _random(table: pa.Table, y: Mask, split: RandomSplit) -> SplitData:
    if split.valid_fraction + split.test_fraction >= 1:
        raise TrainError(
            f"the random split's valid_fraction ({split.valid_fraction:g}) and test_fraction "
            f"({split.test_fraction:g}) leave no rows to train on; make them sum to less than 1"
        )
    rng = np.random.default_rng(split.seed)
    groups = [np.flatnonzero(y), np.flatnonzero(~y)] if split.stratify else [np.arange(len(y))]
    parts: dict[str, list[npt.NDArray[np.intp]]] = {"train": [], "valid": [], "test": []}
    for group in groups:
        shuffled = rng.permutation(group)
        n_test = round(len(group) * split.test_fraction)
        n_valid = round(len(group) * split.valid_fraction)
        parts["test"].append(shuffled[:n_test])
        parts["valid"].append(shuffled[n_test : n_test + n_valid])
        parts["train"].append(shuffled[n_test + n_valid :])
    rows = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    how = f"random split (seed {split.seed}{', stratified by label' if split.stratify else ''})"
    fractions = {
        "train": 1 - split.valid_fraction - split.test_fraction,
        "valid": split.valid_fraction,
        "test": split.test_fraction,
    }
    names = {"train": "training", "valid": "validation", "test": "test"}
    for name, taken in rows.items():
        if len(taken) == 0:
            raise TrainError(
                f"the {how} leaves no {names[name]} rows: {fractions[name]:.0%} of "
                f"{table.num_rows:,} rows rounds to 0; use more data or a larger fraction"
            )
    _check_classes(y[rows["train"]], f"the training part of the {how}")
    _check_classes(y[rows["valid"]], f"the validation part of the {how}")

    summary: dict[str, Any] = {"method": "random", "seed": split.seed, "stratify": split.stratify}
    for name in ("train", "valid"):
        n, positives = len(rows[name]), int(y[rows[name]].sum())
        summary[name] = {
            "fraction": fractions[name],
            "rows": n,
            "positives": positives,
            "positive_rate": positives / n,
        }
    summary["test"] = {"fraction": fractions["test"], "rows": len(rows["test"])}
    test_window = f"{fractions['test']:.0%} of the rows, {how}"
    return SplitData(
        train=table.take(pa.array(rows["train"])),
        valid=table.take(pa.array(rows["valid"])),
        test=SealedTest(table.take(pa.array(rows["test"])), test_window),
        summary=summary,
    )


# --- columns and checks --------------------------------------------------------------------


def _labels(table: pa.Table, label: str) -> Mask:
    """The label as booleans; it must be boolean, or numbers that are all 0 or 1."""
    if label not in table.column_names:
        raise TrainError(
            f"the training matrix has no label column '{label}'; "
            f"its columns are {one_of(table.column_names)}"
        )
    column = table.column(label)
    if column.null_count:
        raise TrainError(
            f"the label column '{label}' has {column.null_count:,} missing values; every "
            "training event needs a known outcome (leave the others out with the spine's filter)"
        )
    kind = column.type
    if pa.types.is_boolean(kind):
        return np.asarray(column.to_numpy(), dtype=bool)
    values = pc.unique(column)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if numeric and set(values.to_pylist()) <= {0, 1}:
        ones: Mask = np.asarray(column.to_numpy()) == 1
        return ones
    shown = sorted(values.to_pylist(), key=str)
    text = ", ".join(repr(v) for v in shown[:5]) + (
        f" (and {len(shown) - 5} more)" if len(shown) > 5 else ""
    )
    raise TrainError(
        f"the label column '{label}' must be boolean or 0/1, but it is {kind} with values "
        f"{text}; write the spine's label as a condition that is true for the outcome to "
        "predict (e.g. dep_delay >= 15)"
    )


def _times(table: pa.Table, name: str) -> npt.NDArray[Any]:
    """A time column as numpy datetime64 in naive UTC (nulls become NaT)."""
    if name not in table.column_names:
        raise TrainError(
            f"the training matrix has no time column '{name}'; "
            f"its columns are {one_of(table.column_names)}"
        )
    column = table.column(name)
    if not (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)):
        raise TrainError(
            f"the column '{name}' must be a timestamp to split by time, but it is {column.type}"
        )
    return np.asarray(pc.cast(column, pa.timestamp("us")).to_numpy())


def _check_classes(y: Mask, where: str) -> None:
    if y.all() or not y.any():
        which = "positive" if y.all() else "negative"
        raise TrainError(
            f"{where} has only {which} labels ({len(y):,} rows); a classifier needs both. "
            "Widen the window or check the spine's label."
        )


def _utc(value: datetime) -> datetime:
    """Naive UTC, as the matrix's times are."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _np(value: datetime) -> np.datetime64:
    return np.datetime64(value, "us")


def _when(value: datetime | np.datetime64) -> str:
    """A time as short as it can be: ``2013-09-01`` at midnight, else with minutes."""
    if isinstance(value, np.datetime64):
        value = datetime.fromisoformat(str(value.astype("datetime64[us]")))
    if value.time() == datetime.min.time():
        return f"{value:%Y-%m-%d}"
    return f"{value:%Y-%m-%d %H:%M}" if value.second == 0 else f"{value:%Y-%m-%d %H:%M:%S}"


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None and end is None:
        return "(all times)"
    if start is None:
        assert end is not None
        return f"before {_when(end)}"
    if end is None:
        return f"{_when(start)} onwards"
    return f"{_when(start)} – {_when(end)}"  # noqa: RUF001 (an en dash between dates)
