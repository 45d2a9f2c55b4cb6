"""The request schema: what a caller must send to get a prediction.

A prediction reads the event's own row (the spine source's columns) only through the spine
keys, the expressions of ``expr`` features and the keys of lookups, as-of joins and
aggregates. Those columns, with the types their contracts declare, are the request fields;
everything else comes from the sources (batch) or the online store (live). Columns known only
at their row's availability (``known: at_availability``) can never be request fields: the
feature graph refuses any feature that reads them from the event's own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlprod.features.graph import FeatureGraph
from mlprod.project.config import ColumnType


@dataclass(frozen=True)
class RequestField:
    """One field of a prediction request, typed by the spine source's contract."""

    name: str
    type: ColumnType
    nullable: bool
    key: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable, "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestField:
        return cls(data["name"], data["type"], bool(data["nullable"]), bool(data.get("key")))


def request_fields(graph: FeatureGraph, names: list[str] | None = None) -> list[RequestField]:
    """The fields a request needs for the features ``names`` (all by default): the spine keys
    first, then the columns the features read, in the order they are first read."""
    spine = graph.config.spine
    contracts = graph.config.sources[spine.source].columns
    read = graph.spine_columns_read(names)
    fields = [RequestField(k, contracts[k].type, contracts[k].nullable, True) for k in spine.keys]
    fields += [
        RequestField(c, contracts[c].type, contracts[c].nullable)
        for c in read
        if c not in spine.keys
    ]
    return fields
