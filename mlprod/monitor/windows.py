"""Monitoring windows: which window each archived prediction falls in, their summaries, and
where the summaries are kept.

A time window (``1h``, ``1d``) holds the predictions whose prediction time falls in it, aligned
to the Unix epoch in UTC; a count window holds ``count`` consecutive predictions of one model
version and variant in the order they were logged. Each version and variant has its own windows.
A window is summarised again only when new predictions or labels reach it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import MonitorError
from mlprod.monitor.archive import Archive
from mlprod.monitor.reference import ReferenceProfile
from mlprod.monitor.summarise import summarise
from mlprod.monitor.summary import WindowSummary
from mlprod.monitor.values import WindowKey
from mlprod.project.monitoring import CountWindow

_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)

# The rows of the wanted windows, in log order (so that sums add up in the same order, bit for
# bit, however the parts are scanned); the window is the prediction time's epoch
# bucket (time windows) or the row's rank within its variant in log order (count windows).
_TIME_ROWS = """WITH rows AS (
    SELECT p.*, (epoch_us(p.prediction_time) // ?) * ? AS position FROM read_parquet(?) AS p
)
SELECT * FROM rows WHERE ? OR list_contains(?, position)"""
_COUNT_ROWS = """WITH rows AS (
    SELECT p.*, (row_number() OVER (PARTITION BY coalesce(p.variant, '') ORDER BY p.seq) - 1)
        // ? AS position
    FROM read_parquet(?) AS p
)
SELECT * FROM rows WHERE ? OR list_contains(?, position) ORDER BY seq"""
# The latest label of each prediction: latest observed, then latest stored.
_LABELS = """SELECT prediction_id, arg_max(label, (observed_at, feedback_id)) AS label
FROM read_parquet(?) WHERE ? OR list_contains(?, prediction_id) GROUP BY prediction_id"""
# Past this many rows, the labels are read whole rather than looked up by id.
_LOOKUP_LIMIT = 50_000


@dataclass(frozen=True)
class WindowSpec:
    """``1h``-style time windows (``length``) or ``count``-row windows."""

    length: timedelta | None = None
    count: int | None = None

    @classmethod
    def of(cls, window: timedelta | CountWindow) -> WindowSpec:
        if isinstance(window, CountWindow):
            return cls(count=window.count)
        if window <= timedelta(0):
            raise MonitorError(f"monitor.window must be a positive duration, got {window}")
        return cls(length=window)

    @property
    def name(self) -> str:
        if self.count is not None:
            return f"count:{self.count}"
        assert self.length is not None
        return f"time:{int(self.length / _US)}"

    def position_of(self, time: datetime) -> int:
        """The window position (time windows: its start in microseconds) of a time."""
        assert self.length is not None
        length = int(self.length / _US)
        return (int((time - _EPOCH) / _US) // length) * length


@dataclass(frozen=True)
class Window:
    key: WindowKey
    position: int  # start in epoch microseconds (time windows) or index (count windows)
    summary: WindowSummary


def summarise_windows(
    archive: Archive,
    model_name: str,
    version: str,
    profile: ReferenceProfile,
    spec: WindowSpec,
    positions: Iterable[int] | None = None,
) -> list[Window]:
    """Summaries of the windows at ``positions`` (None: every window) of one model version."""
    glob = archive.prediction_glob(model_name, version)
    if glob is None:
        return []
    wanted = None if positions is None else sorted(set(positions))
    rows = _rows(glob, archive.label_glob(), spec, wanted)
    if rows.num_rows == 0:
        return []
    variants = pc.fill_null(rows["variant"], "")
    codes = pc.dictionary_encode(variants).combine_chunks()
    names = codes.dictionary.to_pylist()
    position = np.asarray(rows["position"].to_numpy(), dtype=np.int64)
    code = np.asarray(codes.indices.to_numpy(), dtype=np.int64)
    positions, position_index = np.unique(position, return_inverse=True)
    keys, window = np.unique(position_index * len(names) + code, return_inverse=True)
    unique = np.stack([positions[keys // len(names)], keys % len(names)], axis=1)
    summaries = summarise(rows, window, profile)
    times = np.asarray(pc.cast(rows["prediction_time"], pa.int64()).to_numpy(), dtype=np.int64)
    first = np.full(len(unique), np.iinfo(np.int64).max)
    last = np.full(len(unique), np.iinfo(np.int64).min)
    np.minimum.at(first, window, times)
    np.maximum.at(last, window, times)
    out = []
    for index, (pos, variant_code) in enumerate(unique.tolist()):
        if spec.length is not None:
            start = _EPOCH + pos * _US
            end = start + spec.length
        else:
            start = _EPOCH + int(first[index]) * _US
            end = _EPOCH + int(last[index]) * _US + _US
        key = WindowKey(start, end, model_name, version, names[variant_code])
        out.append(Window(key, int(pos), summaries[index]))
    return out


def _rows(glob: str, labels: str | None, spec: WindowSpec, wanted: list[int] | None) -> pa.Table:
    """The rows of the wanted windows (None: all), each with its window position and label."""
    if spec.length is not None:
        length = int(spec.length / _US)
        query, params = _TIME_ROWS, [length, length, glob]
    else:
        query, params = _COUNT_ROWS, [spec.count, glob]
    con = duckdb.connect()
    try:
        rows = _in_log_order(
            con.sql(query, params=[*params, wanted is None, wanted or []]).to_arrow_table()
        )
        if labels is None:
            return rows.append_column("label", pa.nulls(rows.num_rows, pa.bool_()))
        ids = rows["prediction_id"]
        everything = wanted is None or rows.num_rows > _LOOKUP_LIMIT
        found = con.sql(
            _LABELS, params=[labels, everything, [] if everything else ids.to_pylist()]
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise MonitorError(f"the monitoring archive cannot be read: {exc}") from None
    finally:
        con.close()
    where = pc.index_in(ids, value_set=found["prediction_id"].combine_chunks())
    return rows.append_column("label", pc.take(found["label"].combine_chunks(), where))


def _in_log_order(rows: pa.Table) -> pa.Table:
    """The rows by ``seq``: a scan of the parts gives that order already (checked, cheaply);
    a parallel scan may not, and sums must add up in one order."""
    seq = np.asarray(rows["seq"].to_numpy(), dtype=np.int64)
    if seq.size < 2 or bool(np.all(seq[1:] > seq[:-1])):
        return rows
    return rows.take(pa.array(np.argsort(seq, kind="stable")))
