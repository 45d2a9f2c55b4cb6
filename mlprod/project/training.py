"""The ``train:`` section of mlprod.yaml: splits, candidate models, tuning and business value."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema, model_validator

from mlprod.errors import did_you_mean, one_of
from mlprod.project.base import Duration, Identifier, Strict
from mlprod.project.model_params import LIGHTGBM_MAIN, PARAMETERS


class OutOfTimeSplit(Strict):
    """Train, then a gap, validation, a gap, and the test window: the default and the honest one.

    Each window holds the events whose prediction time falls in it; an event is used for
    training (or validation) only if its label was known before the next window starts.
    """

    method: Literal["out_of_time"] = "out_of_time"
    train_start: datetime | None = Field(None, description="First prediction time to train on.")
    train_end: datetime = Field(description="Training events are before this time.")
    valid_end: datetime = Field(description="Validation events are before this time.")
    test_end: datetime | None = Field(None, description="Test events are before this time.")
    gap: Duration = Field(timedelta(0), description="Left out between consecutive windows.")

    @model_validator(mode="after")
    def _ordered(self) -> OutOfTimeSplit:
        bounds = [("train_end", self.train_end), ("valid_end", self.valid_end)]
        if self.train_start is not None:
            bounds.insert(0, ("train_start", self.train_start))
        if self.test_end is not None:
            bounds.append(("test_end", self.test_end))
        for (a, first), (b, second) in pairwise(bounds):
            if first + (self.gap if a != "train_start" else timedelta(0)) >= second:
                raise ValueError(
                    f"{b} ({second:%Y-%m-%d %H:%M}) must come after {a} ({first:%Y-%m-%d %H:%M})"
                    + (" plus the gap" if a != "train_start" else "")
                    + "; the windows would overlap"
                )
        return self


class RandomSplit(Strict):
    """A random (stratified) split, for data whose rows do not depend on time."""

    method: Literal["random"]
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    stratify: bool = True
    seed: int = 0


class KFoldSplit(Strict):
    """k-fold cross-validation, for data whose rows do not depend on time.

    A random (stratified) share of the rows is the sealed test set; the others are cut into
    ``folds`` parts, and each part is validated by models trained on the rest.
    """

    method: Literal["kfold"]
    folds: int = Field(5, ge=2, le=20, description="How many parts to validate on in turn.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    stratify: bool = True
    seed: int = 0


class TimeSeriesCVSplit(Strict):
    """Cross-validation forward in time: each fold trains on everything before its validation
    window (less the gap) and validates on that window; the sealed test window comes last.

    The validation windows are consecutive and end at ``valid_end``. Each is ``valid_length``
    long, or, by default, the time from the first event (or ``train_start``) to ``valid_end``
    cut into ``folds + 1`` equal parts, the first of which only trains.
    """

    method: Literal["time_series_cv"]
    folds: int = Field(4, ge=2, le=20, description="How many validation windows.")
    train_start: datetime | None = Field(None, description="First prediction time to train on.")
    valid_end: datetime = Field(description="The last validation window ends here.")
    valid_length: Duration | None = Field(None, description="Length of each validation window.")
    test_end: datetime | None = Field(None, description="Test events are before this time.")
    gap: Duration = Field(timedelta(0), description="Left out before each validation window.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeSeriesCVSplit:
        if self.valid_length is not None and self.valid_length <= timedelta(0):
            raise ValueError("valid_length must be longer than zero")
        if self.train_start is not None and self.train_start >= self.valid_end:
            raise ValueError(
                f"valid_end ({self.valid_end:%Y-%m-%d %H:%M}) must come after train_start "
                f"({self.train_start:%Y-%m-%d %H:%M})"
            )
        if self.test_end is not None and self.valid_end + self.gap >= self.test_end:
            raise ValueError(
                f"test_end ({self.test_end:%Y-%m-%d %H:%M}) must come after valid_end "
                f"({self.valid_end:%Y-%m-%d %H:%M}) plus the gap; the windows would overlap"
            )
        return self


Split = OutOfTimeSplit | RandomSplit | KFoldSplit | TimeSeriesCVSplit


ModelKind = Literal["lightgbm", "logistic", "random_forest", "svm", "mlp"]


class SearchRange(Strict):
    """A tuning range: numbers between ``low`` and ``high`` (``log`` for scale parameters)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


class ModelSpec(Strict):
    """One candidate model: a kind, fixed parameters and the ranges to tune."""

    kind: ModelKind
    name: Identifier | None = Field(None, description="Defaults to the kind.")
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchRange | list[Any]] = Field(
        default_factory=dict, description="Ranges or lists of choices that tuning explores."
    )

    @model_validator(mode="after")
    def _known_parameters(self) -> ModelSpec:
        # A misspelt parameter would be passed on and ignored (LightGBM warns, then trains
        # with its default) or fail only after the features are built: refuse it here.
        known = PARAMETERS[self.kind]
        for section, given in (("params", self.params), ("search", self.search)):
            for name in given:
                if name not in known:
                    # Suggest LightGBM's own name for a parameter before one of its aliases.
                    hint = did_you_mean(name, LIGHTGBM_MAIN) if self.kind == "lightgbm" else ""
                    raise ValueError(
                        f"{section}: unknown {self.kind} parameter '{name}'"
                        f"{hint or did_you_mean(name, known)}; {_known_names(self.kind, known)}"
                    )
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


def _known_names(kind: str, known: frozenset[str]) -> str:
    if kind == "lightgbm":
        return "see https://lightgbm.readthedocs.io/en/latest/Parameters.html for its parameters"
    return f"{kind} takes {one_of(known, limit=len(known))}"


class TuningConfig(Strict):
    trials: int = Field(10, ge=1, description="Trials per candidate model.")
    timeout: Duration | None = Field(None, description="Wall-time budget per candidate model.")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0


class EnsembleConfig(Strict):
    top: int = Field(3, ge=2, description="How many of the best candidates to combine.")
    methods: tuple[Literal["average", "stacking"], ...] = ("average",)


OUTCOMES = ("tp", "fp", "fn", "tn")


def value_column(outcome: str) -> str:
    """The training matrix's column for an outcome given as an expression: never a feature."""
    return f"value_{outcome}"


def _amount(value: Any) -> float | str:
    """A number (``"1e3"``, a string to YAML, too) or the text of a per-row SQL expression."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("is empty; give a number or a SQL expression such as '0.2 * distance'")
        try:
            number = float(value)
        except ValueError:
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"should be a number or a SQL expression, found {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"should be a finite number, found {value!r}")
    return number


# A number for every row, or a SQL expression over the spine source's columns for one per row.
Amount = Annotated[
    float | str,
    PlainValidator(_amount),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "minLength": 1}]}),
]
_PER_ROW = (
    ": a number, or a DuckDB SQL expression over the spine source's columns for a value per "
    "row (e.g. '0.2 * distance'), which must give a number on every row."
)


class ValueConfig(Strict):
    """What each outcome is worth, to choose the decision threshold. All four are required:
    an outcome left out would silently count as worth nothing.

    Each is a number or a row expression over the spine source's columns (fn: "-amount"); the
    training matrix then carries its value per row as a column value_<outcome>, never a feature.
    """

    tp: Amount = Field(description="Acting on a row that turns out positive" + _PER_ROW)
    fp: Amount = Field(description="Acting on a row that turns out negative" + _PER_ROW)
    fn: Amount = Field(description="Not acting on a row that turns out positive" + _PER_ROW)
    tn: Amount = Field(description="Not acting on a row that turns out negative" + _PER_ROW)
    currency: str = Field("", description="Shown next to the amounts in the report.")

    @model_validator(mode="after")
    def _informative(self) -> ValueConfig:
        # Only constants can be judged here; per-row values can make any threshold worth more.
        if not self.expressions() and self.tp == self.fn and self.tn == self.fp:
            raise ValueError(
                "the value matrix makes every threshold worth the same; give tp, fp, fn or tn "
                "a value (e.g. tp: 300, fp: -100)"
            )
        return self

    def expressions(self) -> dict[str, str]:
        """The outcomes given as SQL expressions (one value per row), by outcome."""
        return {o: v for o in OUTCOMES if isinstance(v := getattr(self, o), str)}


class TrainConfig(Strict):
    """How models are trained, chosen and registered."""

    split: Split = Field(discriminator="method")
    models: list[ModelSpec] = Field(min_length=1)
    tuning: TuningConfig = TuningConfig()
    ensemble: EnsembleConfig | None = None
    value: ValueConfig | None = None
    calibration: Literal["auto", "isotonic", "sigmoid", "none"] = "auto"
    registry_name: Identifier | None = Field(None, description="Defaults to the project name.")
    tracking_uri: str | None = Field(
        None,
        description="The older spelling of registry.tracking_uri, still read; give one of the two.",
    )
    seed: int = 0
