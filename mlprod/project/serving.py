"""The deployment sections of ``mlprod.yaml``: the online store, the prediction log, the server.

Embedded by default (SQLite files under the store, which other processes can read while the
server writes); production points the same project at Redis and PostgreSQL:

.. code-block:: yaml

    online: {kind: redis, url: redis://127.0.0.1:6379/0}
    log: {kind: postgres, url: "postgresql://mlprod@db:5432/prod", schema: scoring}
    serve: {max_records: 1000, max_body_bytes: 1MB}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlprod.project.base import Identifier, Strict


class OnlineSpec(Strict):
    """Where the online features live (``online:``)."""

    kind: Literal["sqlite", "redis", "memory"] = "sqlite"
    path: str = Field(
        ".mlprod/online.sqlite", description="The SQLite file, relative to the project."
    )
    url: str | None = Field(None, description="redis://host:port/db (kind: redis).")
    namespace: Identifier | None = Field(
        None, description="Prefix of this project's keys in Redis (default: the project name)."
    )

    @model_validator(mode="after")
    def _url_only_for_redis(self) -> OnlineSpec:
        if self.url and self.kind != "redis":
            raise ValueError(
                f"online.url is set but online.kind is '{self.kind}'; add kind: redis or remove url"
            )
        return self


class LogSpec(Strict):
    """Where predictions and their outcomes are stored (``log:``)."""

    kind: Literal["sqlite", "postgres"] = "sqlite"
    path: str = Field(
        ".mlprod/predictions.sqlite", description="The SQLite file, relative to the project."
    )
    url: str | None = Field(None, description="postgresql://user@host:port/db (kind: postgres).")
    schema_: Identifier = Field("public", alias="schema", description="The PostgreSQL schema.")

    @model_validator(mode="after")
    def _url_only_for_postgres(self) -> LogSpec:
        if self.kind == "postgres" and not self.url:
            raise ValueError(
                "log.kind is 'postgres' but log.url is missing; add "
                "url: postgresql://user@host:port/db"
            )
        if self.kind == "sqlite" and self.url:
            raise ValueError(
                "log.url is set but log.kind is 'sqlite'; add kind: postgres or remove url"
            )
        return self


class ServeConfig(Strict):
    """Limits of the REST server (``serve:``)."""

    max_records: int = Field(1000, ge=1, description="Records accepted in one request.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted, in bytes."
    )
