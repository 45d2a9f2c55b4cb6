"""What a project whose spine has no prediction time may declare.

``spine.time`` and ``spine.label_available_at`` go together: both or neither. Without them the
events do not happen at a time, so nothing that needs one can be computed honestly: as-of
joins and aggregates read rows from before each prediction's time, a lookup into a table
whose rows have times reads the rows known before it, and out-of-time splits cut by it. Each
is refused when the config is loaded, naming what needs the time.
"""

from __future__ import annotations

from mlprod.errors import ConfigError
from mlprod.project.config import AggregateFeature, AsofFeature, LookupFeature, ProjectConfig
from mlprod.project.training import OutOfTimeSplit, TimeSeriesCVSplit

_FIX = "declare spine.time and spine.label_available_at"


def check_times(config: ProjectConfig, file: str = "mlprod.yaml") -> None:
    """Raise ConfigError for a half-declared spine time, or for what needs a time without one."""
    spine = config.spine
    if spine.time is not None and spine.label_available_at is None:
        raise ConfigError(
            f"{file}: spine.label_available_at: required with spine.time (when each outcome "
            "becomes known); for a table without time leave out both"
        )
    if spine.time is None and spine.label_available_at is not None:
        raise ConfigError(
            f"{file}: spine.time: required with spine.label_available_at (the prediction time "
            "each outcome's availability is compared with); for a table without time leave out "
            "both"
        )
    if spine.time is not None:
        return
    for index, feature in enumerate(config.features):
        where = f"{file}: features[{index}]"
        if isinstance(feature, AsofFeature | AggregateFeature):
            raise ConfigError(
                f"{where}: {feature.kind} feature '{feature.name}' reads the rows known before "
                f"each prediction's time, but spine.time is not declared; {_FIX}, or remove "
                "the feature"
            )
        if isinstance(feature, LookupFeature):
            source = config.sources.get(feature.source)
            timed = None if source is None else ("time" if source.time else None)
            if source is not None and source.available_at is not None:
                timed = timed or "available_at"
            if timed:
                raise ConfigError(
                    f"{where}: lookup feature '{feature.name}' reads source '{feature.source}', "
                    f"whose rows have a time (sources.{feature.source}.{timed}), so it needs "
                    f"each prediction's time, but spine.time is not declared; {_FIX}, or remove "
                    "the feature"
                )
    split = config.train.split if config.train else None
    if isinstance(split, OutOfTimeSplit | TimeSeriesCVSplit):
        raise ConfigError(
            f"{file}: train.split.method: '{split.method}' cuts the events by their prediction "
            f"time, but spine.time is not declared; use method: random or kfold, or {_FIX}"
        )
