"""Where alert transitions go: a webhook, a JSON-lines file, stderr.

Sending never raises past the monitor: an alert that could not be delivered is returned as a
:class:`Failure` and logged, and the monitor carries on (its state already says the alert
fired, so it is not sent again; the failure is what tells someone to look).

A webhook gets one JSON POST per event (the event's ``to_dict()``). A connection error, a
timeout, a 408, a 429 or a 5xx answer is tried again after ``backoff``, doubling each time, at
most ``retries`` times; any other 4xx is final (a wrong URL does not get better). Once a
webhook has failed every attempt for one event, the events after it in the same call get one
attempt each, so that a dead receiver costs one backoff sequence, not one per alert.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mlprod.monitor.alerts import AlertEvent
from mlprod.project.monitoring import FileSink, Sink, StderrSink, WebhookSink

logger = logging.getLogger("mlprod.monitor")
_RETRIED = frozenset({408, 429})


@dataclass(frozen=True)
class Failure:
    """An event a sink did not take."""

    sink: str  # "webhook https://host/…", "file PATH"
    event: AlertEvent
    attempts: int
    error: str

    def line(self) -> str:
        tries = "attempt" if self.attempts == 1 else "attempts"
        return (
            f"alert {self.event.rule} ({self.event.kind}) not delivered to {self.sink} after "
            f"{self.attempts} {tries}: {self.error}"
        )


def send(events: Sequence[AlertEvent], sinks: Iterable[Sink], project_dir: Path) -> list[Failure]:
    """Send ``events`` to every sink; return (and log) what could not be delivered."""
    failures: list[Failure] = []
    if not events:
        return failures
    for sink in sinks:
        if isinstance(sink, WebhookSink):
            failures += _post_all(events, sink)
        elif isinstance(sink, FileSink):
            failures += _append(events, sink, project_dir)
        elif isinstance(sink, StderrSink):
            for event in events:
                sys.stderr.write(event.line() + "\n")
            sys.stderr.flush()
    for failure in failures:
        logger.warning("%s", failure.line())
    return failures


def webhook_name(url: str) -> str:
    """The webhook for messages: scheme, host and port only, as the path of many webhooks
    (Slack's, for one) is their secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    path = "/…" if parts.path.strip("/") or parts.query else ""
    return f"webhook {parts.scheme}://{host}{port}{path}"


def _post_all(events: Sequence[AlertEvent], sink: WebhookSink) -> list[Failure]:
    name = webhook_name(sink.url)
    failures: list[Failure] = []
    retries = sink.retries
    with httpx.Client(timeout=sink.timeout.total_seconds()) as client:
        for event in events:
            attempts, error = _post(client, sink, event, retries)
            if error is not None:
                failures.append(Failure(name, event, attempts, error))
                retries = 0  # the receiver is down: one attempt for each event left
    return failures


def _post(
    client: httpx.Client, sink: WebhookSink, event: AlertEvent, retries: int
) -> tuple[int, str | None]:
    """Attempts made, and the last error (None when delivered)."""
    wait = sink.backoff.total_seconds()
    error: str | None = None
    for attempt in range(1, retries + 2):
        try:
            answer = client.post(sink.url, json=event.to_dict())
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if answer.is_success:
                return attempt, None
            error = f"HTTP {answer.status_code}"
            if answer.status_code < 500 and answer.status_code not in _RETRIED:
                return attempt, error
        if attempt <= retries:
            time.sleep(wait)
            wait *= 2
    return retries + 1, error


def _append(events: Sequence[AlertEvent], sink: FileSink, project_dir: Path) -> list[Failure]:
    path = Path(project_dir) / sink.path  # an absolute sink.path stays as it is
    text = "".join(json.dumps(event.to_dict(), sort_keys=True) + "\n" for event in events)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        return [Failure(f"file {path}", event, 1, str(exc)) for event in events]
    return []
