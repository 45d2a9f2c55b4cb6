"""The ``registry:`` section of mlprod.yaml: where training runs and model versions are kept.

By default an MLflow store inside the project (a SQLite database under the store); a team
that trains on one machine and serves on others points every machine at one MLflow tracking
server instead (``registry: {tracking_uri: http://mlflow:5000}``). ``train.tracking_uri``, the
older spelling, is still read; both given with different values is refused, since either
could be the one meant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from mlprod.errors import ConfigError
from mlprod.project.base import Strict

if TYPE_CHECKING:
    from mlprod.project.config import ProjectConfig


class RegistryConfig(Strict):
    """The MLflow tracking store and model registry of the project."""

    tracking_uri: str | None = Field(
        None,
        min_length=1,
        description="Any MLflow tracking URI: an MLflow server (http://host:5000), a database "
        "URL, a folder. Default: MLFLOW_TRACKING_URI, else a SQLite store inside the project "
        "store. A server's model artefacts are downloaded into a local cache to be scored.",
    )


def configured_tracking_uri(config: ProjectConfig) -> str | None:
    """The tracking URI the project sets: ``registry.tracking_uri``, else its alias
    ``train.tracking_uri``, else None (the environment or the default decides)."""
    alias = config.train.tracking_uri if config.train else None
    return config.registry.tracking_uri or alias


def check_registry(config: ProjectConfig, file: str) -> None:
    """Refuse ``registry.tracking_uri`` and its alias ``train.tracking_uri`` set apart."""
    alias = config.train.tracking_uri if config.train else None
    chosen = config.registry.tracking_uri
    if chosen and alias and chosen != alias:
        raise ConfigError(
            f"{file}: registry.tracking_uri ({chosen!r}) and train.tracking_uri ({alias!r}) "
            "name different tracking stores; train.tracking_uri is the older spelling of "
            "registry.tracking_uri: keep only registry.tracking_uri"
        )
