"""mlprod: take a tabular model through its whole life in production, as one tool."""

from mlprod.api import BuildSummary, Project
from mlprod.errors import (
    ConfigError,
    ContractError,
    FeatureError,
    MlprodError,
    SourceError,
)

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
