"""Helpers for tests that assert a user-facing error: its class and its exact message."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mlprod.errors import MlprodError


@contextmanager
def raises(kind: type[MlprodError], message: str) -> Iterator[None]:
    """Expect exactly this error class with exactly this message."""
    with pytest.raises(kind, match=f"^{re.escape(message)}$") as info:
        yield
    assert type(info.value) is kind


def feature(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in config["features"] if f["name"] == name)
    return found


def index(config: dict[str, Any], name: str) -> int:
    return next(i for i, f in enumerate(config["features"]) if f["name"] == name)
