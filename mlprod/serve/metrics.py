"""Prometheus metrics of one server, and the middleware that times every request.

Each app owns a private ``CollectorRegistry`` (never the global one), so several apps can live
in one process, as they do in tests. Request metrics are labelled by route template
(``/v2/models/{name}/infer``), never by raw path, and by a closed set of methods, so fuzzing
unknown paths or methods cannot blow up the number of series. The online freshness gauges are
refreshed from the service's readiness at each scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlprod.serve.contract import Prediction, Readiness
from mlprod.serve.errors_http import crash_response

logger = logging.getLogger("mlprod.serve")

# Latency from half a millisecond (a cached single prediction) to a second (a large batch).
DURATION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
UNMATCHED = "unmatched"  # the endpoint label of requests no route matched
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServerMetrics:
    """The metrics of one server, in a registry of its own."""

    def __init__(self, model_name: str, model_version: str, run_id: str) -> None:
        self.registry = CollectorRegistry()
        self._hooks: list[Callable[[], None]] = []
        r = self.registry
        self.requests = Counter(
            "mlprod_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "mlprod_http_request_duration_seconds",
            "Time from receiving a request to sending its answer.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mlprod_predictions",
            "Records scored, by model, version and decision.",
            ["model", "version", "decision"],
            registry=r,
        )
        self.score = Histogram(
            "mlprod_score", "Calibrated scores answered.", buckets=SCORE_BUCKETS, registry=r
        )
        info = Gauge(
            "mlprod_model_info",
            "The model served (always 1).",
            ["model", "version", "run_id"],
            registry=r,
        )
        info.labels(model_name, model_version, run_id).set(1)
        self.freshness = Gauge(
            "mlprod_online_freshness_seconds",
            "Seconds since the latest event applied to the online store, by source.",
            ["source"],
            registry=r,
        )
        self.latest_event = Gauge(
            "mlprod_online_latest_event_timestamp_seconds",
            "Unix time of the latest event applied to the online store, by source.",
            ["source"],
            registry=r,
        )
        self._decided = {
            d: self.predictions.labels(model_name, model_version, str(d).lower())
            for d in (True, False)
        }

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"
        self.requests.labels(endpoint, method, str(status)).inc()
        self.duration.labels(endpoint).observe(seconds)

    def observe_predictions(self, predictions: Iterable[Prediction]) -> None:
        for p in predictions:
            self._decided[bool(p.decision)].inc()
            self.score.observe(p.score)

    def observe_readiness(self, readiness: Readiness) -> None:
        now = time.time()
        for source, latest in readiness.freshness.items():
            if latest is None:  # nothing applied yet: no series rather than a made-up age
                for gauge in (self.freshness, self.latest_event):
                    with suppress(KeyError):
                        gauge.remove(source)
                continue
            stamp = (latest if latest.tzinfo else latest.replace(tzinfo=UTC)).timestamp()
            self.latest_event.labels(source).set(stamp)
            self.freshness.labels(source).set(max(0.0, now - stamp))

    def before_scrape(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (cheap, never raising) before each scrape, e.g. to refresh gauges that
        another part of the server owns (monitoring)."""
        self._hooks.append(hook)

    def render(self) -> bytes:
        for hook in self._hooks:
            hook()
        return generate_latest(self.registry)


class ObserveRequests:
    """ASGI middleware: times and counts every request by route template, and turns any
    exception that escaped the routes into a 500 in the error shape (logged with its
    traceback), so no stack trace reaches a client."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception as error:
            status = 500
            if started:  # the answer is half sent: nothing left to do but log
                logger.error("error after answering %s", scope["path"], exc_info=error)
            else:
                await crash_response(scope["path"], error)(scope, receive, send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or UNMATCHED
            seconds = time.perf_counter() - start
            self.metrics.observe_request(endpoint, scope["method"], status, seconds)
