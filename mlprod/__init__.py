"""mlprod: take a tabular model through its whole life in production, as one tool.

``Project`` and ``BuildSummary`` are imported on first use, so that importing a submodule
(the REST server's workers, a subprocess in a test, the CLI's start) does not pay for the
whole training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlprod.errors import (
    ConfigError,
    ContractError,
    FeatureError,
    MlprodError,
    SourceError,
)

if TYPE_CHECKING:
    from mlprod.api import BuildSummary, Project

__all__ = [
    "BuildSummary",
    "ConfigError",
    "ContractError",
    "FeatureError",
    "MlprodError",
    "Project",
    "SourceError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Project", "BuildSummary"):
        from mlprod import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlprod' has no attribute {name!r}")
