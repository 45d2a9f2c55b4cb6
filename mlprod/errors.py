"""The errors mlprod shows to people.

Every failure a user can cause or fix is one of these, with a message that says what failed,
what was expected, what was found and how to fix it. The CLI prints it as one red line and
exits 2; nothing else reaches a user as a traceback unless they ask for ``--debug``::

    MlprodError
    ├── ConfigError        mlprod.yaml is invalid or refers to something that does not exist
    ├── SourceError        a source cannot be read, or is empty
    │   └── ContractError  a source no longer matches its declared schema contract
    ├── FeatureError       a feature cannot be compiled or evaluated
    │   └── UnknownColumnError  an expression reads a column no contract declares
    ├── EmptyMatrixError   no event of the spine is labelled as of the build: nothing to write
    ├── TrainError         a model cannot be trained as configured (windows, labels, ...)
    ├── EvaluationError    a model's scores cannot be evaluated on the labels given
    ├── ArtefactError      a saved model is missing, modified, or made by another mlprod or
    │                      other libraries than this one
    ├── InputError         rows given to a model lack a feature column or have a wrong type
    ├── RegistryError      no such registered model, version or alias, or nothing to roll back
    ├── OnlineStoreError   the online store cannot be reached, or was asked something its
    │                      tables do not allow
    ├── PredictionLogError the prediction log cannot be opened, read or written
    ├── RolloutError       a rollout cannot start, move or stop as asked (one is running, a
    │                      step list is malformed, there is none to abort)
    └── ScoreIOError       a scoring input or output is malformed, missing, or does not fit
                           the scores
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MlprodError(Exception):
    """Base of every error mlprod raises on purpose."""


class ConfigError(MlprodError):
    """The project configuration is invalid."""


class SourceError(MlprodError):
    """A data source cannot be read."""


class ContractError(SourceError):
    """A source's data broke its declared schema contract."""


class FeatureError(MlprodError):
    """A feature definition cannot be compiled or evaluated."""


class UnknownColumnError(FeatureError):
    """An expression reads a column its source's contract does not declare.

    It carries the source and column so that, where the data can be looked at, the message
    can say whether the column is really absent or only missing from the contract.
    """

    def __init__(self, message: str, where: str, source: str, column: str) -> None:
        super().__init__(message)
        self.where = where
        self.source = source
        self.column = column


class EmptyMatrixError(MlprodError):
    """The training matrix would have no rows: no event of the spine has a known label as of
    the build (an ``as_of`` before the data, or a spine filter that keeps nothing)."""


class RegistryError(MlprodError):
    """The model registry cannot do what was asked: an unknown model, version or alias, a
    rollback with no earlier champion, or an artefact that cannot be logged or loaded."""


class EvaluationError(MlprodError):
    """Labels and scores cannot be evaluated (one class only, mismatched lengths, bad scores)."""


class ArtefactError(MlprodError):
    """A model artefact is missing, incomplete, modified, or made with other libraries (or an
    mlprod whose artefact format or major version this one cannot read)."""


class InputError(MlprodError):
    """Rows given to a model do not match its input schema: a feature column is missing or
    holds values of another type than the model was trained on."""


class OnlineStoreError(MlprodError):
    """The online store cannot be reached, or was asked something its tables do not allow."""


class SimulationError(MlprodError):
    """A simulation cannot run as asked: a malformed shift, a server that does not answer or
    an online store that already holds the events to replay."""


class MonitorError(MlprodError):
    """Monitoring cannot read, summarise or alert as configured."""


class PredictionLogError(MlprodError):
    """The prediction log cannot be opened, read or written."""


class RolloutError(MlprodError):
    """A rollout cannot start, move or stop as asked, or its state cannot be stored."""


class ScoreIOError(MlprodError):
    """A scoring input or output is malformed, missing, or does not fit the scores."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(choices: Iterable[str], limit: int = 12) -> str:
    """A sorted, cut list of choices for a message: ``'a', 'b', 'c' (and 4 more)``."""
    items = sorted(set(choices))
    text = ", ".join(f"'{c}'" for c in items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


class TrainError(MlprodError):
    """A model cannot be trained as configured (windows, labels, model settings)."""
