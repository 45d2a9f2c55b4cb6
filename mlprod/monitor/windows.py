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

# The rows of the wanted windows, each with its window position: the prediction time's epoch
# bucket (time windows) or the row's rank within its variant in log order (count windows).
# (The prediction's id and storage time are not needed: labels join by seq.)
_COLUMNS = "p.* EXCLUDE (prediction_id, predicted_at)"
_TIME_ROWS = f"""SELECT {_COLUMNS}, (epoch_us(p.prediction_time) // ?) * ? AS position
FROM read_parquet(?) AS p"""
# ... the same, reading only the parts whose times reach [from, to) (by their statistics).
_TIME_RANGE_ROWS = _TIME_ROWS + " WHERE p.prediction_time >= ? AND p.prediction_time < ?"
_COUNT_ROWS = f"""SELECT {_COLUMNS},
    (row_number() OVER (PARTITION BY coalesce(p.variant, '') ORDER BY p.seq) - 1) // ? AS position
FROM read_parquet(?) AS p"""
_WANTED = "SELECT * FROM ({rows}) WHERE ? OR list_contains(?, position)"
# The latest label of each prediction in a range of seq: latest observed, then latest stored.
# (observed_at, feedback_id) packed into one HUGEINT orders as the pair does, at half the cost.
_LABELS = """SELECT seq,
    arg_max(label, epoch_us(observed_at)::HUGEINT * 18446744073709551616 + feedback_id) AS label
FROM read_parquet(?) WHERE seq BETWEEN ? AND ? GROUP BY seq"""


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
    if spec.count is not None:  # a count window spans its first to just after its last time
        times = np.asarray(pc.cast(rows["prediction_time"], pa.int64()).to_numpy(), np.int64)
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
        if wanted:
            span = [_EPOCH + wanted[0] * _US, _EPOCH + wanted[-1] * _US + spec.length]
            query, params = _TIME_RANGE_ROWS, [*params, *span]
    else:
        query, params = _COUNT_ROWS, [spec.count, glob]
    con = duckdb.connect()
    try:
        rows = con.sql(
            _WANTED.format(rows=query), params=[*params, wanted is None, wanted or []]
        ).to_arrow_table()
        seq = np.asarray(rows["seq"].to_numpy(), dtype=np.int64)
        if labels is None or seq.size == 0:
            return rows.append_column("label", pa.nulls(rows.num_rows, pa.bool_()))
        found = con.sql(_LABELS, params=[labels, int(seq.min()), int(seq.max())]).to_arrow_table()
    except duckdb.Error as exc:
        raise MonitorError(f"the monitoring archive cannot be read: {exc}") from None
    finally:
        con.close()
    return rows.append_column("label", _aligned(seq, found))


def _aligned(seq: np.ndarray, labels: pa.Table) -> pa.Array:
    """The label of each row (null when it has none), from labels keyed by ``seq``."""
    order = np.argsort(seq, kind="stable")
    ordered = seq[order]
    keys = np.asarray(labels["seq"].to_numpy(), dtype=np.int64)
    at = np.minimum(np.searchsorted(ordered, keys), max(ordered.size - 1, 0))
    hit = ordered[at] == keys
    known = np.zeros(seq.size, dtype=bool)
    value = np.zeros(seq.size, dtype=bool)
    rows = order[at[hit]]
    known[rows] = True
    value[rows] = np.asarray(labels["label"].to_numpy(zero_copy_only=False), dtype=bool)[hit]
    return pa.array(value, mask=~known)
