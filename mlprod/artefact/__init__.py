"""The one versioned model artefact: saved once, loaded everywhere, refused when tampered with.

This layer sits below training: it defines what a fitted pipeline is (:class:`FittedPipeline`,
with its :class:`InputSchema`) and how it is saved and loaded, and knows the classes training
puts into it only by name (:mod:`mlprod.artefact.classes`).
"""

from mlprod.artefact.directory import (
    ARTEFACT_FORMAT,
    library_versions,
    load_artefact,
    read_manifest,
    save_artefact,
)
from mlprod.artefact.pipeline import Calibration, FittedPipeline, Scorer
from mlprod.artefact.reference import reference_statistics
from mlprod.artefact.schema import FeatureColumn, InputSchema
from mlprod.errors import ArtefactError

__all__ = [
    "ARTEFACT_FORMAT",
    "ArtefactError",
    "Calibration",
    "FeatureColumn",
    "FittedPipeline",
    "InputSchema",
    "Scorer",
    "library_versions",
    "load_artefact",
    "read_manifest",
    "reference_statistics",
    "save_artefact",
]
