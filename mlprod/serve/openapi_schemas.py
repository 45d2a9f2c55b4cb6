"""What the OpenAPI document says each route takes and answers.

Request bodies are read by hand (see :mod:`mlprod.serve.bodies`), so their schemas are given
to FastAPI as ``openapi_extra``; the record schema is generated from the model's request
fields, so ``/docs``, generated clients and schemathesis see the real field names and types.
Answers are pydantic models, used for the documentation only: routes build their JSON
directly, which is faster than validating what the code itself made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from mlprod.features.requests import RequestField
from mlprod.serve.v2_protocol import DATATYPES, OUTPUTS

_JSON_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "timestamp": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
}


def field_schema(field: RequestField) -> dict[str, Any]:
    schema = dict(_JSON_TYPES[field.type])
    if field.nullable:
        schema["type"] = [schema["type"], "null"]
    if field.description:
        schema["description"] = field.description
    return schema


def record_schema(fields: Sequence[RequestField]) -> dict[str, Any]:
    """One prediction request record: every request field, nothing else."""
    return {
        "type": "object",
        "title": "Record",
        "properties": {f.name: field_schema(f) for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def json_body(schema: dict[str, Any], description: str, **more: Any) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON request body (and other media types)."""
    content = {"application/json": {"schema": schema}, **more}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def predict_body(fields: Sequence[RequestField], max_records: int) -> dict[str, Any]:
    record = record_schema(fields)
    return {
        "anyOf": [record, {"type": "array", "items": record, "maxItems": max_records}],
    }


def mlflow_body(fields: Sequence[RequestField], max_records: int) -> dict[str, Any]:
    """The four shapes of MLflow's scoring protocol, each with optional ``params``."""
    record = record_schema(fields)
    records = {"type": "array", "items": record, "maxItems": max_records}
    names = [f.name for f in fields]
    column_values = {
        "type": "object",
        "properties": {
            f.name: {"type": "array", "items": field_schema(f), "maxItems": max_records}
            for f in fields
        },
        "required": names,
        "additionalProperties": False,
    }
    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"enum": names}, "uniqueItems": True},
            "data": {"type": "array", "items": {"type": "array"}, "maxItems": max_records},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    params = {"type": "object", "description": "ignored: an mlprod model takes no parameters"}

    def shape(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {key: value, "params": params},
            "required": [key],
            "additionalProperties": False,
        }

    return {
        "anyOf": [
            shape("dataframe_split", split),
            shape("dataframe_records", records),
            shape("inputs", {"anyOf": [column_values, records]}),
            shape("instances", {"anyOf": [records, column_values]}),
        ]
    }


def v2_infer_body(fields: Sequence[RequestField]) -> dict[str, Any]:
    parameters = {"type": "object", "additionalProperties": True}
    tensor = {
        "type": "object",
        "properties": {
            "name": {"enum": [f.name for f in fields]},
            "datatype": {"enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            "parameters": parameters,
            "data": {"type": "array"},
        },
        "required": ["name", "datatype", "shape"],
        "additionalProperties": False,
    }
    output = {
        "type": "object",
        "properties": {"name": {"enum": list(OUTPUTS)}, "parameters": parameters},
        "required": ["name"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": parameters,
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": output},
        },
        "required": ["inputs"],
        "additionalProperties": False,
    }


def events_body(max_records: int) -> dict[str, Any]:
    event = {"type": "object", "description": "one row of the source, by column name"}
    return {"anyOf": [event, {"type": "array", "items": event, "maxItems": max_records}]}


def feedback_body(max_records: int) -> dict[str, Any]:
    label = {"type": "boolean", "description": "the outcome that was observed"}
    by_id = {
        "type": "object",
        "title": "FeedbackById",
        "properties": {"prediction_id": {"type": "string", "minLength": 1}, "label": label},
        "required": ["prediction_id", "label"],
        "additionalProperties": False,
    }
    by_keys = {
        "type": "object",
        "title": "FeedbackByKeys",
        "properties": {
            "keys": {"type": "object"},
            "prediction_time": {"type": "string", "format": "date-time"},
            "label": label,
        },
        "required": ["keys", "prediction_time", "label"],
        "additionalProperties": False,
    }
    item = {"anyOf": [by_id, by_keys]}
    return {"anyOf": [item, {"type": "array", "items": item, "maxItems": max_records}]}


# --- answers (documentation only) ---------------------------------------------------------


class PredictionOut(BaseModel):
    prediction_id: str
    score: float = Field(description="calibrated probability of the positive class")
    decision: bool = Field(description="score at or above the model's decision threshold")
    model_name: str
    model_version: str
    prediction_time: str = Field(description="ISO 8601 time the features were computed as of")
    keys: dict[str, Any]


class PredictAnswer(BaseModel):
    predictions: list[PredictionOut]


class MlflowAnswer(BaseModel):
    predictions: list[float] = Field(description="the calibrated probability of each record")


class Problem(BaseModel):
    record: int | None = Field(description="position of the record in the request")
    field: str = Field(description="the field at fault ('' for the record as a whole)")
    message: str


class ErrorDetail(BaseModel):
    status: int
    message: str
    problems: list[Problem]


class ErrorAnswer(BaseModel):
    error: ErrorDetail


class V2ErrorAnswer(BaseModel):
    error: str


class EventsAnswer(BaseModel):
    applied: int = Field(description="events that were new to the online store")
    received: int


class FeedbackAnswer(BaseModel):
    applied: int
    duplicates: int
    unmatched: list[int] = Field(description="positions of items that matched no prediction")


class HealthAnswer(BaseModel):
    status: str


class ReadyAnswer(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="component -> 'ok' or what is wrong")
    freshness: dict[str, str | None] = Field(
        description="source -> ISO time of the latest event applied online"
    )


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferAnswer(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


def errors(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, in the shape of its protocol."""
    model = V2ErrorAnswer if v2 else ErrorAnswer
    return {status: {"model": model} for status in statuses}
