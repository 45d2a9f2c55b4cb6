"""Sizes read the same in the terminal's candidates table and in the HTML report."""

from __future__ import annotations

import pytest

from mlprod.formatting import format_size


@pytest.mark.parametrize(
    ("n_bytes", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (2252, "2.2 KB"),
        (2_306_867, "2.2 MB"),
        (5 * 1024**3, "5.0 GB"),
        (3 * 1024**4, "3072.0 GB"),
    ],
)
def test_sizes_use_binary_units(n_bytes: int, shown: str) -> None:
    assert format_size(n_bytes) == shown
