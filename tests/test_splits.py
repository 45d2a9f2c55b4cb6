"""Train, validation and the sealed test window, on the real flights matrix."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import copy_example

from mlprod import Project
from mlprod.errors import TrainError
from mlprod.project.training import (
    KFoldSplit,
    OutOfTimeSplit,
    RandomSplit,
    Split,
    TimeSeriesCVSplit,
)
from mlprod.train.splits import SealedTest, SplitData, split_matrix

DATA_RANGE = "the data's prediction times run from 2013-01-01 08:15 to 2014-01-01 02:59"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> Project:
    folder = copy_example(tmp_path_factory.mktemp("splits"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    return Project.load(folder)


@pytest.fixture(scope="module")
def matrix(project: Project) -> pa.Table:
    """The flights matrix (every flight, its times and label) with one feature; built once."""
    return project.build_features(features=["sched_hour"])


@pytest.fixture(scope="module")
def frame(matrix: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = matrix.to_pandas()
    return frame


def ids(table: pa.Table) -> list[int]:
    return sorted(table.column("flight_id").to_pylist())


def frame_ids(frame: pd.DataFrame) -> list[int]:
    return sorted(frame["flight_id"].tolist())


def out_of_time(**bounds: object) -> OutOfTimeSplit:
    return OutOfTimeSplit.model_validate(bounds)


# --- out of time ---------------------------------------------------------------------------


def test_example_split_matches_pandas(
    project: Project, matrix: pa.Table, frame: pd.DataFrame
) -> None:
    """The example's split: train to September, a week's gap, validate to November, a gap, test."""
    assert project.config.train is not None
    data = split_matrix(matrix, project.config.train.split)
    t, known = frame["prediction_time"], frame["label_available_at"]
    sep1, sep8 = pd.Timestamp("2013-09-01"), pd.Timestamp("2013-09-08")
    nov1, nov8 = pd.Timestamp("2013-11-01"), pd.Timestamp("2013-11-08")
    train = frame[(t < sep1) & (known < sep8)]
    valid = frame[(t >= sep8) & (t < nov1) & (known < nov8)]
    test = frame[t >= nov8]
    assert ids(data.train) == frame_ids(train)
    assert ids(data.valid) == frame_ids(valid)
    assert (data.train.num_rows, data.valid.num_rows, data.test.rows) == (224_902, 50_284, 48_963)

    summary = data.summary
    assert summary["train"] == {
        "start": None,
        "end": "2013-09-01T00:00:00",
        "rows": len(train),
        "positives": int(train["label"].sum()),
        "positive_rate": pytest.approx(train["label"].mean()),
        "left_out": {"before_start": 0, "label_unknown": 0},
    }
    assert summary["valid"]["start"] == "2013-09-08T00:00:00"
    assert summary["valid"]["positives"] == int(valid["label"].sum())
    assert summary["valid"]["left_out"] == {
        "gap_before": int(((t >= sep1) & (t < sep8)).sum()),
        "label_unknown": 0,
    }
    assert summary["test"] == {
        "start": "2013-11-08T00:00:00",
        "end": None,
        "rows": len(test),
        "left_out": {"gap_before": int(((t >= nov1) & (t < nov8)).sum()), "after_end": 0},
    }
    assert summary["valid"]["left_out"]["gap_before"] == 6_178
    left_out = (
        summary["valid"]["left_out"]["gap_before"] + summary["test"]["left_out"]["gap_before"]
    )
    assert len(train) + len(valid) + len(test) + left_out == matrix.num_rows

    opened = data.test.open("final evaluation")
    assert ids(opened) == frame_ids(test)


def test_labels_known_only_after_a_window_ends_are_left_out(
    matrix: pa.Table, frame: pd.DataFrame
) -> None:
    """With no gap, a flight predicted just before train_end that leaves after it is dropped."""
    split = out_of_time(
        train_start="2013-02-01",
        train_end="2013-09-01",
        valid_end="2013-11-01",
        test_end="2013-12-01",
    )
    data = split_matrix(matrix, split)
    t, known = frame["prediction_time"], frame["label_available_at"]
    feb1, sep1 = pd.Timestamp("2013-02-01"), pd.Timestamp("2013-09-01")
    nov1, dec1 = pd.Timestamp("2013-11-01"), pd.Timestamp("2013-12-01")
    in_train, in_valid = (t >= feb1) & (t < sep1), (t >= sep1) & (t < nov1)
    train_late = frame[in_train & (known >= sep1)]
    valid_late = frame[in_valid & (known >= nov1)]
    assert ids(data.train) == frame_ids(frame[in_train & (known < sep1)])
    assert ids(data.valid) == frame_ids(frame[in_valid & (known < nov1)])
    assert data.summary["train"]["left_out"] == {
        "before_start": int((t < feb1).sum()),
        "label_unknown": len(train_late),
    }
    assert data.summary["valid"]["left_out"] == {"gap_before": 0, "label_unknown": len(valid_late)}
    assert data.summary["test"]["left_out"] == {
        "gap_before": 0,
        "after_end": int((t >= dec1).sum()),
    }
    assert (len(train_late), len(valid_late)) == (40, 73)
    # The edge: a flight predicted at 22:01 that left 3 minutes early (23:58) is known in time
    # and kept; one predicted 2h20 before the edge but delayed past it is not.
    kept = data.train.to_pandas().set_index("prediction_time")["label_available_at"]
    assert kept.loc[pd.Timestamp("2013-08-31 22:01")] == pd.Timestamp("2013-08-31 23:58")
    assert train_late["prediction_time"].min() == pd.Timestamp("2013-08-31 21:40")
    # The test window takes every event in it, whenever its label came.
    test = data.test.open("final evaluation")
    assert test.num_rows == int(((t >= nov1) & (t < dec1)).sum())


def test_the_test_window_is_sealed_until_opened_once(project: Project, matrix: pa.Table) -> None:
    assert project.config.train is not None
    data = split_matrix(matrix, project.config.train.split)
    sealed = data.test
    fields = [f.name for f in dataclasses.fields(SplitData)]
    assert fields == ["train", "valid", "folds", "test", "summary"]
    assert [(f.train, f.valid) for f in data.folds] == [(data.train, data.valid)]
    assert isinstance(sealed, SealedTest)
    assert (sealed.rows, sealed.window, sealed.is_open) == (48_963, "2013-11-08 onwards", False)
    assert repr(sealed) == "SealedTest(rows=48963, window='2013-11-08 onwards', sealed)"
    assert "flight_id" not in repr(data)
    # Nothing public holds the rows, and the usual ways into a container are not there.
    public = [getattr(sealed, name) for name in dir(sealed) if not name.startswith("_")]
    assert not any(isinstance(v, pa.Table | pa.RecordBatch | pd.DataFrame) for v in public)
    untyped: Any = sealed  # what a careless caller might try
    for peek in (len, iter, list, pa.table, vars):
        with pytest.raises(TypeError):
            peek(untyped)
    with pytest.raises(TypeError):
        untyped[0]
    # Validation and training see nothing of the test window, and its labels stay unread.
    test_start = datetime(2013, 11, 8)
    assert pc.max(data.valid.column("prediction_time")).as_py() < test_start
    assert "positives" not in data.summary["test"]

    opened = sealed.open("final evaluation")
    assert opened.num_rows == sealed.rows
    assert pc.min(opened.column("prediction_time")).as_py() >= test_start
    assert sealed.is_open and sealed.opened_for == "final evaluation"
    with pytest.raises(TrainError) as error:
        sealed.open("one more look")
    assert str(error.value) == (
        "the test window was already opened for 'final evaluation'; "
        "it is used exactly once, for the final evaluation"
    )


# --- random --------------------------------------------------------------------------------


def test_random_split_is_stratified_and_seeded(matrix: pa.Table, frame: pd.DataFrame) -> None:
    split = RandomSplit(method="random", valid_fraction=0.2, test_fraction=0.1, seed=3)
    data = split_matrix(matrix, split)
    positives = int(frame["label"].sum())
    negatives = len(frame) - positives
    expected = {
        "valid": (round(positives * 0.2), round(negatives * 0.2)),
        "test": (round(positives * 0.1), round(negatives * 0.1)),
    }
    test = data.test.open("final evaluation")
    for name, table in (("valid", data.valid), ("test", test)):
        counted = int(pc.sum(table.column("label")).as_py())
        assert (counted, table.num_rows - counted) == expected[name]
    assert data.summary["valid"]["rows"] == sum(expected["valid"])
    assert data.summary["test"] == {"fraction": 0.1, "rows": sum(expected["test"])}
    together = ids(data.train) + ids(data.valid) + ids(test)
    assert sorted(together) == frame_ids(frame)  # a partition: every row once

    again = split_matrix(matrix, split)
    assert ids(again.valid) == ids(data.valid)
    other = split_matrix(matrix, split.model_copy(update={"seed": 4}))
    assert ids(other.valid) != ids(data.valid)


def test_random_split_without_stratification(matrix: pa.Table) -> None:
    split = RandomSplit(method="random", valid_fraction=0.25, test_fraction=0.15, stratify=False)
    data = split_matrix(matrix, split)
    n = matrix.num_rows
    assert (data.valid.num_rows, data.test.rows) == (round(n * 0.25), round(n * 0.15))
    assert data.train.num_rows == n - round(n * 0.25) - round(n * 0.15)
    assert data.summary["method"] == "random" and data.summary["stratify"] is False


# --- cross-validation ----------------------------------------------------------------------


def test_time_series_cv_trains_on_the_past_of_each_validation_window(
    matrix: pa.Table, frame: pd.DataFrame
) -> None:
    """Four validation windows of 30 days ending on 1 November, each after a week's gap."""
    split = TimeSeriesCVSplit(
        method="time_series_cv", folds=4, valid_end="2013-11-01", valid_length="30d", gap="7d"
    )
    data = split_matrix(matrix, split)
    t, known = frame["prediction_time"], frame["label_available_at"]
    nov1, nov8 = pd.Timestamp("2013-11-01"), pd.Timestamp("2013-11-08")
    starts = [nov1 - pd.Timedelta(days=30 * (4 - i)) for i in range(4)]
    assert [str(s.date()) for s in starts] == [
        "2013-07-04",
        "2013-08-03",
        "2013-09-02",
        "2013-10-02",
    ]
    assert len(data.folds) == 4
    for index, (fold, start) in enumerate(zip(data.folds, starts, strict=True)):
        end = start + pd.Timedelta(days=30)
        train = frame[(t < start - pd.Timedelta(days=7)) & (known < start)]
        valid = frame[(t >= start) & (t < end) & (known < nov8)]
        assert ids(fold.train) == frame_ids(train), fold.name
        assert ids(fold.valid) == frame_ids(valid), fold.name
        assert fold.name == f"fold {index + 1}: validation {start:%Y-%m-%d} – {end:%Y-%m-%d}"  # noqa: RUF001
        # Nothing a fold trains on is at or after its validation window, less the gap.
        assert pc.max(fold.train.column("prediction_time")).as_py() < start - pd.Timedelta(days=7)
        assert data.summary["folds"][index]["valid"]["rows"] == len(valid)
    # The validation rows are the folds' one after the other (as out-of-fold scores line up),
    # training rows are those of the last (largest) fold, and the test starts a gap later.
    together = [fid for fold in data.folds for fid in fold.valid.column("flight_id").to_pylist()]
    assert data.valid.column("flight_id").to_pylist() == together
    assert ids(data.train) == ids(data.folds[-1].train)
    test = data.test.open("final evaluation")
    assert ids(test) == frame_ids(frame[t >= nov8])
    assert data.summary["method"] == "time_series_cv"
    assert data.summary["valid"]["start"] == "2013-07-04T00:00:00"


def test_time_series_cv_cuts_the_history_in_equal_parts_by_default(matrix: pa.Table) -> None:
    split = TimeSeriesCVSplit(
        method="time_series_cv", folds=3, train_start="2013-01-01", valid_end="2013-09-01"
    )
    data = split_matrix(matrix, split)
    # 243 days from 1 January to 1 September in four parts of 60.75 days; the first only trains.
    names = [fold.name for fold in data.folds]
    assert names == [
        "fold 1: validation 2013-03-02 18:00 – 2013-05-02 12:00",  # noqa: RUF001
        "fold 2: validation 2013-05-02 12:00 – 2013-07-02 06:00",  # noqa: RUF001
        "fold 3: validation 2013-07-02 06:00 – 2013-09-01",  # noqa: RUF001
    ]
    sizes = [fold.train.num_rows for fold in data.folds]
    assert sizes == sorted(sizes) and sizes[0] > 0  # an expanding window


def test_time_series_cv_without_room_for_the_first_fold(matrix: pa.Table) -> None:
    split = TimeSeriesCVSplit(
        method="time_series_cv", folds=10, valid_end="2013-11-01", valid_length="30d", gap="7d"
    )
    assert raises(matrix, split) == (
        "time-series cross-validation with 10 validation windows of 30d before 2013-11-01 "
        "leaves the first fold nothing to train on (training would end at 2012-12-29, before "
        "2013-01-01 08:15); use fewer folds, a shorter valid_length or gap, or more history"
    )


def test_kfold_validates_every_row_once(matrix: pa.Table, frame: pd.DataFrame) -> None:
    split = KFoldSplit(method="kfold", folds=5, test_fraction=0.1, seed=7)
    data = split_matrix(matrix, split)
    test = data.test.open("final evaluation")
    developed = ids(data.train)
    assert sorted(developed + ids(test)) == frame_ids(frame)  # test rows stay out of every fold
    validated = [fid for fold in data.folds for fid in fold.valid.column("flight_id").to_pylist()]
    assert sorted(validated) == developed  # every other row validated exactly once
    assert data.valid.column("flight_id").to_pylist() == validated
    rate = frame["label"].mean()
    for fold in data.folds:
        assert sorted(ids(fold.train) + ids(fold.valid)) == developed
        assert abs(fold.valid.num_rows - len(developed) / 5) <= 1  # dealt in turn
        fold_rate = pc.mean(pc.cast(fold.valid.column("label"), pa.float64())).as_py()
        assert abs(fold_rate - rate) < 1e-4  # stratified
    assert [f["valid"]["rows"] for f in data.summary["folds"]] == [
        f.valid.num_rows for f in data.folds
    ]
    again = split_matrix(matrix, split)
    assert ids(again.folds[2].valid) == ids(data.folds[2].valid)


def test_kfold_needs_rows_in_every_fold(matrix: pa.Table) -> None:
    split = KFoldSplit(method="kfold", folds=5, test_fraction=0.5, stratify=False)
    assert raises(matrix.slice(0, 12), split) == (
        "the 5-fold split (seed 0) has 6 rows besides the test rows; each of the 5 folds needs "
        "at least two (use fewer folds or more data)"
    )


def test_time_series_cv_config_refuses_an_overlapping_test_window() -> None:
    with pytest.raises(ValueError, match=r"test_end .* must come after valid_end"):
        TimeSeriesCVSplit(
            method="time_series_cv", valid_end="2013-11-01", test_end="2013-11-05", gap="7d"
        )


# --- errors --------------------------------------------------------------------------------


def raises(table: pa.Table, split: Split, label: str = "label") -> str:
    with pytest.raises(TrainError) as error:
        split_matrix(table, split, label=label)
    return str(error.value)


def test_an_empty_window_names_its_dates_and_the_data_range(matrix: pa.Table) -> None:
    split = out_of_time(train_start="2012-01-01", train_end="2012-09-01", valid_end="2012-11-01")
    assert raises(matrix, split) == (
        f"the training window 2012-01-01 – 2012-09-01 has no events; {DATA_RANGE}. "  # noqa: RUF001
        "Move the split's dates into that range."
    )
    t = matrix.column("prediction_time")
    june = pc.and_(
        pc.greater_equal(t, pa.scalar(datetime(2013, 6, 1), t.type)),
        pc.less(t, pa.scalar(datetime(2013, 7, 1), t.type)),
    )
    split = out_of_time(train_end="2013-06-01", valid_end="2013-06-20", gap="7d")
    assert raises(matrix.filter(pc.invert(june)), split) == (
        f"the validation window 2013-06-08 – 2013-06-20 has no events; {DATA_RANGE}. "  # noqa: RUF001
        "Move the split's dates into that range."
    )
    split = out_of_time(train_end="2013-12-01", valid_end="2014-01-01 03:00")
    assert raises(matrix, split) == (
        f"the test window 2014-01-01 03:00 onwards has no events; {DATA_RANGE}. "
        "End the validation window earlier (valid_end) or build the matrix with newer data."
    )


def test_a_window_whose_labels_all_come_too_late(matrix: pa.Table) -> None:
    t = matrix.column("prediction_time")
    late_evening = matrix.filter(
        pc.greater_equal(t, pa.scalar(datetime(2013, 8, 31, 22, 30), t.type))
    )
    split = out_of_time(train_end="2013-09-01", valid_end="2013-11-01")
    assert raises(late_evening, split) == (
        "the training window before 2013-09-01 has 29 events, but none of their labels is "
        "known before the validation window starts (2013-09-01); widen the gap or end the "
        "training window earlier"
    )


def test_a_window_with_one_class(matrix: pa.Table, frame: pd.DataFrame) -> None:
    split = out_of_time(train_end="2013-09-01", valid_end="2013-11-01", gap="7d")
    t = matrix.column("prediction_time")
    before_sep = pc.less(t, pa.scalar(datetime(2013, 9, 1), t.type))
    on_time_before_sep = matrix.filter(pc.or_(pc.invert(before_sep), pc.invert(matrix["label"])))
    negatives = int(((frame["prediction_time"] < "2013-09-01") & ~frame["label"]).sum())
    assert raises(on_time_before_sep, split) == (
        f"the training window before 2013-09-01 has only negative labels ({negatives:,} rows); "
        "a classifier needs both. Widen the window or check the spine's label."
    )
    late_in_autumn = matrix.filter(pc.or_(before_sep, matrix["label"]))
    assert raises(late_in_autumn, split) == (
        "the validation window 2013-09-08 – 2013-11-01 has only positive labels (8,011 rows); "  # noqa: RUF001
        "a classifier needs both. Widen the window or check the spine's label."
    )
    random = RandomSplit(method="random", seed=1)
    on_time = len(frame) - int(frame["label"].sum())
    assert raises(matrix.filter(pc.invert(matrix["label"])), random) == (
        "the training part of the random split (seed 1, stratified by label) has only "
        f"negative labels ({on_time - 2 * round(on_time * 0.2):,} rows); "
        "a classifier needs both. Widen the window or check the spine's label."
    )


def test_the_label_must_be_boolean_or_zero_one(matrix: pa.Table, project: Project) -> None:
    assert project.config.train is not None
    split = project.config.train.split
    as_int = matrix.set_column(2, "label", pc.cast(matrix["label"], pa.int8()))
    assert ids(split_matrix(as_int, split).valid) == ids(split_matrix(matrix, split).valid)

    hours = matrix.append_column("hour_band", pc.divide(matrix["sched_hour"], 8))
    assert raises(hours, split, label="hour_band") == (
        "the label column 'hour_band' must be boolean or 0/1, but it is int64 with values "
        "0, 1, 2; write the spine's label as a condition that is true for the outcome to "
        "predict (e.g. dep_delay >= 15)"
    )
    words = matrix.append_column(
        "status", pc.if_else(matrix["label"], pa.scalar("late"), pa.scalar("on time"))
    )
    assert raises(words, split, label="status") == (
        "the label column 'status' must be boolean or 0/1, but it is string with values "
        "'late', 'on time'; write the spine's label as a condition that is true for the "
        "outcome to predict (e.g. dep_delay >= 15)"
    )
    assert raises(matrix, split, label="delayed") == (
        "the training matrix has no label column 'delayed'; its columns are 'flight_id', "
        "'label', 'label_available_at', 'prediction_time', 'sched_hour'"
    )


def test_random_fractions_must_leave_rows_to_train_on(matrix: pa.Table) -> None:
    split = RandomSplit(method="random", valid_fraction=0.5, test_fraction=0.5)
    assert raises(matrix, split) == (
        "the random split's valid_fraction (0.5) and test_fraction (0.5) leave no rows to "
        "train on; make them sum to less than 1"
    )


def test_gap_is_counted_per_window(matrix: pa.Table, frame: pd.DataFrame) -> None:
    split = out_of_time(train_end="2013-09-01", valid_end="2013-11-01", gap=timedelta(hours=12))
    data = split_matrix(matrix, split)
    t = frame["prediction_time"]
    first = ((t >= "2013-09-01") & (t < "2013-09-01 12:00")).sum()
    second = ((t >= "2013-11-01") & (t < "2013-11-01 12:00")).sum()
    assert data.summary["valid"]["left_out"]["gap_before"] == first
    assert data.summary["test"]["left_out"]["gap_before"] == second
    assert data.summary["valid"]["start"] == "2013-09-01T12:00:00"
    assert data.test.window == "2013-11-01 12:00 onwards"
