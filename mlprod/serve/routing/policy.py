"""The routing policy: which model versions answer, in what proportions, and which are only
shadowed. Immutable and JSON-serialisable, so a policy can be stored as a revision, sent through
the admin API and swapped into a running server as one value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mlprod.errors import ConfigError
from mlprod.project.deploy import DeployConfig, repeated_names
from mlprod.serve.deployment import parse_model_reference

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: a registered model (``flights@champion``, ``flights/4``)."""

    name: str
    model: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"invalid variant name '{self.name}': start with a letter, then letters, "
                "digits, '_' or '-'"
            )
        parse_model_reference(self.model)  # raises a ConfigError naming the model
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(
                f"variant '{self.name}' has weight {self.weight}; expected a number >= 0"
            )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "weight": self.weight}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Variant:
        return cls(str(data["name"]), str(data["model"]), float(data.get("weight", 1.0)))


@dataclass(frozen=True)
class RoutingPolicy:
    """The served variants (the FIRST is the control, which answers when another one fails),
    the shadows (scored and logged, never answered), and how requests are assigned."""

    experiment: str
    variants: tuple[Variant, ...]
    shadows: tuple[Variant, ...] = ()
    assign_by: str | None = None  # a request field for sticky assignment (e.g. tailnum)
    salt: str | None = None  # default: the experiment name
    revision: int = 0  # bumped by every change (the routing store sets it)

    def __post_init__(self) -> None:
        if not _NAME.match(self.experiment):
            raise ConfigError(
                f"invalid experiment name '{self.experiment}': start with a letter, then "
                "letters, digits, '_' or '-'"
            )
        if not self.variants:
            raise ConfigError(f"experiment '{self.experiment}' needs at least one variant")
        repeated = repeated_names(v.name for v in (*self.variants, *self.shadows))
        if repeated:
            raise ConfigError(
                f"experiment '{self.experiment}' names variant(s) {', '.join(repeated)} more "
                "than once; give every variant and shadow its own name"
            )
        if sum(v.weight for v in self.variants) <= 0:
            raise ConfigError(
                f"the variants of experiment '{self.experiment}' have weights summing to 0; "
                "give at least one served variant a weight above 0"
            )

    @property
    def control(self) -> Variant:
        """The first variant: answers for a variant that fails."""
        return self.variants[0]

    @property
    def salt_text(self) -> str:
        return self.salt if self.salt is not None else self.experiment

    @property
    def models(self) -> tuple[str, ...]:
        """Every model reference the policy needs loaded, in order, without repeats."""
        return tuple(dict.fromkeys(v.model for v in (*self.variants, *self.shadows)))

    def with_revision(self, revision: int) -> RoutingPolicy:
        return replace(self, revision=revision)

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "variants": [v.to_json() for v in self.variants],
            "shadows": [v.to_json() for v in self.shadows],
            "assign_by": self.assign_by,
            "salt": self.salt,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingPolicy:
        return cls(
            experiment=str(data["experiment"]),
            variants=tuple(Variant.from_json(v) for v in data["variants"]),
            shadows=tuple(Variant.from_json(v) for v in data.get("shadows") or ()),
            assign_by=data.get("assign_by"),
            salt=data.get("salt"),
            revision=int(data.get("revision", 0)),
        )


def policy_from_config(deploy: DeployConfig) -> RoutingPolicy:
    """The policy a ``deploy:`` section declares (revision 0: nothing changed it yet)."""
    return RoutingPolicy(
        experiment=deploy.experiment,
        variants=tuple(Variant(v.name, v.model, v.weight) for v in deploy.variants),
        shadows=tuple(Variant(v.name, v.model, v.weight) for v in deploy.shadows),
        assign_by=deploy.assign_by,
        salt=deploy.salt,
    )
