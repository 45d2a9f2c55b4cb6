"""Batch scoring's inputs and outputs, on real files, real DuckDB files and the real PostgreSQL.

Each output kind is checked for a round trip, for idempotent reruns, and for atomicity: a child
process that writes slowly is killed with SIGKILL half way, and no row of its run may be visible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import adbc_driver_postgresql.dbapi as pg
import duckdb
import expect
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mlprod.serve.batch_io import (
    DuckDBInput,
    DuckDBOutput,
    FileInput,
    OutputSpec,
    ParquetDatasetOutput,
    ParquetFileOutput,
    PostgresInput,
    PostgresOutput,
    ScoreIOError,
    SourceInput,
    open_output,
    parse_input,
    parse_output,
    read_input,
)

SOURCES = ["airports", "flights", "planes", "weather"]
KINDS = [
    "parquet_file",
    "parquet_dataset",
    "duckdb",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


def scores(n: int = 5, offset: int = 0) -> pa.Table:
    """Scores with every column type a table is made of, and nulls in each."""
    ids = list(range(offset, offset + n))
    keep = [i % 4 != 3 for i in ids]

    def some(values: list[object]) -> list[object]:
        return [v if k else None for v, k in zip(values, keep, strict=True)]

    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "score": pa.array(some([i / 7 for i in ids]), pa.float64()),
            "label": pa.array(
                some([f'lab\'el "{i}"\n' if i % 2 else "" for i in ids]), pa.string()
            ),
            "late": pa.array(some([i % 2 == 0 for i in ids]), pa.bool_()),
            "at": pa.array(
                some([datetime(2014, 1, 1, 5, i % 60, 7, 123456) for i in ids]), pa.timestamp("us")
            ),
            "day": pa.array(some([date(2014, 1, 1 + i % 28) for i in ids]), pa.date32()),
        }
    )


def with_run(table: pa.Table, run_id: str) -> pa.Table:
    return table.add_column(0, "run_id", pa.array([run_id] * table.num_rows, pa.string()))


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([("run_id", "ascending"), ("id", "ascending")])


def execute(url: str, *statements: str) -> None:
    with pg.connect(url) as conn, conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
        conn.commit()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A unique schema name; the writer creates it, the fixture drops it."""
    schema = f"mlprod_test_{uuid.uuid4().hex[:12]}"
    yield schema
    execute(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def output_text(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "parquet_file":
        return str(tmp_path / "scores.parquet")
    if kind == "parquet_dataset":
        return f"{tmp_path / 'scores'}/"
    if kind == "duckdb":
        return f"{tmp_path / 'out.duckdb'}:scoring.scores"
    url = request.getfixturevalue("postgres_url")
    return f"{url}#{request.getfixturevalue('pg_schema')}.scores"


@pytest.fixture(params=KINDS)
def output(request: pytest.FixtureRequest, tmp_path: Path) -> OutputSpec:
    return parse_output(output_text(request.param, tmp_path, request))


def write(spec: OutputSpec, run_id: str, table: pa.Table, chunk: int = 2) -> int:
    with open_output(spec, run_id=run_id, schema=table.schema) as writer:
        for batch in table.to_batches(max_chunksize=chunk):
            writer.write(batch)
    return writer.result.rows


def read_back(spec: OutputSpec) -> pa.Table:
    """Everything committed to the output, as another reader sees it."""
    if isinstance(spec, ParquetFileOutput):
        return pq.read_table(spec.path) if spec.path.exists() else pa.table({})
    if isinstance(spec, ParquetDatasetOutput):
        return pq.read_table(spec.folder)  # skips hidden files, as dataset readers do
    if isinstance(spec, DuckDBOutput):
        return read_input(DuckDBInput(spec.path, spec.schema, spec.table), None)
    return read_input(PostgresInput(spec.url, spec.schema, spec.table), None)


def runs(spec: OutputSpec) -> dict[str, int]:
    table = read_back(spec)
    if table.num_rows == 0:
        return {}
    counts = table.group_by("run_id").aggregate([("id", "count")]).to_pylist()
    return {row["run_id"]: row["id_count"] for row in counts}


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flights", SourceInput("flights")),
        ("data/requests.parquet", FileInput(Path("data/requests.parquet"), "parquet")),
        ("REQUESTS.CSV", FileInput(Path("REQUESTS.CSV"), "csv")),
        ("data/db.duckdb:requests", DuckDBInput(Path("data/db.duckdb"), "main", "requests")),
        ("db.duckdb:scoring.requests", DuckDBInput(Path("db.duckdb"), "scoring", "requests")),
        (
            "postgresql://me@db:5432/prod#requests",
            PostgresInput("postgresql://me@db:5432/prod", "public", "requests"),
        ),
        (
            "postgres://me:pw@db/prod#ml.requests",
            PostgresInput("postgres://me:pw@db/prod", "ml", "requests"),
        ),
    ],
)
def test_parse_input_forms(text: str, expected: object) -> None:
    assert parse_input(text, SOURCES) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("out/scores.parquet", ParquetFileOutput(Path("out/scores.parquet"))),
        ("out/scores/", ParquetDatasetOutput(Path("out/scores"))),
        ("out.duckdb:scores", DuckDBOutput(Path("out.duckdb"), "main", "scores")),
        ("out.duckdb:ml.scores", DuckDBOutput(Path("out.duckdb"), "ml", "scores")),
        (
            "postgresql://me@db:5432/prod#ml.scores",
            PostgresOutput("postgresql://me@db:5432/prod", "ml", "scores"),
        ),
    ],
)
def test_parse_output_forms(text: str, expected: OutputSpec) -> None:
    assert parse_output(text) == expected


def test_unknown_input_lists_the_forms_and_the_nearest_source() -> None:
    with expect.raises(
        ScoreIOError,
        "unknown input 'flihgts' (did you mean 'flights'?); expected a source of mlprod.yaml "
        "('airports', 'flights', 'planes', 'weather'), a .parquet or .csv file, "
        "FILE.duckdb:[SCHEMA.]TABLE or postgresql://USER@HOST:PORT/DB#[SCHEMA.]TABLE",
    ):
        parse_input("flihgts", SOURCES)


def test_invalid_table_name_is_refused() -> None:
    with expect.raises(
        ScoreIOError,
        "invalid table 'main.my-table' in 'data/x.duckdb:main.my-table'; expected TABLE or "
        "SCHEMA.TABLE, names of letters, digits and underscores that do not start with a digit",
    ):
        parse_input("data/x.duckdb:main.my-table", SOURCES)
    with pytest.raises(ScoreIOError, match=r"invalid table 'a\.b\.c'"):
        parse_output("postgresql://me@db/prod#a.b.c")


def test_postgres_without_table_says_how_and_hides_the_password() -> None:
    with expect.raises(
        ScoreIOError,
        "the PostgreSQL output 'postgresql://me@db:5432/prod' names no table; add #TABLE or "
        "#SCHEMA.TABLE, e.g. 'postgresql://me@db:5432/prod#public.scores'",
    ):
        parse_output("postgresql://me:secret@db:5432/prod")


def test_other_output_mistakes(tmp_path: Path) -> None:
    with expect.raises(
        ScoreIOError,
        "'out.duckdb' is a DuckDB file but names no table; "
        "write 'out.duckdb:TABLE' or 'out.duckdb:SCHEMA.TABLE'",
    ):
        parse_output("out.duckdb")
    with pytest.raises(ScoreIOError, match=r"^unknown output 'scores.csv'; expected a \.parquet"):
        parse_output("scores.csv")
    with pytest.raises(ScoreIOError, match=f"write '{tmp_path}/'$"):
        parse_output(str(tmp_path))


# --- reading -----------------------------------------------------------------------------------


def test_read_files_and_duckdb_tables(tmp_path: Path) -> None:
    table = scores(6)
    pq.write_table(table, tmp_path / "requests.parquet")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.register("arrow_scores", table)
        con.execute("CREATE SCHEMA ml")
        con.execute("CREATE TABLE ml.requests AS SELECT * FROM arrow_scores")
        con.execute(f"COPY ml.requests TO '{tmp_path / 'requests.csv'}' (HEADER)")
    wanted = ["late", "id", "score"]
    for text in ["requests.parquet", "requests.csv", "db.duckdb:ml.requests"]:
        spec = parse_input(str(tmp_path / text), SOURCES)
        assert not isinstance(spec, SourceInput)
        assert read_input(spec, wanted).equals(table.select(wanted)), text
    # read_input closed the file: this process can open it for writing again.
    duckdb.connect(str(tmp_path / "db.duckdb")).close()
    assert read_input(parse_input(str(tmp_path / "requests.parquet"), []), None).equals(table)


def test_read_errors_name_what_is_missing(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("CREATE TABLE requests (id BIGINT, dep_delay DOUBLE)")
    path = tmp_path / "db.duckdb"
    with expect.raises(
        ScoreIOError,
        f"the DuckDB file '{path}' has no table 'main.request' (did you mean 'requests'?)",
    ):
        read_input(DuckDBInput(path, "main", "request"), None)
    with expect.raises(
        ScoreIOError,
        f"the DuckDB file '{path}' has no table 'ml.requests' (there is no schema 'ml')",
    ):
        read_input(DuckDBInput(path, "ml", "requests"), None)
    with expect.raises(
        ScoreIOError,
        f"input '{path}:main.requests' has no column 'dep_dely' (did you mean 'dep_delay'?), "
        "which the model needs (its columns: 'dep_delay', 'id')",
    ):
        read_input(DuckDBInput(path, "main", "requests"), ["id", "dep_dely"])
    missing = tmp_path / "nope.parquet"
    with expect.raises(
        ScoreIOError, f"input file '{missing}' does not exist (looked for {missing.resolve()})"
    ):
        read_input(FileInput(missing, "parquet"), None)


@pytest.mark.postgres
def test_read_postgres_input(postgres_url: str, pg_schema: str) -> None:
    write(PostgresOutput(postgres_url, pg_schema, "requests"), "r1", scores(4))
    spec = parse_input(f"{postgres_url}#{pg_schema}.requests", SOURCES)
    assert isinstance(spec, PostgresInput)
    assert read_input(spec, ["id", "at"]).equals(scores(4).select(["id", "at"]))
    with pytest.raises(ScoreIOError, match=f"has no table '{pg_schema}.request' .did you mean"):
        read_input(PostgresInput(postgres_url, pg_schema, "request"), None)


# --- writing -----------------------------------------------------------------------------------


def test_round_trip(output: OutputSpec) -> None:
    table = scores(9)
    assert write(output, "run1", table) == 9
    assert ordered(read_back(output)).equals(with_run(table, "run1"))


def test_result_says_where_without_password() -> None:
    spec = parse_output("postgresql://me:secret@db:5432/prod#ml.scores")
    assert str(spec) == "postgresql://me@db:5432/prod#ml.scores"
    assert "secret" not in repr(spec)


def test_same_run_id_replaces_its_rows_and_keeps_other_runs(output: OutputSpec) -> None:
    write(output, "r1", scores(5))
    write(output, "r1", scores(5, offset=100))
    if isinstance(output, ParquetFileOutput):  # one file holds one run: replaced whole
        write(output, "r2", scores(3))
        assert runs(output) == {"r2": 3}
        return
    assert runs(output) == {"r1": 5}
    assert pc.min(read_back(output)["id"]).as_py() == 100
    write(output, "r2", scores(3))
    assert runs(output) == {"r1": 5, "r2": 3}


def test_an_exception_in_the_block_writes_nothing(output: OutputSpec) -> None:
    write(output, "r0", scores(2))
    with (
        pytest.raises(KeyboardInterrupt),
        open_output(output, run_id="r1", schema=scores().schema) as writer,
    ):
        writer.write(scores(3))
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError, match="no result: the writer is rolled back"):
        _ = writer.result
    assert runs(output) == {"r0": 2}
    assert not list(_folder(output).glob(".*.tmp"))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "parquet_file"])
def test_existing_output_with_other_columns_is_refused(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec = parse_output(output_text(kind, tmp_path, request))
    write(spec, "r1", scores(2))
    other = scores(2).rename_columns(["id", "probability", "label", "late", "at", "day"])
    where = {
        "parquet_dataset": f"the dataset '{tmp_path / 'scores'}/'",
        "duckdb": f"'{tmp_path / 'out.duckdb'}:scoring.scores'",
    }.get(kind, f"'{spec}'")
    noun, new = ("dataset", "folder") if kind == "parquet_dataset" else ("table", "table")
    with expect.raises(
        ScoreIOError,
        f"cannot write these scores to {where}: the {noun} lacks 'probability'; the {noun} has "
        "'score', which the scores do not; columns are never added or dropped, so write to a "
        f"new {new}, or drop or rename the old one",
    ):
        write(spec, "r2", other)
    assert runs(spec) == {"r1": 2}


def test_bad_run_ids_and_types_are_refused(tmp_path: Path) -> None:
    spec = parse_output(f"{tmp_path}/out.duckdb:scores")
    with expect.raises(
        ScoreIOError,
        "invalid run id '../x'; expected up to 128 letters, digits, '_', '-' or '.', starting "
        "with a letter or digit",
    ):
        open_output(spec, run_id="../x", schema=scores().schema)
    listed = pa.schema([("id", pa.int64()), ("path", pa.list_(pa.string()))])
    with pytest.raises(
        ScoreIOError, match=r"^cannot write column 'path' of type list<item: string>"
    ):
        open_output(spec, run_id="r1", schema=listed)
    with pytest.raises(ScoreIOError, match=r"^the scores already have a column 'run_id'"):
        open_output(spec, run_id="r1", schema=pa.schema([("run_id", pa.string())]))
    with pytest.raises(ScoreIOError, match=r"the folder '.*nowhere' does not exist$"):
        open_output(
            parse_output(f"{tmp_path}/nowhere/s.parquet"), run_id="r", schema=listed
        ).__enter__()


# --- atomicity under SIGKILL ---------------------------------------------------------------------

CHILD = """
import sys, time
import pyarrow as pa
from mlprod.serve.batch_io import open_output, parse_output

table = pa.table({"id": pa.array(range(2000), pa.int64()), "score": [i / 7 for i in range(2000)]})
batches = table.to_batches(max_chunksize=100)
with open_output(parse_output(sys.argv[1]), run_id="killed", schema=batches[0].schema) as writer:
    for number, batch in enumerate(batches):
        writer.write(batch)
        if number == len(batches) // 2:
            print("half", flush=True)
            time.sleep(600)  # killed here
"""


def test_a_run_killed_half_way_leaves_nothing(output: OutputSpec, tmp_path: Path) -> None:
    write(output, "before", scores(3).select(["id", "score"]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, output_text_of(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "half\n", child.stderr.read() if child.stderr else ""
        # Half the batches are written somewhere, yet other readers see none of them.
        assert runs(output) == {"before": 3}
        staged = list(_folder(output).glob(".*.tmp"))
        if isinstance(output, PostgresOutput):
            assert writing_transactions(output) == 1
        else:
            assert len(staged) == 1 and staged[0].stat().st_size > 0
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert runs(output) == {"before": 3}
    if isinstance(output, ParquetDatasetOutput):
        assert not (output.folder / "run-killed.parquet").exists()
    write(output, "killed", scores(4).select(["id", "score"]))  # the same run again, normally
    expected = (
        {"killed": 4} if isinstance(output, ParquetFileOutput) else {"before": 3, "killed": 4}
    )
    assert runs(output) == expected


def writing_transactions(spec: PostgresOutput) -> int:
    """How many open transactions hold a write lock on the output table."""
    with pg.connect(spec.url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2 AND l.mode = 'RowExclusiveLock' "
            "AND l.pid <> pg_backend_pid()",
            parameters=(spec.schema, spec.table),
        )
        count: int = cursor.fetchone()[0]
    return count


def output_text_of(spec: OutputSpec) -> str:
    if isinstance(spec, PostgresOutput):
        return f"{spec.url}#{spec.schema}.{spec.table}"
    return str(spec)


def _folder(spec: OutputSpec) -> Path:
    if isinstance(spec, ParquetDatasetOutput):
        return spec.folder
    if isinstance(spec, PostgresOutput):
        return Path(".")
    return spec.path.parent


@pytest.mark.postgres
def test_postgres_column_of_another_type_is_refused(postgres_url: str, pg_schema: str) -> None:
    execute(
        postgres_url,
        f'CREATE SCHEMA "{pg_schema}"',
        f'CREATE TABLE "{pg_schema}".scores (run_id text, id integer, score double precision)',
    )
    spec = PostgresOutput(postgres_url, pg_schema, "scores")
    with expect.raises(
        ScoreIOError,
        f"cannot write these scores to '{spec}': its column 'id' is integer, the scores' is "
        "int64 (stored as bigint); write to a new table, or drop or rename the old one",
    ):
        write(spec, "r1", scores(2).select(["id", "score"]))
