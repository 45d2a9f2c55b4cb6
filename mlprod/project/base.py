"""Building blocks shared by every part of the mlprod.yaml model."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from mlprod.project.durations import EXAMPLES, format_duration, parse_duration

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
Identifier = Annotated[str, Field(pattern=IDENTIFIER)]
Expression = Annotated[str, Field(min_length=1, description="A DuckDB SQL expression.")]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "description": f"A duration, {EXAMPLES}.", "examples": ["7d"]}
    ),
]


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
