"""Reading request bodies safely, and mlprod's own body shapes (``/predict``, ``/events``,
``/feedback``).

Bodies are read by hand rather than through pydantic models: the size limit is enforced while
reading (a declared ``Content-Length`` is checked first, then the bytes actually received),
JSON is decoded once with the standard library (``NaN`` and ``Infinity`` refused), and records
are only checked to be JSON objects — the :class:`~mlprod.serve.contract.ScoringService`
validates their fields against the request schema, so checking them here too would cost time
and could disagree. Nothing in a request is ever executed or unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mlprod.serve.contract import FeedbackItem, FieldProblem
from mlprod.serve.errors_http import HttpError

JSON_TYPES = ("application/json",)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, f"Content-Length must be a number of bytes, got '{declared}'")
        if int(declared) > limit:
            raise HttpError(413, _too_large(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, _too_large(size, limit, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    got = f"at least {size}" if at_least else str(size)
    return f"the request body has {got} bytes; at most {limit} are accepted (send smaller batches)"


def media_type(request: Request) -> tuple[str | None, dict[str, str]]:
    """The request's media type, lower case, and its parameters (``charset``, ...)."""
    header = request.headers.get("content-type")
    if header is None:
        return None, {}
    mime, *params = header.split(";")
    pairs = (p.partition("=") for p in params)
    return mime.strip().lower(), {k.strip().lower(): v.strip().strip('"') for k, _, v in pairs}


def require_json(request: Request) -> None:
    """Refuse (415) a body declared as something else than UTF-8 JSON; no Content-Type at all is
    taken as JSON, as plain HTTP clients often send none."""
    mime, params = media_type(request)
    if mime is None:
        return
    if mime not in JSON_TYPES and not (mime.startswith("application/") and mime.endswith("+json")):
        raise HttpError(
            415, f"expected Content-Type application/json, got '{request.headers['content-type']}'"
        )
    check_charset(params)


def check_charset(params: Mapping[str, str]) -> None:
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise HttpError(415, f"expected a UTF-8 body, got charset '{charset}'")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; send null for a missing number")


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; a malformed one is a 400 that says where it breaks."""
    if not body.strip():
        raise HttpError(400, "the request body is empty; expected JSON")
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise HttpError(
            400,
            f"the request body is not valid JSON: {error.msg} "
            f"(line {error.lineno}, column {error.colno})",
        ) from None
    except UnicodeDecodeError:
        raise HttpError(400, "the request body is not valid UTF-8 text") from None
    except ValueError as error:
        raise HttpError(400, f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise HttpError(400, "the request body is not valid JSON: nested too deeply") from None


async def read_json(request: Request, limit: int) -> Any:
    require_json(request)
    return decode_json(await read_body(request, limit))


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default)


def dumps(body: Any) -> bytes:
    return _ENCODER.encode(body).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer built without FastAPI's encoder, which costs more than the whole route."""
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def describe(value: Any) -> str:
    """A JSON value as a message shows it: ``'abc'``, ``12``, ``true``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return "a list" if isinstance(value, list) else "an object"


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``2013-01-01T05:00:00Z``, with an offset, naive meaning UTC, or a
    date), or None if ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def time_message(value: Any) -> str:
    return f"expected an ISO 8601 time such as 2013-01-01T05:00:00Z, got {describe(value)}"


def parse_query_time(value: str | None, name: str) -> datetime | None:
    """A time given as a query parameter; a malformed one is a 422 naming the parameter."""
    if value is None:
        return None
    parsed = iso_time(value)
    if parsed is None:
        message = time_message(value)
        raise HttpError(
            422, f"'{name}': {message}", [{"record": None, "field": name, "message": message}]
        )
    return parsed


def reject(problems: list[FieldProblem]) -> HttpError:
    """A 422 for records of the wrong shape: the first problem in the message, all listed."""
    first = problems[0]
    where = f"record {first.record}" + (f", field '{first.field}'" if first.field else "")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return HttpError(422, f"{where}: {first.message}{more}", [p.to_dict() for p in problems])


def check_count(count: int, limit: int, status: int = 422) -> None:
    """Refuse a batch over the limit: 422 like any body that breaks its schema (``maxItems``),
    where 413 stays for bodies over the byte limit."""
    if count > limit:
        raise HttpError(
            status,
            f"the request holds {count} records; at most {limit} are accepted per request "
            "(send smaller batches)",
        )


def records_of(body: Any, limit: int) -> list[dict[str, Any]]:
    """The records of a body that is one record (a JSON object) or a list of them."""
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list):
        raise HttpError(
            422, f"expected a record (a JSON object) or a list of records, got {describe(body)}"
        )
    return record_list(body, limit)


def record_list(items: list[Any], limit: int, where: str = "") -> list[dict[str, Any]]:
    """A list of records, each a JSON object (``where``: which part of a body holds them)."""
    check_count(len(items), limit)
    inside = f" in '{where}'" if where else ""
    not_records = [
        FieldProblem(i, "", f"expected a record (a JSON object){inside}, got {describe(item)}")
        for i, item in enumerate(items)
        if not isinstance(item, dict)
    ]
    if not_records:
        raise reject(not_records)
    return items


FEEDBACK_FIELDS = ("keys", "label", "prediction_id", "prediction_time")
_FEEDBACK_LIST = ", ".join(f"'{f}'" for f in FEEDBACK_FIELDS)


def feedback_items(body: Any, limit: int) -> list[FeedbackItem]:
    """Outcomes named by prediction id, or by keys and prediction time; one problem per field."""
    items = records_of(body, limit)
    problems: list[FieldProblem] = []
    parsed: list[FeedbackItem] = []
    for i, item in enumerate(items):
        found = _feedback_item(i, item, problems)
        if found is not None:
            parsed.append(found)
    if problems:
        raise reject(problems)
    return parsed


def _feedback_item(
    i: int, item: dict[str, Any], problems: list[FieldProblem]
) -> FeedbackItem | None:
    before = len(problems)

    def problem(field: str, message: str) -> None:
        problems.append(FieldProblem(i, field, message))

    for name in sorted(set(item) - set(FEEDBACK_FIELDS)):
        problem(name, f"unknown field; feedback has {_FEEDBACK_LIST}")
    label = item.get("label")
    if "label" not in item:
        problem("label", "missing; give the outcome as true or false")
    elif not isinstance(label, bool):
        problem("label", f"expected true or false, got {describe(label)}")
    prediction_id, keys, when = item.get("prediction_id"), item.get("keys"), None
    by_id = "prediction_id" in item
    by_keys = "keys" in item or "prediction_time" in item
    if by_id == by_keys:
        which = "not both" if by_id else "got neither"
        problem(
            "",
            f"name the prediction by 'prediction_id' or by 'keys' and 'prediction_time', {which}",
        )
    elif by_id:
        if not (isinstance(prediction_id, str) and prediction_id):
            problem("prediction_id", f"expected a non-empty string, got {describe(prediction_id)}")
    else:
        if "keys" not in item:
            problem("keys", "missing; give the key values the prediction was made for")
        elif not isinstance(keys, dict):
            problem("keys", f"expected an object of key values, got {describe(keys)}")
        if "prediction_time" not in item:
            problem("prediction_time", "missing; give the time the prediction was made as of")
        else:
            when = iso_time(item["prediction_time"])
            if when is None:
                problem("prediction_time", time_message(item["prediction_time"]))
    if len(problems) > before:
        return None
    return FeedbackItem(
        label=bool(label), prediction_id=prediction_id, keys=keys, prediction_time=when
    )
