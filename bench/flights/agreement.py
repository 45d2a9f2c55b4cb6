"""Agreement: every feature column of one method's matrix compared with another's.

The speed figures only count if the three methods build the same matrix; this checks it
column by column, after sorting by ``flight_id``, within ``RTOL`` / ``ATOL`` for floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .settings import ATOL, RTOL


@dataclass
class ColumnDiff:
    column: str
    other: str
    nulls: int = 0  # null on one side only
    values: int = 0  # both present, outside tolerance
    max_abs: float = 0.0
    max_rel: float = 0.0
    example: str = ""
    missing: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing and self.nulls == 0 and self.values == 0

    def describe(self) -> str:
        if self.missing:
            return f"{self.column}: missing in {self.other}"
        return (
            f"{self.column} vs {self.other}: {self.nulls} null mismatches, {self.values} value "
            f"mismatches (max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}); "
            f"e.g. {self.example}"
        )


def _sorted(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, [("flight_id", "ascending")]))


def _family(kind: pa.DataType) -> str:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return "number"


def compare_column(
    name: str, ref: pa.ChunkedArray, got: pa.ChunkedArray, ids: np.ndarray, other: str
) -> ColumnDiff:
    diff = ColumnDiff(name, other)
    ref_null = ref.is_null().to_numpy(zero_copy_only=False)
    got_null = got.is_null().to_numpy(zero_copy_only=False)
    one_null = ref_null != got_null
    diff.nulls = int(one_null.sum())
    both = ~ref_null & ~got_null
    family = _family(ref.type)
    if family in ("string", "bool"):
        a = pc.cast(ref, pa.string()).to_numpy(zero_copy_only=False)
        b = pc.cast(got, pa.string()).to_numpy(zero_copy_only=False)
        bad = both & (a != b)
        diff.values = int(bad.sum())
    else:
        if family == "timestamp":
            a = (
                pc.cast(pc.cast(ref, pa.timestamp("us")), pa.int64())
                .to_numpy(zero_copy_only=False)
                .astype(float)
            )
            b = (
                pc.cast(pc.cast(got, pa.timestamp("us")), pa.int64())
                .to_numpy(zero_copy_only=False)
                .astype(float)
            )
        else:
            a = pc.cast(ref, pa.float64()).to_numpy(zero_copy_only=False)
            b = pc.cast(got, pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            gap = np.where(both, np.abs(a - b), 0.0)
            scale = np.maximum(np.abs(a), np.abs(b))
            bad = both & (gap > RTOL * scale + ATOL)
            rel = np.where(both & (scale > 0), gap / np.where(scale > 0, scale, 1.0), 0.0)
        diff.values = int(bad.sum())
        if both.any():
            diff.max_abs = float(gap.max())
            diff.max_rel = float(rel.max())
    wrong = one_null | bad
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        diff.example = f"flight_id {ids[i]}: mlprod={ref[i].as_py()!r}, {other}={got[i].as_py()!r}"
    return diff


def compare(ref: pa.Table, got: pa.Table, other: str) -> list[ColumnDiff]:
    ref, got = _sorted(ref), _sorted(got)
    ids = ref.column("flight_id").to_numpy()
    if ref.num_rows != got.num_rows or not np.array_equal(ids, got.column("flight_id").to_numpy()):
        return [
            ColumnDiff(
                "flight_id",
                other,
                values=abs(ref.num_rows - got.num_rows) or 1,
                example=f"{ref.num_rows} vs {got.num_rows} rows",
            )
        ]
    diffs = []
    for name in ref.column_names:
        if name == "flight_id":
            continue
        if name not in got.column_names:
            diffs.append(ColumnDiff(name, other, missing=True))
            continue
        diffs.append(compare_column(name, ref.column(name), got.column(name), ids, other))
    return diffs


def suspects(diffs: list[ColumnDiff]) -> list[str]:
    by_column: dict[str, dict[str, bool]] = {}
    for d in diffs:
        by_column.setdefault(d.column, {})[d.other] = d.ok
    suspects = []
    for column, seen in by_column.items():
        references_agree = seen.get("pandas (vs hand SQL)", True)
        if seen.get("hand SQL") is False and seen.get("pandas") is False and references_agree:
            suspects.append(column)
    return suspects
