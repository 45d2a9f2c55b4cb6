"""The monitoring archive: each logged prediction and label copied once, as typed Parquet.

The prediction log is a row store made for durable single-row writes (SQLite or PostgreSQL);
reading a million rows of JSON features back out of it takes seconds every time. So monitoring
reads each new row once, by the log's storage order, parses its features into typed columns
(DuckDB's JSON reader, one struct per model version) and appends a Parquet part; windows are then
summarised from the parts with DuckDB in a fraction of the time.

Layout under ``<store>/monitor/archive``::

    predictions/<model>/<version>/part-<first seq>-<last seq>.parquet
    labels/part-<first feedback id>-<last feedback id>.parquet   (with each prediction's seq)
    cursor.json      {"predictions": last seq archived, "labels": last feedback id archived,
                      "format": 2}

A part is written (atomically, by rename) before the cursor moves past it, and is named by the
positions it holds, so a run killed in between writes the same part again on the next run.
Labels archived by an older layout (without ``seq``) are read again from the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlprod.errors import MonitorError
from mlprod.serve.predlog import PredictionLog

BATCH = 250_000  # rows read from the log at a time
_FORMAT = 2  # label parts carry their prediction's seq, model version and time
# What a feature column is stored as: numbers as DOUBLE, anything else as text.
FeatureTypes = Mapping[str, str]  # feature -> "DOUBLE" | "VARCHAR"


@dataclass
class Ingested:
    """What one ingest added: the new predictions' windows and the newly labelled ids."""

    predictions: int = 0
    labels: int = 0
    # model_name, model_version, variant, prediction_time, seq of every new prediction.
    new_rows: list[pa.Table] = field(default_factory=list)
    labelled_ids: list[str] = field(default_factory=list)
    # model_name, model_version, prediction_time of the predictions newly labelled.
    labelled_rows: list[pa.Table] = field(default_factory=list)


class Archive:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cursor_file = self.folder / "cursor.json"

    def cursor(self) -> dict[str, int]:
        if not self._cursor_file.exists():
            return {"predictions": 0, "labels": 0, "format": _FORMAT}
        data: dict[str, int] = json.loads(self._cursor_file.read_text())
        if data.get("format") != _FORMAT:
            for part in (self.folder / "labels").glob("*.parquet"):
                part.unlink()
            data = {**data, "labels": 0, "format": _FORMAT}
        return data

    def _save_cursor(self, cursor: dict[str, int]) -> None:
        _atomic_write(self._cursor_file, json.dumps(cursor).encode())

    def ingest(
        self,
        log: PredictionLog,
        feature_types: Callable[[str, str], FeatureTypes],
        batch: int = BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> Ingested:
        """Copy the predictions and labels stored since the last ingest."""
        result = Ingested()
        cursor = self.cursor()
        con = duckdb.connect()
        try:
            while True:
                rows = log.monitor_rows(cursor["predictions"], batch)
                if rows.num_rows == 0:
                    break
                for (name, version), part in _by_model(rows).items():
                    typed = _typed(con, part, feature_types(name, version))
                    first, last = part["seq"][0].as_py(), part["seq"][-1].as_py()
                    folder = self.folder / "predictions" / _safe(name) / _safe(version)
                    _write_parquet(typed, folder / f"part-{first:012d}-{last:012d}.parquet")
                result.new_rows.append(
                    rows.select(
                        ["model_name", "model_version", "variant", "prediction_time", "seq"]
                    )
                )
                result.predictions += rows.num_rows
                cursor["predictions"] = int(rows["seq"][-1].as_py())
                self._save_cursor(cursor)
                if progress is not None:
                    progress(rows.num_rows)
            while True:
                labels = log.monitor_labels(cursor["labels"], batch)
                if labels.num_rows == 0:
                    break
                first, last = labels["feedback_id"][0].as_py(), labels["feedback_id"][-1].as_py()
                path = self.folder / "labels" / f"part-{first:012d}-{last:012d}.parquet"
                _write_parquet(
                    labels.drop_columns(["model_name", "model_version", "prediction_time"]), path
                )
                result.labels += labels.num_rows
                result.labelled_ids.extend(labels["prediction_id"].to_pylist())
                result.labelled_rows.append(
                    labels.select(["model_name", "model_version", "prediction_time"])
                )
                cursor["labels"] = int(last)
                self._save_cursor(cursor)
        finally:
            con.close()
        return result

    def prediction_glob(self, model_name: str, version: str) -> str | None:
        folder = self.folder / "predictions" / _safe(model_name) / _safe(version)
        return str(folder / "*.parquet") if any(folder.glob("*.parquet")) else None

    def label_glob(self) -> str | None:
        folder = self.folder / "labels"
        return str(folder / "*.parquet") if any(folder.glob("*.parquet")) else None

    def versions(self) -> list[tuple[str, str]]:
        """(model name, version) of every archived prediction, as stored."""
        root = self.folder / "predictions"
        found = []
        for model in sorted(root.glob("*")) if root.exists() else []:
            for version in sorted(model.glob("*")):
                if any(version.glob("*.parquet")):
                    found.append((_unsafe(model.name), _unsafe(version.name)))
        return found


def _by_model(rows: pa.Table) -> dict[tuple[str, str], pa.Table]:
    keys = pa.Table.from_arrays(
        [rows["model_name"], rows["model_version"]], names=["model_name", "model_version"]
    )
    groups = keys.group_by(["model_name", "model_version"]).aggregate([])
    out: dict[tuple[str, str], pa.Table] = {}
    for name, version in zip(
        groups["model_name"].to_pylist(), groups["model_version"].to_pylist(), strict=True
    ):
        mask = pc.and_(pc.equal(rows["model_name"], name), pc.equal(rows["model_version"], version))
        out[(name, version)] = rows.filter(mask)
    return out


def _typed(con: duckdb.DuckDBPyConnection, part: pa.Table, types: FeatureTypes) -> pa.Table:
    """The rows with their features JSON parsed into one typed column per feature."""
    base = part.drop_columns(["features", "model_name", "model_version"])
    if not types:
        return base
    structure = json.dumps(dict(types))
    con.register("rows_part", part)
    try:
        parsed = con.sql(
            "SELECT json_transform(features, ?) AS features FROM rows_part", params=[structure]
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise MonitorError(f"the logged feature values cannot be read: {exc}") from None
    finally:
        con.unregister("rows_part")
    return base.append_column("features", parsed["features"])


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _safe(name: str) -> str:
    """A model name or version as one folder name (percent-encoding anything unusual)."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in name)


def _unsafe(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        if name[i] == "%":
            out.append(chr(int(name[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)
