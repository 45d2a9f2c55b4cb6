"""The ``deploy:`` section of ``mlprod.yaml``: an experiment between registered model versions.

.. code-block:: yaml

    deploy:
      experiment: flights-ab
      assign_by: tailnum            # sticky: the same plane always gets the same variant
      variants:                     # the first is the control (answers when another fails)
        - {name: control, model: flights@champion, weight: 50}
        - {name: challenger, model: flights/4, weight: 50}
      shadows: [{name: next, model: flights/5}]   # scored and logged, never answered
      guardrails: {max_error_rate: 0.01}          # judged at each rollout step

Without the section, ``mlprod serve`` serves one model. The server turns this section into a
``RoutingPolicy`` (:mod:`mlprod.serve.routing.policy`) at start; the admin API and
``mlprod rollout`` change the live policy later without editing the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from mlprod.project.base import Strict

NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"
MODEL = r"^[A-Za-z][A-Za-z0-9_.-]*(?:@[A-Za-z_][A-Za-z0-9_]*|/[0-9]+)?$"


def _name(value: str) -> str:
    if not re.match(NAME, value):
        raise ValueError(
            f"invalid name '{value}': start with a letter, then letters, digits, '_' or '-'"
        )
    return value


Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra={"pattern": NAME})]


class VariantConfig(Strict):
    """A registered model version taking part in the experiment."""

    name: Name = Field(description="The variant's name, recorded with each prediction.")
    model: str = Field(
        description="NAME@ALIAS (flights@champion) or NAME/VERSION (flights/4).",
        json_schema_extra={"pattern": MODEL},
    )
    weight: float = Field(1.0, ge=0, description="Share of traffic (normalised over variants).")

    @field_validator("model")
    @classmethod
    def _model_reference(cls, value: str) -> str:
        if not re.match(MODEL, value.strip()):
            raise ValueError(
                f"invalid model '{value}': name a model as NAME@ALIAS (flights@champion) or "
                "NAME/VERSION (flights/4)"
            )
        return value.strip()


class GuardrailsConfig(Strict):
    """What each rollout step must keep, judged on the step's live traffic against the control."""

    min_requests: int = Field(200, ge=1, description="Requests per step before it is judged.")
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Challenger scoring failures per request."
    )
    max_p99_ratio: float = Field(1.5, gt=0, description="Challenger p99 latency / control p99.")
    max_score_psi: float = Field(
        0.2, ge=0, description="PSI of the challenger's scores against its training reference."
    )


def repeated_names(names: Iterable[str]) -> list[str]:
    """The names given more than once, sorted: every variant and shadow needs its own."""
    seen = list(names)
    return sorted({name for name in seen if seen.count(name) > 1})


class DeployConfig(Strict):
    """An experiment: served variants with weights, shadows, and how requests are assigned."""

    experiment: Name = Field(description="The experiment's name, recorded with each prediction.")
    assign_by: str | None = Field(
        None,
        description="A request field for sticky assignment (e.g. tailnum); records without "
        "it, or with null, are assigned at random.",
    )
    salt: str | None = Field(None, description="Hash salt (default: the experiment name).")
    variants: list[VariantConfig] = Field(
        min_length=1, description="The served variants; the first is the control."
    )
    shadows: list[VariantConfig] = Field(
        default_factory=list, description="Scored and logged after the answer, never returned."
    )
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)

    @model_validator(mode="after")
    def _names_and_weights(self) -> DeployConfig:
        repeated = repeated_names(v.name for v in (*self.variants, *self.shadows))
        if repeated:
            raise ValueError(
                f"variant name(s) {', '.join(repeated)} used more than once; give every "
                "variant and shadow its own name"
            )
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("the variants' weights sum to 0; give one a weight above 0")
        return self
