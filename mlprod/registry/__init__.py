"""The MLflow side of mlprod: training runs, registered model versions and their aliases.

Importing this package does not import MLflow; each operation does, when it runs.
"""

from mlprod.registry._store import using_tracking_uri
from mlprod.registry.models import list_models, promote, resolve, rollback, show_model
from mlprod.registry.tracking import RunRecord, log_training_run, tracking_uri_for

__all__ = [
    "RunRecord",
    "list_models",
    "log_training_run",
    "promote",
    "resolve",
    "rollback",
    "show_model",
    "tracking_uri_for",
    "using_tracking_uri",
]
