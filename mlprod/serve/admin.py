"""The admin API: change routing, run rollouts and reload models in a running server.

Routes (every one needs ``Authorization: Bearer <MLPROD_ADMIN_TOKEN>``; they are left out of
the public OpenAPI document and ``/docs``, which describe the scoring API)::

    GET  /admin/routing          the policy served, and the newest stored revision
    PUT  /admin/routing          store a new policy (all servers apply it within a second)
    GET  /admin/rollout          the latest rollout, with its live guardrail measures
    POST /admin/rollout          start one: {"model": "flights/4", "steps": "5,25,50,100",
                                 "every": "10m"}
    POST /admin/rollout/abort    stop the running rollout: all traffic back to the control
    POST /admin/reload           apply the newest policy again, re-resolving aliases
    GET  /admin/audit            the latest audit rows

Security: with no token configured the admin API answers 403 and changes nothing, never opens.
The token given is compared with the configured one in constant time (both hashed to the same
length first, so not even the length leaks); a missing or wrong token gets a bare 401, the same
for both. Every change is written to the audit table with who (the ``X-Actor`` header, else the
peer address), from where (the peer address), when and what; the token, or anything derived
from it, is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mlprod.errors import ConfigError, MlprodError, RolloutError
from mlprod.serve.bodies import json_response, read_json
from mlprod.serve.errors_http import HttpError
from mlprod.serve.routing.policy import RoutingPolicy
from mlprod.serve.routing.rollout import abort_rollout, judge_step, start_rollout
from mlprod.serve.routing.state import RUNNING, Action, RolloutState
from mlprod.serve.routing.sync import RoutingSync

ADMIN_TOKEN_ENV = "MLPROD_ADMIN_TOKEN"
_ACTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@:/+-]{0,99}$")
_MAX_BODY = 64_000
_UNAUTHORIZED = "unauthorized"
MIN_TOKEN_LENGTH = 16  # a shorter token could be guessed by trying


class AdminAuth:
    """The bearer token check. Only a SHA-256 of the token is kept in memory, to compare
    equal-length values; nothing of it is ever written anywhere."""

    def __init__(self, token: str | None) -> None:
        token = (token or "").strip()
        if token and len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{ADMIN_TOKEN_ENV} is {len(token)} characters long; use at least "
                f'{MIN_TOKEN_LENGTH}, e.g. the output of: python -c "import secrets; '
                'print(secrets.token_urlsafe(32))"'
            )
        self._digest = _digest(token) if token else None

    def check(self, request: Request) -> None:
        """Raise 403 when the admin API is disabled, a bare 401 when the token is missing or
        wrong."""
        if self._digest is None:
            raise HttpError(
                403,
                f"the admin API is disabled: start the server with {ADMIN_TOKEN_ENV} set to a "
                "secret token to enable it",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Always compare, also without a token, so that both refusals take the same time.
        same = hmac.compare_digest(_digest(given.strip()), self._digest)
        if not same or scheme.lower() != "bearer" or not given.strip():
            raise HttpError(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _action(request: Request, name: str, detail: dict[str, Any] | None = None) -> Action:
    """Who asked, from where: the ``X-Actor`` header names a person or a tool; the peer
    address is recorded too, and stands for the actor when there is no header."""
    peer = f"{request.client.host}:{request.client.port}" if request.client else None
    actor = request.headers.get("x-actor", "").strip()
    if actor and not _ACTOR.match(actor):
        raise HttpError(
            400,
            "invalid X-Actor header: expected up to 100 letters, digits, spaces or . _ @ : / + -",
        )
    return Action(actor or peer or "unknown", name, detail or {}, peer)


def install_admin_routes(app: FastAPI, auth: AdminAuth, sync: RoutingSync | None) -> None:
    """Add ``/admin/*`` to ``app``. Without routing state (``sync`` None: a server of one model
    without a routing store) the routes that need it answer 409."""

    def routing(request: Request) -> RoutingSync:
        auth.check(request)
        if sync is None:
            raise HttpError(
                409,
                "this server has no routing state: serve a project whose prediction log holds "
                "it (mlprod serve with a deploy: section)",
            )
        return sync

    @app.get("/admin/routing", summary="Admin: the routing policy served", include_in_schema=False)
    async def get_routing(request: Request) -> Response:
        current = routing(request)
        stored = await run_in_threadpool(current.routing.store.latest_revision)
        return _policy_response(current.service.policy, current, stored_revision=stored)

    @app.put(
        "/admin/routing", summary="Admin: store and apply a routing policy", include_in_schema=False
    )
    async def put_routing(request: Request) -> Response:
        current = routing(request)
        body = await read_json(request, _MAX_BODY)
        if not isinstance(body, dict):
            raise HttpError(422, "expected a JSON object: a routing policy")
        try:
            policy = RoutingPolicy.from_json({**body, "revision": 0})  # the store numbers it
        except (KeyError, TypeError, ValueError) as exc:
            raise HttpError(422, f"invalid routing policy: missing or malformed {exc}") from None
        except ConfigError as exc:
            raise HttpError(422, str(exc)) from None
        action = _action(request, "routing.set", {"policy": policy.to_json()})

        def publish() -> RoutingPolicy:
            rollout = current.routing.store.rollout()
            if rollout is not None and rollout.status == RUNNING:
                raise HttpError(
                    409,
                    f"a rollout of {rollout.challenger} is running and sets the routing; abort "
                    "it first (POST /admin/rollout/abort)",
                )
            try:  # load and warm here first: a policy this server cannot serve is not stored
                current.service.apply(policy)
            except MlprodError as exc:
                raise HttpError(422, f"the policy cannot be served: {exc}") from None
            published = current.routing.store.publish(policy, action)
            assert published is not None
            current.apply_latest()
            return published

        return await _answer_applied(publish, current)

    @app.get("/admin/rollout", summary="Admin: the latest rollout", include_in_schema=False)
    async def get_rollout(request: Request) -> Response:
        current = routing(request)
        state = await run_in_threadpool(current.routing.store.rollout)
        if state is None:
            return json_response({"rollout": None})
        live = await run_in_threadpool(live_measures, current, state)
        return json_response({"rollout": state.to_json(), "live": live})

    @app.post(
        "/admin/rollout", summary="Admin: start a rollout", include_in_schema=False, status_code=201
    )
    async def post_rollout(request: Request) -> Response:
        current = routing(request)
        body = await read_json(request, _MAX_BODY)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise HttpError(
                422,
                'expected {"model": "NAME/VERSION", "steps": "5,25,50,100", "every": "10m"}',
            )
        steps = body.get("steps", "5,25,50,100")
        every = body.get("every", "10m")
        experiment = body.get("experiment")
        action = _action(request, "rollout.start")

        def start() -> RolloutState:
            return start_rollout(
                current.routing.store,
                current.routing.registry,
                current.service.policy,
                body["model"],
                steps,
                every,
                current.routing.limits,
                action,
                experiment=experiment,
            )

        try:
            state = await run_in_threadpool(start)
        except RolloutError as exc:
            raise HttpError(409, str(exc)) from None
        try:
            await run_in_threadpool(current.apply_latest)
        except MlprodError as exc:  # the challenger cannot be served: stop before it starts
            reason = f"the challenger cannot be served: {exc}"
            stop = Action(action.actor, "rollout.abort", {"reason": reason}, action.peer)
            await run_in_threadpool(abort_rollout, current.routing.store, stop)
            raise HttpError(422, f"rollout not started: {reason}") from None
        return json_response({"rollout": state.to_json()}, 201)

    @app.post(
        "/admin/rollout/abort", summary="Admin: abort the running rollout", include_in_schema=False
    )
    async def abort(request: Request) -> Response:
        current = routing(request)
        action = _action(request, "rollout.abort")
        try:
            state = await run_in_threadpool(abort_rollout, current.routing.store, action)
        except RolloutError as exc:
            raise HttpError(409, str(exc)) from None
        await run_in_threadpool(current.apply_latest)
        return json_response({"rollout": state.to_json()})

    @app.post(
        "/admin/reload", summary="Admin: apply the routing policy again", include_in_schema=False
    )
    async def reload(request: Request) -> Response:
        current = routing(request)
        action = _action(request, "reload")

        def again() -> RoutingPolicy:
            applied = current.apply_latest(force=True)
            if applied is None:  # nothing stored yet: the configuration's policy, re-resolved
                current.service.apply(current.service.policy)
                applied = current.service.policy
            current.routing.store.audit(
                Action(action.actor, action.action, {"revision": applied.revision}, action.peer)
            )
            return applied

        return await _answer_applied(again, current)

    @app.get("/admin/audit", summary="Admin: the latest audit rows", include_in_schema=False)
    async def audit(request: Request) -> Response:
        current = routing(request)
        try:
            limit = min(max(int(request.query_params.get("limit", "100")), 1), 1000)
        except ValueError:
            raise HttpError(400, "limit must be a whole number from 1 to 1000") from None
        rows = await run_in_threadpool(current.routing.store.audit_trail, limit)
        return json_response({"audit": [row.to_json() for row in rows]})


def _policy_response(policy: RoutingPolicy, sync: RoutingSync, **more: Any) -> Response:
    """A policy, with the revision this server has applied (and ``more``), as the answer."""
    return json_response({"policy": policy.to_json(), "applied_revision": sync.applied, **more})


async def _answer_applied(change: Callable[[], RoutingPolicy], sync: RoutingSync) -> Response:
    """Run ``change`` (blocking) off the event loop; answer with the policy it applied."""
    return _policy_response(await run_in_threadpool(change), sync)


def live_measures(sync: RoutingSync, state: RolloutState) -> dict[str, Any] | None:
    """What the guardrails measure on the running step now (None once it finished)."""
    if state.status != RUNNING:
        return None
    verdict = judge_step(state, sync.routing.log, sync.routing.registry)
    return {
        "judged": verdict.judged,
        "tripped": [n for n, _ in verdict.tripped],
        **verdict.measures,
    }
