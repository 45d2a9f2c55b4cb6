"""Monitoring windows over a real SQLite prediction log: the archive reads each row once, a
window's summary holds exactly what its rows hold, incremental passes equal a full recompute,
late labels reach the window of their prediction, and count windows hold ``count`` rows."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlprod.artefact.reference import reference_statistics
from mlprod.monitor.archive import Archive
from mlprod.monitor.reference import ReferenceProfile
from mlprod.monitor.store import MonitorStore
from mlprod.monitor.summary import SCORE_BINS, pack, unpack
from mlprod.monitor.windows import WindowSpec, summarise_windows
from mlprod.serve.predlog import Feedback, PredictionRecord, SqlitePredictionLog

TYPES = {"dep_delay": "DOUBLE", "carrier": "VARCHAR", "distance": "DOUBLE"}
HOUR = WindowSpec(length=timedelta(hours=1))


@pytest.fixture(scope="module")
def flights(flights_db: Path) -> pa.Table:
    """September flights (the reference: January to June), with a made-up calibrated score."""
    con = duckdb.connect(str(flights_db), read_only=True)
    try:
        rows = con.sql(
            'SELECT flight_id, time_hour + to_minutes(minute) AS "at", dep_delay, carrier, '
            "distance, dep_delay IS NULL OR dep_delay >= 15 AS late FROM flights "
            'WHERE month = 9 AND day <= 3 ORDER BY "at", flight_id'
        ).to_arrow_table()
    finally:
        con.close()
    return rows


@pytest.fixture(scope="module")
def profile(flights_db: Path) -> ReferenceProfile:
    con = duckdb.connect(str(flights_db), read_only=True)
    try:
        train = con.sql(
            "SELECT dep_delay, carrier, CAST(distance AS DOUBLE) AS distance FROM flights "
            "WHERE month <= 6"
        ).to_arrow_table()
    finally:
        con.close()
    scores = np.linspace(0.01, 0.99, 1000)
    return ReferenceProfile.of(reference_statistics(train, list(TYPES), scores, 0.3))


def _score(row: dict[str, object]) -> float:
    return float(np.clip(0.2 + 0.002 * float(row["distance"]) / 10, 0, 1))  # type: ignore[arg-type]


def _log(path: Path, rows: list[dict[str, object]]) -> list[str]:
    log = SqlitePredictionLog(path)
    ids = []
    try:
        records = []
        for row in rows:
            pid = uuid.uuid4().hex
            ids.append(pid)
            at = row["at"]
            assert isinstance(at, datetime)
            score = _score(row)
            records.append(
                PredictionRecord(
                    pid, at, at, "flights", "1", {"flight_id": row["flight_id"]}, {},
                    {"dep_delay": row["dep_delay"], "carrier": row["carrier"],
                     "distance": row["distance"]},
                    score, score >= 0.3, variant="a" if int(row["flight_id"]) % 2 else "b",  # type: ignore[call-overload]
                    latency_ms=1.0,
                )
            )  # fmt: skip
        log.append(records)
    finally:
        log.close()
    return ids


def _label(path: Path, ids: list[str], rows: list[dict[str, object]]) -> None:
    log = SqlitePredictionLog(path)
    try:
        log.add_feedback(
            [
                Feedback(label=bool(r["late"]), prediction_id=pid)
                for pid, r in zip(ids, rows, strict=True)
            ]
        )
    finally:
        log.close()


def _summaries(archive: Archive, profile: ReferenceProfile, spec: WindowSpec = HOUR) -> dict:
    return {
        (w.key.start, w.key.variant): w.summary
        for w in summarise_windows(archive, "flights", "1", profile, spec)
    }


def test_a_window_holds_exactly_its_rows(
    tmp_path: Path, flights: pa.Table, profile: ReferenceProfile
) -> None:
    rows = flights.to_pylist()
    ids = _log(tmp_path / "log.sqlite", rows)
    _label(tmp_path / "log.sqlite", ids, rows)
    archive = Archive(tmp_path / "archive")
    log = SqlitePredictionLog(tmp_path / "log.sqlite")
    ingested = archive.ingest(log, lambda name, version: TYPES)
    log.close()
    assert (ingested.predictions, ingested.labels) == (len(rows), len(rows))
    windows = summarise_windows(archive, "flights", "1", profile, HOUR)
    start = datetime(2013, 9, 2, 13)
    mine = [r for r in rows if start <= r["at"] < start + timedelta(hours=1)
            and int(r["flight_id"]) % 2 == 1]  # fmt: skip
    window = next(w for w in windows if w.key.start == start and w.key.variant == "a")
    summary = window.summary
    assert window.key.end == start + timedelta(hours=1)
    assert summary.rows == len(mine)
    assert summary.decisions == sum(_score(r) >= 0.3 for r in mine)
    assert summary.labels.positives == sum(bool(r["late"]) for r in mine)
    delay = summary.features["dep_delay"]
    known = [float(r["dep_delay"]) for r in mine if r["dep_delay"] is not None]
    assert delay.nulls == len(mine) - len(known)
    assert delay.total == pytest.approx(sum(known))
    assert delay.minimum == min(known) and delay.maximum == max(known)
    edges = profile.features["dep_delay"].edges  # type: ignore[union-attr]
    expected = np.bincount(np.searchsorted(edges, known, side="right"), minlength=edges.size + 1)
    assert delay.bins.tolist() == expected.tolist()
    carriers = summary.features["carrier"]
    assert carriers.levels == {  # type: ignore[union-attr]
        c: sum(r["carrier"] == c for r in mine) for c in {r["carrier"] for r in mine}
    }
    scores = np.asarray([_score(r) for r in mine])
    bins = np.minimum((scores * SCORE_BINS).astype(int), SCORE_BINS - 1)
    assert summary.score_bins.to_dict() == {
        int(b): int((bins == b).sum()) for b in set(bins.tolist())
    }
    # Every row is in exactly one window of its variant.
    assert sum(w.summary.rows for w in windows) == len(rows)
    assert unpack(pack(summary)) == summary


def test_incremental_passes_equal_a_full_recompute(
    tmp_path: Path, flights: pa.Table, profile: ReferenceProfile
) -> None:
    rows = flights.to_pylist()
    half = len(rows) // 2
    path = tmp_path / "log.sqlite"
    archive = Archive(tmp_path / "archive")
    store = MonitorStore(tmp_path / "windows.sqlite")
    ids = _log(path, rows[:half])
    log = SqlitePredictionLog(path)
    first = archive.ingest(log, lambda name, version: TYPES)
    positions = {HOUR.position_of(r["at"]) for r in rows[:half]}  # type: ignore[arg-type]
    store.put(HOUR, summarise_windows(archive, "flights", "1", profile, HOUR, positions), [])
    # More traffic, and the labels of the first half, arrive later.
    more = _log(path, rows[half:])
    _label(path, ids, rows[:half])
    second = archive.ingest(log, lambda name, version: TYPES)
    log.close()
    assert first.predictions == half and second.predictions == len(rows) - half
    assert second.labels == half and sorted(second.labelled_ids) == sorted(ids)
    touched = {HOUR.position_of(r["at"]) for r in rows}  # type: ignore[arg-type]
    store.put(HOUR, summarise_windows(archive, "flights", "1", profile, HOUR, touched), [])
    stored = store.windows(HOUR)
    incremental = {(w.key.start, w.key.variant): w.summary for w in stored}
    assert incremental == _summaries(archive, profile)
    assert more and len(incremental) > 40
    # Nothing new: an ingest reads nothing.
    log = SqlitePredictionLog(path)
    nothing = archive.ingest(log, lambda name, version: TYPES)
    log.close()
    assert (nothing.predictions, nothing.labels) == (0, 0)
    store.close()


def test_an_interrupted_ingest_leaves_nothing_twice(
    tmp_path: Path, flights: pa.Table, profile: ReferenceProfile
) -> None:
    """A part written but its cursor not saved (killed in between) is written again, under the
    same name, on the next pass: no prediction is archived twice."""
    rows = flights.to_pylist()[:3000]
    path = tmp_path / "log.sqlite"
    _log(path, rows)
    archive = Archive(tmp_path / "archive")
    log = SqlitePredictionLog(path)
    archive.ingest(log, lambda name, version: TYPES, batch=1000)
    (tmp_path / "archive" / "cursor.json").write_text('{"predictions": 1000, "labels": 0}')
    archive.ingest(log, lambda name, version: TYPES, batch=1000)
    log.close()
    total = sum(w.summary.rows for w in summarise_windows(archive, "flights", "1", profile, HOUR))
    assert total == len(rows)


def test_count_windows_hold_count_rows_in_log_order(
    tmp_path: Path, flights: pa.Table, profile: ReferenceProfile
) -> None:
    rows = flights.to_pylist()[:2500]
    path = tmp_path / "log.sqlite"
    _log(path, rows)
    archive = Archive(tmp_path / "archive")
    log = SqlitePredictionLog(path)
    archive.ingest(log, lambda name, version: TYPES)
    log.close()
    windows = summarise_windows(archive, "flights", "1", profile, WindowSpec(count=500))
    by_variant: dict[str, list[int]] = {}
    for w in sorted(windows, key=lambda w: w.position):
        by_variant.setdefault(w.key.variant, []).append(w.summary.rows)
    for variant, sizes in by_variant.items():
        expected = sum(int(r["flight_id"]) % 2 == (variant == "a") for r in rows)
        assert sum(sizes) == expected
        assert all(size == 500 for size in sizes[:-1])


def test_an_archive_and_a_store_of_an_older_layout_are_rebuilt(
    tmp_path: Path, flights: pa.Table, profile: ReferenceProfile
) -> None:
    """Labels archived without their prediction's seq are read from the log again, and a
    monitoring store of another layout is emptied (and says so, for a full pass)."""
    rows = flights.to_pylist()[:2000]
    path = tmp_path / "log.sqlite"
    ids = _log(path, rows)
    _label(path, ids, rows)
    archive = Archive(tmp_path / "archive")
    log = SqlitePredictionLog(path)
    archive.ingest(log, lambda name, version: TYPES)
    before = _summaries(archive, profile)
    # What the previous layout left: label parts of four columns, a cursor without a format.
    for part in (tmp_path / "archive" / "labels").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.select(["feedback_id", "prediction_id", "label", "observed_at"]), part)
    (tmp_path / "archive" / "cursor.json").write_text(
        f'{{"predictions": {len(rows)}, "labels": {len(rows)}}}'
    )
    again = archive.ingest(log, lambda name, version: TYPES)
    log.close()
    assert (again.predictions, again.labels) == (0, len(rows))
    assert _summaries(archive, profile) == before
    assert sum(s.labels.positives for s in before.values()) == sum(bool(r["late"]) for r in rows)

    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE windows (spec TEXT, summary TEXT)")
    conn.execute("CREATE TABLE metrics (spec TEXT, value REAL)")
    conn.execute("INSERT INTO windows VALUES ('time:3600000000', '{}')")
    conn.commit()
    conn.close()
    store = MonitorStore(old)
    assert store.reset and store.keys(HOUR) == []
    windows = summarise_windows(archive, "flights", "1", profile, HOUR)
    store.put(HOUR, windows, [])
    store.close()
    reopened = MonitorStore(old)
    assert not reopened.reset and len(reopened.keys(HOUR)) == len(windows)
    reopened.close()
