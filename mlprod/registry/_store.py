"""What every registry operation shares: clients, the SQLite default, and MLflow's global state.

MLflow is imported inside the functions: ``import mlflow`` takes over a second, and commands that
never touch the registry should not pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlprod.errors import MlprodError, RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# The name of the artefact directory among the pyfunc model's artifacts, and the default loader.
ARTEFACT_KEY = "artefact"
DEFAULT_LOADER = "mlprod.artefact:load_artefact"
# The model's path inside its run (MLflow 3 calls it the logged model's ``name``).
MODEL_NAME_IN_RUN = "model"

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# MLflow's switches for what it writes on its own: artifact progress bars, and the links to a
# tracking server's pages of each run (printed to stdout, where they would break --json).
_QUIET_VARIABLES = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def client_for(uri: str) -> MlflowClient:
    """A client for the tracking store and model registry at ``uri`` (no global state)."""
    from mlflow import MlflowClient

    _quiet_store_creation()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# What MLflow logs at INFO the first time it creates (or migrates) a database store: not news
# for someone who ran `mlprod train`.
_STORE_CREATION = ("Creating initial MLflow database tables", "Updating database tables")


def _quiet_store_creation() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropLines) for f in logger.filters):
        logger.addFilter(_DropLines(_STORE_CREATION))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other kind of store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path else None


def store_is_missing(uri: str) -> bool:
    """True for a SQLite store whose file does not exist yet (reading must not create it)."""
    path = sqlite_path(uri)
    return path is not None and not path.exists()


@contextmanager
def mlflow_errors(uri: str, action: str) -> Iterator[None]:
    """The one translation of MLflow's failures: inside the block, an MLflow exception becomes
    a RegistryError of one line that says what could not be done; our own errors (and any
    other library's) pass through unchanged."""
    try:
        yield
    except MlprodError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow"):
            raise
        message = str(getattr(exc, "message", exc)).strip().splitlines()
        first = message[0] if message else type(exc).__name__
        raise RegistryError(f"MLflow at {uri} could not {action}: {first}") from exc


def error_code(exc: Exception) -> str:
    """MLflow's error code of an exception (``RESOURCE_DOES_NOT_EXIST``, ...), or ''."""
    return str(getattr(exc, "error_code", ""))


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (runs, ``models:/`` URIs) at ``uri`` for a block.

    Restores exactly what was there before, including the ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` environment variables, which ``mlflow.set_tracking_uri`` overwrites
    (and MLflow's own ``_use_tracking_uri`` unsets on exit).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_environment = {name: os.environ.get(name) for name in _URI_VARIABLES}
    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]
        mlflow.set_registry_uri(saved_registry)  # type: ignore[arg-type]
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def quiet_mlflow(logger: str = "mlflow", prefixes: tuple[str, ...] = ()) -> Iterator[None]:
    """Hide MLflow's artifact progress bars and its links to a server's run pages, and the
    lines of ``logger`` that start with ``prefixes`` (a logger's filter sees only the records
    logged on it, so name the emitter)."""
    saved = {name: os.environ.get(name) for name in _QUIET_VARIABLES}
    os.environ.update(_QUIET_VARIABLES)
    noise = _DropLines(prefixes)
    logging.getLogger(logger).addFilter(noise)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(noise)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)
