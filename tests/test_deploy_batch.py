"""Batch scoring with a registered model: features as of each row's time, from the
artefact's own definitions, written at once per run id to Parquet, DuckDB or PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from expect import raises

from mlprod import Project
from mlprod.errors import ConfigError
from mlprod.serve.batch import computed_features
from mlprod.serve.batch_io import ScoreIOError
from mlprod.serve.deployment import parse_model_reference

AT = datetime(2013, 12, 31, 12, 0)


@pytest.fixture(scope="module")
def spine_scores(deployed: Project, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    out = tmp_path_factory.mktemp("scores") / "all.parquet"
    summary = deployed.score(None, "flights", str(out), run_id="spine")
    table = pq.read_table(out)
    assert summary.rows == table.num_rows == 336_776
    return table


def test_batch_scores_equal_the_training_matrix_scores(
    deployed: Project, spine_scores: pa.Table
) -> None:
    """Scoring the spine source gives each event the score its training-matrix row gets."""
    deployment = deployed.deployment()
    matrix = deployed.build_matrix(as_of=AT)
    expected, _ = deployment.score(matrix.table.select(deployment.features))
    ids = matrix.table.column("flight_id")
    scored = spine_scores.filter(pc.is_in(spine_scores.column("flight_id"), value_set=ids))
    order = pc.sort_indices(scored, [("flight_id", "ascending")])
    by_id = scored.take(order)
    wanted = pc.sort_indices(matrix.table, [("flight_id", "ascending")])
    assert by_id.column("flight_id").equals(ids.take(wanted))
    assert by_id.column("prediction_time").equals(
        matrix.table.column("prediction_time").take(wanted).cast(pa.timestamp("us"))
    )
    assert np.array_equal(by_id.column("score").to_numpy(), expected[wanted.to_numpy()])


def test_output_columns(spine_scores: pa.Table, deployed: Project) -> None:
    assert spine_scores.column_names == [
        "run_id",
        "flight_id",
        "prediction_time",
        "score",
        "decision",
        "model_name",
        "model_version",
        "scored_at",
    ]
    threshold = deployed.deployment().threshold
    assert pc.all(
        pc.equal(spine_scores["decision"], pc.greater_equal(spine_scores["score"], threshold))
    ).as_py()
    assert set(spine_scores["model_version"].to_pylist()) == {"1"}
    assert set(spine_scores["run_id"].to_pylist()) == {"spine"}


def test_a_file_of_requests_with_its_own_times(
    deployed: Project, spine_scores: pa.Table, tmp_path: Path
) -> None:
    """Request rows from a file, each with its prediction_time, score as the spine rows do."""
    sample = spine_scores.slice(1000, 50)
    ids = sample.column("flight_id")
    con = duckdb.connect(str(deployed.folder / "data" / "nycflights13.duckdb"), read_only=True)
    fields = [f.name for f in deployed.deployment().request_fields]
    rows = con.sql(f"SELECT {', '.join(fields)} FROM flights").to_arrow_table()
    con.close()
    rows = rows.filter(pc.is_in(rows.column("flight_id"), value_set=ids))
    times = dict(zip(ids.to_pylist(), sample.column("prediction_time").to_pylist(), strict=True))
    rows = rows.append_column(
        "prediction_time",
        pa.array([times[i] for i in rows.column("flight_id").to_pylist()], pa.timestamp("us")),
    )
    path = tmp_path / "requests.parquet"
    pq.write_table(rows, path)
    out = tmp_path / "out.parquet"
    deployed.score(None, str(path), str(out), run_id="file")
    got = {r["flight_id"]: r["score"] for r in pq.read_table(out).to_pylist()}
    want = {r["flight_id"]: r["score"] for r in sample.to_pylist()}
    assert got == want


def test_postgres_in_and_out_idempotent_per_run(
    deployed: Project, postgres_url: str, tmp_path: Path
) -> None:
    import adbc_driver_postgresql.dbapi as pg

    schema = f"mlprod_score_{uuid.uuid4().hex[:8]}"
    features = computed_features(deployed.deployment(), "flights", None).slice(0, 200)
    fields = [f.name for f in deployed.deployment().request_fields]
    con = duckdb.connect(str(deployed.folder / "data" / "nycflights13.duckdb"), read_only=True)
    requests = con.sql(f"SELECT {', '.join(fields)} FROM flights LIMIT 200").to_arrow_table()
    con.close()
    assert features.num_rows == 200
    with pg.connect(postgres_url) as conn, conn.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
        conn.commit()
        cursor.adbc_ingest("requests", requests, mode="create", db_schema_name=schema)
        conn.commit()
    try:
        source = f"{postgres_url}#{schema}.requests"
        target = f"{postgres_url}#{schema}.scores"
        for run in ("a", "a", "b"):
            deployed.score(None, source, target, at=AT, run_id=run)
        with pg.connect(postgres_url) as conn, conn.cursor() as cursor:
            cursor.execute(
                f'SELECT run_id, count(*) FROM "{schema}".scores GROUP BY run_id ORDER BY run_id'
            )
            assert cursor.fetchall() == [("a", 200), ("b", 200)]
            cursor.execute(f'SELECT DISTINCT prediction_time FROM "{schema}".scores')
            assert cursor.fetchall() == [(AT,)]
    finally:
        with pg.connect(postgres_url) as conn, conn.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.commit()


def test_duckdb_output(deployed: Project, tmp_path: Path) -> None:
    path = tmp_path / "scores.duckdb"
    requests = tmp_path / "requests.parquet"
    fields = [f.name for f in deployed.deployment().request_fields]
    con = duckdb.connect(str(deployed.folder / "data" / "nycflights13.duckdb"), read_only=True)
    pq.write_table(
        con.sql(f"SELECT {', '.join(fields)} FROM flights LIMIT 10").to_arrow_table(), requests
    )
    con.close()
    deployed.score(None, str(requests), f"{path}:scores", at=AT, run_id="d1")
    with duckdb.connect(str(path), read_only=True) as out:
        assert out.sql("SELECT count(*), min(prediction_time) FROM scores").fetchall() == [(10, AT)]


def test_input_errors_name_the_column(deployed: Project, tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"flight_id": [1], "hour": [5]}), path)
    with raises(
        ScoreIOError,
        f"input {path} has no column 'minute'; the model needs the request fields flight_id, "
        "hour, minute, year, month, day, distance, carrier, origin, dest, tailnum, flight",
    ):
        deployed.score(None, str(path), str(tmp_path / "out.parquet"))
    pq.write_table(pa.table({f.name: ["x"] for f in deployed.deployment().request_fields}), path)
    with raises(
        ScoreIOError, f"input {path}: column 'flight_id' is VARCHAR, expected int (BIGINT)"
    ):
        deployed.score(None, str(path), str(tmp_path / "out.parquet"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flights@3", "invalid model 'flights@3': after '@' comes an alias; for a version "
         "write flights/3"),
        ("flights/champion", "invalid model 'flights/champion': after '/' comes a version number"),
        ("@x", "invalid model '@x': name a model as NAME@ALIAS (flights@champion) or "
         "NAME/VERSION (flights/3)"),
    ],
)  # fmt: skip
def test_model_references(text: str, message: str) -> None:
    with raises(ConfigError, message):
        parse_model_reference(text)
    assert str(parse_model_reference("flights")) == "flights@champion"
    assert str(parse_model_reference("flights/2")) == "flights/2"
