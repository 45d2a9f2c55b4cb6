"""What ``/ready`` reports: the service's own checks (the model, the online store, the
prediction log) and, on a server that follows an experiment, the routing store.

The routing store lives in the log's database, but it is a separate connection that a server
needs to follow policy changes and rollouts: a server that cannot read it would keep serving
a policy the fleet has left, so it is not ready either.
"""

from __future__ import annotations

from dataclasses import replace

from mlprod.serve.contract import Readiness, ScoringService
from mlprod.serve.routing.sync import RoutingSync

ROUTING_STORE = "routing_store"


def server_readiness(service: ScoringService, routing: RoutingSync | None) -> Readiness:
    """The service's readiness plus, when ``routing`` is given, a check of its store (one
    cheap read; a failure is reported, never raised, so /ready can answer 503 with it)."""
    readiness = service.readiness()
    if routing is None:
        return readiness
    try:
        routing.routing.store.latest_revision()
        status = "ok"
    except Exception as exc:
        status = str(exc) or type(exc).__name__
    return replace(
        readiness,
        ready=readiness.ready and status == "ok",
        checks={**readiness.checks, ROUTING_STORE: status},
    )
