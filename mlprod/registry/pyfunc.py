"""An mlprod artefact as an MLflow pyfunc model: MLflow serves it, mlprod's loader reads it.

The artefact directory travels among the model's MLflow artifacts, unchanged; the model's
config names the loader that turns it back into an object with ``predict_proba``
(``"module:function"``, by default mlprod's own). The loader is imported when MLflow loads the
model, not when this module is imported, so a model can be logged before or without it.

This module imports MLflow: import it only when a model is logged or loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from mlprod.errors import RegistryError
from mlprod.registry._store import ARTEFACT_KEY, DEFAULT_LOADER


def import_loader(spec: str) -> Callable[[Path], Any]:
    """The function named by ``"package.module:function"``."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise RegistryError(
            f"invalid artefact loader '{spec}': expected 'package.module:function', "
            f"like '{DEFAULT_LOADER}'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(
            f"cannot load the mlprod artefact: the loader's module '{module_name}' cannot be "
            f"imported ({exc}); install the model's requirements (requirements.txt beside "
            "its MLmodel file) in this environment"
        ) from exc
    loader = getattr(module, function_name, None)
    if not callable(loader):
        raise RegistryError(
            f"cannot load the mlprod artefact: module '{module_name}' has no function "
            f"'{function_name}'; the model was logged for a different version of its loader"
        )
    return loader  # type: ignore[no-any-return]


class ArtefactModel(PythonModel):
    """Predicts P(label = 1) with the mlprod artefact logged among the model's artifacts."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        loader = import_loader(str(config.get("loader", DEFAULT_LOADER)))
        self.artefact_ = loader(Path(context.artifacts[ARTEFACT_KEY]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> npt.NDArray[np.float64]:
        return np.asarray(self.artefact_.predict_proba(model_input), dtype=np.float64)
