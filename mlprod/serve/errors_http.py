"""One JSON error shape for every failed request, so a client parses every failure one way.

mlprod's own routes (``/predict``, ``/invocations``, ``/events``, ``/feedback``, ...) answer::

    {"error": {"status": 422, "message": "record 0, field 'origin': ...",
               "problems": [{"record": 0, "field": "origin", "message": "..."}]}}

``problems`` lists one entry per wrong field of a record (``record`` is null for a problem
outside the records, such as a query parameter); it is empty when the request fails as a whole.
The Open Inference Protocol v2 routes (``/v2`` and below) answer ``{"error": "..."}`` instead,
as that protocol prescribes.

Statuses: 400 a body that is not JSON (or a v2 request that does not fit), 404 an unknown route,
model or source, 405 a wrong method, 413 a body over the byte limit, 415 a body that is not
JSON or CSV, 422 a JSON body of the wrong shape, more records than allowed, or records that
break the request schema, 500 a bug (a generic message; the traceback is logged on the server
only).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlprod.errors import ContractError, InputError, MlprodError
from mlprod.serve.contract import FieldProblem, RequestRejected

logger = logging.getLogger("mlprod.serve")

_V2_PREFIX = "/v2"


class HttpError(Exception):
    """A request the server refuses, with the status and message the client gets."""

    def __init__(
        self,
        status: int,
        message: str,
        problems: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)
        self.headers = headers


def is_v2_path(path: str) -> bool:
    """True for the Open Inference Protocol routes, which have their own error shape."""
    return path == _V2_PREFIX or path.startswith(_V2_PREFIX + "/")


def error_response(
    path: str,
    status: int,
    message: str,
    problems: Sequence[dict[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error answer for a request to ``path``: the v2 shape below ``/v2``, ours elsewhere."""
    if is_v2_path(path):
        text = message
        if len(problems) > 1:  # the v2 shape has one string: give every problem in it
            text = "; ".join(_problem_text(p) for p in problems)
        body: dict[str, Any] = {"error": text}
    else:
        body = {"error": {"status": status, "message": message, "problems": list(problems)}}
    return Response(
        json.dumps(body, separators=(",", ":"), default=str).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _problem_text(problem: dict[str, Any]) -> str:
    if problem.get("record") is None:
        return f"'{problem['field']}': {problem['message']}"
    if not problem.get("field"):
        return f"record {problem['record']}: {problem['message']}"
    return f"record {problem['record']}, field '{problem['field']}': {problem['message']}"


def rejected_problems(problems: Sequence[FieldProblem]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in problems]


def status_of(error: MlprodError, path: str) -> int:
    """The status of one of mlprod's errors: 422 for records that break the schema (400 on the
    v2 routes, as KServe answers invalid inputs), 400 for any other mlprod error."""
    if isinstance(error, RequestRejected | InputError | ContractError):
        return 400 if is_v2_path(path) else 422
    return 400


def crash_response(path: str, error: BaseException) -> Response:
    """A 500 for a bug: the client gets an id to quote, the log gets the traceback."""
    incident = uuid.uuid4().hex[:12]
    logger.error("unexpected error %s while serving %s", incident, path, exc_info=error)
    message = f"internal server error (incident {incident}); the server log has the details"
    return error_response(path, 500, message)


def install_error_handlers(app: FastAPI) -> None:
    """Turn every failure FastAPI, Starlette or mlprod raises into the one error shape."""

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return error_response(request.url.path, exc.status, exc.message, exc.problems, exc.headers)

    async def on_mlprod_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MlprodError)
        path = request.url.path
        problems = rejected_problems(exc.problems) if isinstance(exc, RequestRejected) else []
        return error_response(path, status_of(exc, path), str(exc), problems)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
            message = f"no route {request.method} {path}; the routes are listed at /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {path}; use {allowed}"
        else:
            message = str(exc.detail)
        return error_response(path, exc.status_code, message, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [
            {
                "record": None,
                "field": ".".join(str(part) for part in error.get("loc", ())[1:]),
                "message": str(error.get("msg", "invalid")),
            }
            for error in exc.errors()
        ]
        message = _problem_text(problems[0]) if problems else "invalid request"
        return error_response(request.url.path, 422, message, problems)

    app.add_exception_handler(HttpError, on_http_error)
    app.add_exception_handler(MlprodError, on_mlprod_error)
    app.add_exception_handler(StarletteHTTPException, on_starlette_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
