"""The mlprod classes an artefact may hold, by the stable name its pickle is read with.

A pickle names each class by the module it lived in when the model was saved. Loading looks
an mlprod class up here by its name alone, whatever module the pickle says, so moving a class
to another module means changing its line below, and every saved model still loads. A class
renamed keeps a line under its old name too. Saving refuses an mlprod class that is not here.
"""

from __future__ import annotations

# stable name -> "module:qualname" where the class lives now (imported only when needed).
CLASSES: dict[str, str] = {
    "FittedPipeline": "mlprod.artefact.pipeline:FittedPipeline",
    "InputSchema": "mlprod.artefact.schema:InputSchema",
    "FeatureColumn": "mlprod.artefact.schema:FeatureColumn",
    "Calibrator": "mlprod.train.calibration:Calibrator",
    "EncodedModel": "mlprod.train.ensemble:EncodedModel",
    "Ensemble": "mlprod.train.ensemble:Ensemble",
    "TabularEncoder": "mlprod.train.encoders:TabularEncoder",
    "FittedModel": "mlprod.train.models:FittedModel",
    "CategoryEncoder": "mlprod.features.categorical:CategoryEncoder",
    "CategoricalSpec": "mlprod.project.config:CategoricalSpec",
}
