"""Alert rules over monitoring windows, their stored state (SQLite and the real PostgreSQL),
and the sinks: a real webhook receiver on loopback, a JSON-lines file, stderr."""

from __future__ import annotations

import itertools
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE
from psycopg import sql

from mlprod.monitor.alert_state import (
    AlertStateStore,
    PostgresAlertStore,
    SqliteAlertStore,
    open_alert_store,
)
from mlprod.monitor.alerts import AlertEvent, evaluate, firing
from mlprod.monitor.sinks import send
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.project.loading import parse_config
from mlprod.project.monitoring import AlertRule, FileSink, StderrSink, WebhookSink

T0 = datetime(2013, 9, 1)
HOUR = timedelta(hours=1)
FEATURE = "carrier_delay_7d"


def window(i: int, version: str = "3", variant: str = "") -> WindowKey:
    return WindowKey(T0 + i * HOUR, T0 + (i + 1) * HOUR, "flights", version, variant)


def values(
    series: list[float | None],
    metric: str = "psi",
    subject: str = FEATURE,
    version: str = "3",
    variant: str = "",
) -> list[MetricValue]:
    return [
        MetricValue(window(i, version, variant), metric, subject, v) for i, v in enumerate(series)
    ]


def rule(**fields: Any) -> AlertRule:
    given = {"name": "drift", "metric": "psi", "feature": FEATURE, "above": 0.2, **fields}
    return AlertRule.model_validate(given)


def closed(metrics: list[MetricValue]) -> set[WindowKey]:
    return {m.window for m in metrics}


def reference(limit: float, windows: int, series: list[float | None]) -> list[tuple[str, int]]:
    """The transitions of an ``above`` rule over a whole series at once, written plainly:
    (kind, index of the window)."""
    found, run, on = [], 0, False
    for i, v in enumerate(series):
        if v is None:
            continue
        run = run + 1 if v > limit else 0
        if run >= windows and not on:
            found.append(("firing", i))
            on = True
        elif run == 0 and on:
            found.append(("resolved", i))
            on = False
    return found


def transitions(events: list[AlertEvent]) -> list[tuple[str, int]]:
    return [(e.kind, int((e.window_start - T0) / HOUR)) for e in events]


# --- stores: the same tests on SQLite and on the real PostgreSQL ------------------------------


Opener = Callable[[], AlertStateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store at one place, as often as asked (a restart opens it again); all closed
    after the test, and the PostgreSQL schema dropped."""
    opened: list[AlertStateStore] = []
    if request.param == "sqlite":
        path = tmp_path / "monitor" / "alerts.sqlite"

        def make() -> AlertStateStore:
            opened.append(SqliteAlertStore(path))
            return opened[-1]

        yield make
    else:
        url = request.getfixturevalue("postgres_url")
        schema = f"test_alerts_{uuid.uuid4().hex[:12]}"

        def make() -> AlertStateStore:
            opened.append(PostgresAlertStore(url, schema))
            return opened[-1]

        yield make
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    for store in opened:
        store.close()


def test_fires_after_consecutive_closed_windows_and_resolves_once(open_store: Opener) -> None:
    store = open_store()
    series: list[float | None] = [0.1, 0.3, 0.1, 0.3, 0.35, 0.4, 0.05, 0.3]
    metrics = values(series)
    at = datetime(2013, 9, 2, 8, 0)
    events = evaluate([rule(windows=2)], metrics, closed(metrics), store, now=at)
    assert transitions(events) == [("firing", 4), ("resolved", 6)]
    fired, resolved = events
    assert fired.value == 0.35 and fired.threshold == 0.2 and fired.direction == "above"
    assert (fired.window_start, fired.window_end) == (window(4).start, window(4).end)
    assert (fired.subject, fired.model_version, fired.severity) == (FEATURE, "3", "warning")
    assert fired.at == at
    assert fired.description == f"psi of {FEATURE} above 0.2 in 2 closed windows in a row"
    assert resolved.value == 0.05
    [state] = store.states()
    assert (state.status, state.consecutive, state.value) == ("resolved", 1, 0.3)
    assert state.counted_until == window(7).end
    assert (state.fired_at, state.resolved_at) == (at, at)
    assert firing(store) == []


def test_running_again_counts_nothing_twice(open_store: Opener) -> None:
    """The monitor runs every few minutes over the same windows: a firing alert is not sent
    again, and a window is counted once however often it is seen."""
    store = open_store()
    r = rule(windows=3)
    metrics = values([0.3, 0.3, 0.3, 0.3])
    first = evaluate([r], metrics, closed(metrics), store)
    assert transitions(first) == [("firing", 2)]
    for _ in range(3):
        assert evaluate([r], metrics, closed(metrics), store) == []
    [state] = store.states()
    assert (state.status, state.consecutive) == ("firing", 4)
    # Windows seen again with new metrics beside them: only the new ones count.
    grown = values([0.3, 0.3, 0.3, 0.3, 0.1, 0.3])
    assert transitions(evaluate([r], grown, closed(grown), store)) == [("resolved", 4)]
    assert evaluate([r], grown, closed(grown), store) == []
    [state] = store.states()
    assert (state.status, state.consecutive) == ("resolved", 1)


def test_open_windows_do_not_count_until_closed(open_store: Opener) -> None:
    store = open_store()
    r = rule(windows=2)
    metrics = values([0.3, 0.3, 0.3])
    only_first = {metrics[0].window}
    for _ in range(2):  # the open windows breach, but are not counted however often seen
        assert evaluate([r], metrics, only_first, store) == []
    [state] = store.states()
    assert (state.consecutive, state.counted_until) == (1, window(0).end)
    assert transitions(evaluate([r], metrics, closed(metrics[:2]), store)) == [("firing", 1)]


def test_incremental_runs_match_one_run_over_everything(open_store: Opener) -> None:
    """Random series closed a few windows at a time, each step evaluated twice, give exactly
    the transitions of the whole series taken at once."""
    rng = random.Random(12)
    store = open_store()
    for case in range(6):
        windows = rng.randint(1, 3)
        series: list[float | None] = [
            None if rng.random() < 0.15 else rng.choice([0.1, 0.19, 0.2, 0.21, 0.5])
            for _ in range(30)
        ]
        r = rule(name=f"case_{case}", windows=windows)
        metrics = values(series)
        seen: list[AlertEvent] = []
        done = 0
        while done < len(series):
            done = min(len(series), done + rng.randint(1, 5))
            for _ in range(2):
                seen += evaluate([r], metrics, closed(metrics[:done]), store)
        assert transitions(seen) == reference(0.2, windows, series), (windows, series)


def test_windows_without_a_value_neither_count_nor_reset(open_store: Opener) -> None:
    store = open_store()
    r = rule(name="live_auc", metric="auc", feature=None, above=None, below=0.65, windows=2)
    metrics = values([0.6, None, 0.62, None, None, 0.7], metric="auc", subject=MODEL)
    events = evaluate([r], metrics, closed(metrics), store)
    assert transitions(events) == [("firing", 2), ("resolved", 5)]
    assert events[0].subject == MODEL and events[0].direction == "below"


def test_star_expands_to_every_feature_and_each_version_and_variant_apart(
    open_store: Opener,
) -> None:
    store = open_store()
    r = rule(name="any_drift", feature="*", windows=1)
    metrics = [
        *values([0.1, 0.3], subject="origin"),
        *values([0.3, 0.3], subject="carrier"),
        *values([0.1, 0.1], subject="distance"),
        *values([0.5, 0.1], subject="carrier", version="4", variant="challenger"),
        *values([0.9, 0.9], metric="score_psi", subject=MODEL),  # another metric
        *values([0.9, 0.9], metric="wasserstein", subject="distance"),
    ]
    events = evaluate([r], metrics, closed(metrics), store)
    assert [(e.kind, e.subject, e.model_version, e.variant) for e in events] == [
        ("firing", "carrier", "3", ""),
        ("firing", "carrier", "4", "challenger"),
        ("resolved", "carrier", "4", "challenger"),
        ("firing", "origin", "3", ""),
    ]
    assert sorted((s.subject, s.model_version) for s in firing(store, [r])) == [
        ("carrier", "3"),
        ("origin", "3"),
    ]
    assert firing(store, [rule(name="other")]) == []  # a rule no longer in the config


def test_rule_filters_on_version_and_variant(open_store: Opener) -> None:
    store = open_store()
    r = rule(variant="challenger", model_version="4")
    metrics = [
        *values([0.5], version="4", variant="challenger"),
        *values([0.5], version="4", variant="control"),
        *values([0.5], version="3", variant="challenger"),
    ]
    events = evaluate([r], metrics, closed(metrics), store)
    assert [(e.model_version, e.variant) for e in events] == [("4", "challenger")]


def test_state_survives_reopening_the_store(open_store: Opener) -> None:
    r = rule(windows=2, severity="critical")
    metrics = values([0.3, 0.3, 0.3])
    first = open_store()
    assert evaluate([r], metrics, closed(metrics[:1]), first) == []
    first.close()
    second = open_store()  # a restart
    events = evaluate([r], metrics, closed(metrics[:2]), second)
    assert transitions(events) == [("firing", 1)]
    second.close()
    third = open_store()
    assert evaluate([r], metrics, closed(metrics), third) == []
    [state] = firing(third)
    assert (state.rule, state.severity, state.consecutive) == ("drift", "critical", 3)
    assert state.counted_until == window(2).end


def test_two_monitors_at_once_send_a_transition_once(open_store: Opener) -> None:
    """Two servers running the monitor on the same windows at the same moment: the write lock
    makes one of them see the other's state."""
    stores = [open_store(), open_store()]
    r = rule(windows=1)
    metrics = values([0.5] * 20)
    results: list[list[AlertEvent]] = [[], []]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        results[i] = evaluate([r], metrics, closed(metrics), stores[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(events) for events in results) == [0, 1]


def test_open_alert_store_follows_the_log(tmp_path: Path, postgres_url: str) -> None:
    raw = yaml.safe_load((FLIGHTS_EXAMPLE / "mlprod.yaml").read_text())
    store = open_alert_store(parse_config(raw), tmp_path)
    try:
        assert store.where == str(tmp_path / ".mlprod" / "monitor" / "alerts.sqlite")
        assert (tmp_path / ".mlprod" / "monitor" / "alerts.sqlite").exists()
    finally:
        store.close()
    schema = f"test_alerts_{uuid.uuid4().hex[:12]}"
    raw["log"] = {"kind": "postgres", "url": postgres_url, "schema": schema}
    store = open_alert_store(parse_config(raw), tmp_path)
    try:
        metrics = values([0.5])
        evaluate([rule()], metrics, closed(metrics), store)
        with psycopg.connect(postgres_url) as conn:
            query = sql.SQL("SELECT rule, status FROM {}").format(
                sql.Identifier(schema, "mlprod_alert_states")
            )
            assert conn.execute(query).fetchall() == [("drift", "firing")]
    finally:
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# --- sinks -------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback that answers ``fail_first`` posts with ``status``."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.fail_first, self.status = fail_first, status
        self.posts: list[tuple[float, int, dict[str, Any]]] = []  # (time, answer, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                answer = receiver.status if len(receiver.posts) < receiver.fail_first else 200
                receiver.posts.append((time.monotonic(), answer, body))
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        return [body for _, answer, body in self.posts if answer == 200]


def webhook(url: str, retries: int = 3, backoff: str = "0.2s") -> WebhookSink:
    return WebhookSink.model_validate(
        {"kind": "webhook", "url": url, "retries": retries, "backoff": backoff, "timeout": "2s"}
    )


def some_events(count: int = 1) -> list[AlertEvent]:
    metrics = values([0.5] * count, subject="origin")
    return [
        AlertEvent(
            kind="firing",
            rule="drift",
            severity="warning",
            metric="psi",
            subject="origin",
            model_name="flights",
            model_version="3",
            variant="",
            value=m.value or 0.0,
            threshold=0.2,
            direction="above",
            window_start=m.window.start,
            window_end=m.window.end,
            description="psi of origin above 0.2",
            at=T0,
        )
        for m in metrics
    ]


def test_webhook_is_retried_with_backoff_and_delivered_once(tmp_path: Path) -> None:
    [event] = some_events()
    with Receiver(fail_first=2) as receiver:
        failures = send([event], [webhook(receiver.url)], tmp_path)
    assert failures == []
    assert [answer for _, answer, _ in receiver.posts] == [503, 503, 200]
    assert receiver.delivered() == [event.to_dict()]
    stamps = [at for at, _, _ in receiver.posts]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert 0.2 <= gaps[0] < 0.35, gaps  # the first wait: backoff
    assert 0.4 <= gaps[1] < 0.55, gaps  # then doubled


def test_a_webhook_that_keeps_failing_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = some_events(2)
    sink = webhook("", retries=2, backoff="0.05s")
    with (
        Receiver(fail_first=100, status=500) as receiver,
        caplog.at_level(logging.WARNING, logger="mlprod.monitor"),
    ):
        failures = send(events, [sink.model_copy(update={"url": receiver.url})], tmp_path)
    # All retries for the first event; the receiver is down, so one attempt for the second.
    assert len(receiver.posts) == 3 + 1
    assert [(f.event, f.attempts, f.error) for f in failures] == [
        (events[0], 3, "HTTP 500"),
        (events[1], 1, "HTTP 500"),
    ]
    port = receiver.server.server_address[1]
    assert failures[0].sink == f"webhook http://127.0.0.1:{port}/…"  # no secret path shown
    assert [r.getMessage() for r in caplog.records] == [f.line() for f in failures]
    assert "s3cret" not in caplog.text


def test_a_wrong_webhook_address_is_not_retried(tmp_path: Path) -> None:
    with Receiver(fail_first=100, status=404) as receiver:
        [failure] = send(some_events(), [webhook(receiver.url, backoff="1s")], tmp_path)
    assert (len(receiver.posts), failure.attempts, failure.error) == (1, 1, "HTTP 404")


def test_a_webhook_nobody_listens_on_is_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    [failure] = send(some_events(), [webhook(url, retries=1, backoff="0.01s")], tmp_path)
    assert failure.attempts == 2
    assert failure.error.startswith("ConnectError")


def test_file_sink_appends_json_lines_and_stderr_prints_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = some_events(3)
    sinks = [FileSink(kind="file", path="logs/alerts.jsonl"), StderrSink(kind="stderr")]
    assert send(events[:2], sinks, tmp_path) == []
    assert send(events[2:], sinks, tmp_path) == []
    lines = (tmp_path / "logs" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    err = capsys.readouterr().err.splitlines()
    assert err == [e.line() for e in events]
    assert err[0] == (
        "alert FIRING [warning] drift: psi of origin = 0.5 > 0.2 (flights version 3, window "
        "2013-09-01 00:00 to 2013-09-01 01:00 UTC)"
    )


def test_a_file_sink_that_cannot_be_written_is_reported(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    sink = FileSink(kind="file", path="taken/alerts.jsonl")
    failures = send(some_events(2), [sink], tmp_path)
    assert [f.sink for f in failures] == [f"file {tmp_path / 'taken' / 'alerts.jsonl'}"] * 2


def test_a_drift_episode_reaches_the_webhook_once_per_transition(
    tmp_path: Path,
) -> None:
    """The monitor's loop: windows close one by one, every run evaluates everything seen so
    far and sends the transitions; the receiver gets one firing and one resolved."""
    store = SqliteAlertStore(tmp_path / "alerts.sqlite")
    metrics = values([0.1, 0.4, 0.5, 0.45, 0.3, 0.1, 0.1])
    with Receiver(fail_first=1) as receiver:
        sinks = [webhook(receiver.url, backoff="0.01s")]
        for done in range(1, len(metrics) + 1):
            for _ in range(2):
                events = evaluate([rule(windows=2)], metrics, closed(metrics[:done]), store)
                assert send(events, sinks, tmp_path) == []
    store.close()
    assert [(b["kind"], b["window_start"]) for b in receiver.delivered()] == [
        ("firing", window(2).start.isoformat()),
        ("resolved", window(5).start.isoformat()),
    ]
