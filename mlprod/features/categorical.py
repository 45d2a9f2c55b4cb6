"""Categorical features: levels learned from training rows, applied the same way at scoring.

Levels seen at least ``min_count`` times (at most ``max_levels`` of them, most frequent first)
are kept; the other training levels become the ``rare`` level, and a value never seen in
training becomes the ``unknown`` level. Nulls stay null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlprod.project.config import CategoricalSpec


@dataclass(frozen=True)
class CategoryEncoder:
    """A fitted level table for one feature."""

    spec: CategoricalSpec
    levels_: tuple[str, ...]
    rare_levels_: tuple[str, ...]

    @classmethod
    def fit(cls, values: pa.Array | pa.ChunkedArray, spec: CategoricalSpec) -> CategoryEncoder:
        counts = pc.value_counts(pc.drop_null(pc.cast(values, pa.string())))
        pairs = sorted(
            (
                (str(v), int(c))
                for v, c in zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
            ),
            key=lambda item: (-item[1], item[0]),
        )
        kept = [v for v, c in pairs if c >= spec.min_count]
        if spec.max_levels is not None:
            kept = kept[: spec.max_levels]
        kept_set = set(kept)
        rare = sorted(v for v, _ in pairs if v not in kept_set)
        return cls(spec, tuple(sorted(kept)), tuple(rare))

    def transform(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Map values to the fitted levels (rare and unknown values to their own levels)."""
        strings = pc.cast(values, pa.string())
        kept = pc.is_in(strings, value_set=pa.array(self.levels_, pa.string()))
        rare = pc.is_in(strings, value_set=pa.array(self.rare_levels_, pa.string()))
        other = pc.if_else(rare, pa.scalar(self.spec.rare), pa.scalar(self.spec.unknown))
        result = pc.if_else(kept, strings, other)
        return pc.if_else(pc.is_null(strings), pa.scalar(None, pa.string()), result)

    def levels_by_value(self) -> dict[str, str]:
        """The level each training value maps to, as ``transform`` maps it: a kept level to
        itself, a rare one to the rare level; any other value maps to the unknown level."""
        mapping = dict.fromkeys(self.rare_levels_, self.spec.rare)
        mapping.update((level, level) for level in self.levels_)  # kept wins, as in transform
        return mapping

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels_),
            "rare_levels": list(self.rare_levels_),
            "rare": self.spec.rare,
            "unknown": self.spec.unknown,
        }
