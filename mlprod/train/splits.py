"""Split the training matrix into training, validation and a sealed test window.

Out of time (the default and the honest one), with ``train_end``, ``valid_end`` and a ``gap``::

    train_start <= t < train_end                      training, if its label is known before
                                                      train_end + gap (validation starts)
    train_end <= t < train_end + gap                  left out
    train_end + gap <= t < valid_end                  validation, if its label is known before
                                                      valid_end + gap (the test starts)
    valid_end <= t < valid_end + gap                  left out
    valid_end + gap <= t < test_end (or no end)       test, sealed

``t`` is the prediction time. Cross-validation forward in time (``time_series_cv``) repeats
the first two lines for several consecutive validation windows, each fold training on all
that comes before its window less the gap. A random split and k-fold cross-validation (both
stratified by the label if asked, seeded) are there for data whose rows do not depend on time.

The test rows come back sealed: nothing downstream can look at them (or their labels) until
the final evaluation opens them, and they can be opened once only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import TrainError, one_of
from mlprod.project.durations import format_duration
from mlprod.project.training import (
    KFoldSplit,
    OutOfTimeSplit,
    RandomSplit,
    Split,
    TimeSeriesCVSplit,
)

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
class Fold:
    """The rows one model trains on and the rows that validate it."""

    train: pa.Table
    valid: pa.Table
    name: str


@dataclass(frozen=True)
class SplitData:
    """Training and validation rows, the sealed test rows, and what the split did.

    A single split has one fold. Cross-validation has several: ``valid`` then holds every
    fold's validation rows one fold after the other, the order in which out-of-fold scores
    line up, and ``train`` every row that some fold trains on.
    """

    train: pa.Table
    valid: pa.Table
    folds: tuple[Fold, ...]
    test: SealedTest
    summary: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"SplitData(train={self.train.num_rows} rows, valid={self.valid.num_rows} rows, "
            f"folds={len(self.folds)}, test={self.test!r})"
        )


def split_matrix(
    table: pa.Table,
    split: Split,
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
    if isinstance(split, KFoldSplit):
        return _kfold(table, y, split)
    t, known = _times(table, time), _times(table, label_time)
    if np.isnat(t).any():
        raise TrainError(
            f"{int(np.isnat(t).sum()):,} events have no prediction time; every event needs one "
            "to fall in a window (check the spine's time)"
        )
    if isinstance(split, TimeSeriesCVSplit):
        return _time_series_cv(table, y, split, t, known)
    return _out_of_time(table, y, split, t, known)


# --- in time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Timeline:
    """Every event's prediction time, the time its label became known, and its label."""

    t: npt.NDArray[Any]
    known: npt.NDArray[Any]
    y: Mask

    def between(self, low: datetime | None, high: datetime | None) -> Mask:
        inside = np.ones(len(self.t), dtype=bool)
        if low is not None:
            inside &= self.t >= _np(low)
        if high is not None:
            inside &= self.t < _np(high)
        return inside

    @property
    def data_range(self) -> str:
        return (
            f"the data's prediction times run from {_when(self.t.min())} to {_when(self.t.max())}"
        )

    def fold(
        self,
        start: datetime | None,
        train_end: datetime,
        valid_start: datetime,
        valid_end: datetime,
        test_start: datetime,
        prefix: str = "",
    ) -> tuple[Mask, Mask, dict[str, Any]]:
        """Training rows before ``train_end`` whose labels are known when validation starts,
        and validation rows whose labels are known when the test starts; raises TrainError
        for a window that cannot be used."""
        train_window = self.between(start, train_end)
        valid_window = self.between(valid_start, valid_end)
        train = train_window & (self.known < _np(valid_start))
        valid = valid_window & (self.known < _np(test_start))
        windows = [
            ("training", start, train_end, train_window, train, "validation", valid_start),
            ("validation", valid_start, valid_end, valid_window, valid, "test", test_start),
        ]
        for name, low, high, window, kept, following, next_start in windows:
            if not window.any():
                raise TrainError(
                    f"{prefix}the {name} window {_span(low, high)} has no events; "
                    f"{self.data_range}. Move the split's dates into that range."
                )
            if not kept.any():
                raise TrainError(
                    f"{prefix}the {name} window {_span(low, high)} has {int(window.sum()):,} "
                    f"events, but none of their labels is known before the {following} window "
                    f"starts ({_when(next_start)}); widen the gap or end the {name} window earlier"
                )
        _check_classes(self.y[train], f"{prefix}the training window {_span(start, train_end)}")
        _check_classes(
            self.y[valid], f"{prefix}the validation window {_span(valid_start, valid_end)}"
        )
        before = int((self.t < _np(start)).sum()) if start else 0
        summary = {
            "train": _stats(self.y, train, start, train_end)
            | {
                "left_out": {
                    "before_start": before,
                    "label_unknown": int((train_window & ~train).sum()),
                }
            },
            "valid": _stats(self.y, valid, valid_start, valid_end)
            | {
                "left_out": {
                    "gap_before": int(self.between(train_end, valid_start).sum()),
                    "label_unknown": int((valid_window & ~valid).sum()),
                }
            },
        }
        return train, valid, summary

    def test(
        self, valid_end: datetime, test_start: datetime, test_end: datetime | None
    ) -> tuple[Mask, dict[str, Any]]:
        """The test window's rows; raises TrainError when it is empty."""
        window = self.between(test_start, test_end)
        if not window.any():
            raise TrainError(
                f"the test window {_span(test_start, test_end)} has no events; "
                f"{self.data_range}. End the validation window earlier (valid_end) or build the "
                "matrix with newer data."
            )
        return window, {
            "start": test_start.isoformat(),
            "end": test_end.isoformat() if test_end else None,
            "rows": int(window.sum()),
            "left_out": {
                "gap_before": int(self.between(valid_end, test_start).sum()),
                "after_end": int((self.t >= _np(test_end)).sum()) if test_end else 0,
            },
        }


def _out_of_time(
    table: pa.Table, y: Mask, split: OutOfTimeSplit, t: npt.NDArray[Any], known: npt.NDArray[Any]
) -> SplitData:
    line = _Timeline(t, known, y)
    start = _utc(split.train_start) if split.train_start else None
    train_end, valid_end = _utc(split.train_end), _utc(split.valid_end)
    test_end = _utc(split.test_end) if split.test_end else None
    valid_start, test_start = train_end + split.gap, valid_end + split.gap
    train, valid, summary = line.fold(start, train_end, valid_start, valid_end, test_start)
    test_window, test_summary = line.test(valid_end, test_start, test_end)
    train_rows, valid_rows = table.filter(pa.array(train)), table.filter(pa.array(valid))
    return SplitData(
        train=train_rows,
        valid=valid_rows,
        folds=(Fold(train_rows, valid_rows, f"validation {_span(valid_start, valid_end)}"),),
        test=SealedTest(table.filter(pa.array(test_window)), _span(test_start, test_end)),
        summary={"method": "out_of_time", **summary, "test": test_summary},
    )


def _time_series_cv(
    table: pa.Table,
    y: Mask,
    split: TimeSeriesCVSplit,
    t: npt.NDArray[Any],
    known: npt.NDArray[Any],
) -> SplitData:
    line = _Timeline(t, known, y)
    valid_end = _utc(split.valid_end)
    test_end = _utc(split.test_end) if split.test_end else None
    test_start = valid_end + split.gap
    first_event = datetime.fromisoformat(str(t.min().astype("datetime64[us]")))
    start = _utc(split.train_start) if split.train_start else first_event
    length = split.valid_length or (valid_end - start) / (split.folds + 1)
    first_valid = valid_end - split.folds * length
    if first_valid - split.gap <= start:
        raise TrainError(
            f"time-series cross-validation with {split.folds} validation windows of "
            f"{_duration(length)} before {_when(valid_end)} leaves the first fold nothing to "
            f"train on (training would end at {_when(first_valid - split.gap)}, before "
            f"{_when(start)}); use fewer folds, a shorter valid_length or gap, or more history"
        )
    folds: list[Fold] = []
    fold_summaries: list[dict[str, Any]] = []
    valid_masks: list[Mask] = []
    trained = np.zeros(len(t), dtype=bool)
    for index in range(split.folds):
        valid_start = first_valid + index * length
        fold_end = valid_end if index == split.folds - 1 else valid_start + length
        prefix = f"fold {index + 1} of {split.folds}: "
        train, valid, fold_summary = line.fold(
            start, valid_start - split.gap, valid_start, fold_end, test_start, prefix
        )
        trained |= train
        valid_masks.append(valid)
        fold_summaries.append(fold_summary)
        folds.append(
            Fold(
                table.filter(pa.array(train)),
                table.filter(pa.array(valid)),
                f"fold {index + 1}: validation {_span(valid_start, fold_end)}",
            )
        )
    test_window, test_summary = line.test(valid_end, test_start, test_end)
    validated = np.concatenate([np.flatnonzero(mask) for mask in valid_masks])
    summary: dict[str, Any] = {
        "method": "time_series_cv",
        "train": _stats(y, trained, start, valid_end - length - split.gap),
        "valid": {
            "start": first_valid.isoformat(),
            "end": valid_end.isoformat(),
            **_stats_of(y, validated),
        },
        "test": test_summary,
        "folds": fold_summaries,
    }
    return SplitData(
        train=table.filter(pa.array(trained)),
        valid=table.take(pa.array(validated)),
        folds=tuple(folds),
        test=SealedTest(table.filter(pa.array(test_window)), _span(test_start, test_end)),
        summary=summary,
    )


def _stats(y: Mask, rows: Mask, start: datetime | None, end: datetime) -> dict[str, Any]:
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        **_stats_of(y, np.flatnonzero(rows)),
    }


def _stats_of(y: Mask, rows: npt.NDArray[np.intp]) -> dict[str, Any]:
    n, positives = len(rows), int(y[rows].sum())
    return {"rows": n, "positives": positives, "positive_rate": positives / n}


# --- random --------------------------------------------------------------------------------


def _random(table: pa.Table, y: Mask, split: RandomSplit) -> SplitData:
    if split.valid_fraction + split.test_fraction >= 1:
        raise TrainError(
            f"the random split's valid_fraction ({split.valid_fraction:g}) and test_fraction "
            f"({split.test_fraction:g}) leave no rows to train on; make them sum to less than 1"
        )
    parts: dict[str, list[npt.NDArray[np.intp]]] = {"train": [], "valid": [], "test": []}
    for shuffled in _shuffled_groups(y, split.stratify, split.seed):
        n_test = round(len(shuffled) * split.test_fraction)
        n_valid = round(len(shuffled) * split.valid_fraction)
        parts["test"].append(shuffled[:n_test])
        parts["valid"].append(shuffled[n_test : n_test + n_valid])
        parts["train"].append(shuffled[n_test + n_valid :])
    rows = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    how = _how("random split", split.seed, split.stratify)
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
        summary[name] = {"fraction": fractions[name], **_stats_of(y, rows[name])}
    summary["test"] = {"fraction": fractions["test"], "rows": len(rows["test"])}
    train, valid = table.take(pa.array(rows["train"])), table.take(pa.array(rows["valid"]))
    return SplitData(
        train=train,
        valid=valid,
        folds=(Fold(train, valid, "validation"),),
        test=SealedTest(
            table.take(pa.array(rows["test"])), f"{fractions['test']:.0%} of the rows, {how}"
        ),
        summary=summary,
    )


def _kfold(table: pa.Table, y: Mask, split: KFoldSplit) -> SplitData:
    """A random test share, then every other row in one of ``folds`` parts (dealt in turn)."""
    how = _how(f"{split.folds}-fold split", split.seed, split.stratify)
    test_parts: list[npt.NDArray[np.intp]] = []
    fold_of = np.full(len(y), -1)
    dealt = 0
    for shuffled in _shuffled_groups(y, split.stratify, split.seed):
        n_test = round(len(shuffled) * split.test_fraction)
        test_parts.append(shuffled[:n_test])
        rest = shuffled[n_test:]
        fold_of[rest] = (dealt + np.arange(len(rest))) % split.folds
        dealt += len(rest)
    test_rows = np.sort(np.concatenate(test_parts))
    if len(test_rows) == 0:
        raise TrainError(
            f"the {how} leaves no test rows: {split.test_fraction:.0%} of {table.num_rows:,} "
            "rows rounds to 0; use more data or a larger test_fraction"
        )
    if dealt < 2 * split.folds:
        raise TrainError(
            f"the {how} has {dealt:,} rows besides the test rows; each of the {split.folds} "
            "folds needs at least two (use fewer folds or more data)"
        )
    folds: list[Fold] = []
    fold_summaries: list[dict[str, Any]] = []
    for index in range(split.folds):
        train_rows = np.flatnonzero((fold_of >= 0) & (fold_of != index))
        valid_rows = np.flatnonzero(fold_of == index)
        where = f"fold {index + 1} of the {how}"
        _check_classes(y[train_rows], f"the training part of {where}")
        _check_classes(y[valid_rows], f"the validation part of {where}")
        fold_summaries.append(
            {"train": _stats_of(y, train_rows), "valid": _stats_of(y, valid_rows)}
        )
        folds.append(
            Fold(
                table.take(pa.array(train_rows)),
                table.take(pa.array(valid_rows)),
                f"fold {index + 1} of {split.folds}",
            )
        )
    developed = np.flatnonzero(fold_of >= 0)
    validated = np.concatenate([np.flatnonzero(fold_of == index) for index in range(split.folds)])
    summary: dict[str, Any] = {
        "method": "kfold",
        "seed": split.seed,
        "stratify": split.stratify,
        "train": {"fraction": 1 - split.test_fraction, **_stats_of(y, developed)},
        "valid": {"fraction": 1 - split.test_fraction, **_stats_of(y, validated)},
        "test": {"fraction": split.test_fraction, "rows": len(test_rows)},
        "folds": fold_summaries,
    }
    return SplitData(
        train=table.take(pa.array(developed)),
        valid=table.take(pa.array(validated)),
        folds=tuple(folds),
        test=SealedTest(
            table.take(pa.array(test_rows)), f"{split.test_fraction:.0%} of the rows, {how}"
        ),
        summary=summary,
    )


def _shuffled_groups(y: Mask, stratify: bool, seed: int) -> list[npt.NDArray[np.intp]]:
    """Row numbers shuffled (seeded), per class when stratified."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y), np.flatnonzero(~y)] if stratify else [np.arange(len(y))]
    return [rng.permutation(group) for group in groups]


def _how(name: str, seed: int, stratify: bool) -> str:
    return f"{name} (seed {seed}{', stratified by label' if stratify else ''})"


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


def _duration(value: timedelta) -> str:
    """``30d`` when exact to the minute, else days with one decimal."""
    if value % timedelta(minutes=1) == timedelta(0):
        return format_duration(value)
    return f"{value / timedelta(days=1):.1f} days"


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None and end is None:
        return "(all times)"
    if start is None:
        assert end is not None
        return f"before {_when(end)}"
    if end is None:
        return f"{_when(start)} onwards"
    return f"{_when(start)} – {_when(end)}"  # noqa: RUF001 (an en dash between dates)
