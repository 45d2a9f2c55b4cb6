"""Replay history as live traffic against a running server (``mlprod simulate``).

The spine source's rows between ``start`` and ``end`` become the traffic a deployed model
would have seen, in simulated time order:

* **events**: the rows of every timed source the server's online store is fed from (the
  sources ``/ready`` reports freshness for) are pushed with ``POST /events/{source}`` by
  their availability time (``available_at``, else ``time``);
* **predictions**: each spine row is scored with ``POST /predict?at=<spine time>``, carrying
  only the request fields; rows sharing a spine time go in one request, and up to
  ``connections`` requests are in flight at once;
* **outcomes**: once a row's ``label_available_at`` has passed, its label is sent with
  ``POST /feedback`` by the prediction's id (a NULL label is never sent; labels known only
  after ``end`` are counted as pending).

Events are pushed in batches ahead of time, by at most ``push_every`` of simulated time: at
a ``speed``, the simulated time of a quarter of a wall second (between a minute and an hour);
as fast as possible, a day (a push costs the server about as much for three rows as for a
thousand). That changes no feature: the online store answers every request as of its own
time, seeing only rows available strictly before it. It only saves requests. Before a
prediction at ``t`` is sent, every event available before ``t`` has been acknowledged, so the
server computes the features the batch engine would.

The online store must not hold the replayed events yet (materialize it as of ``start``):
events already there would count once, but a shifted event is another event, and would be
counted beside the original. :mod:`mlprod.loop.shift` describes ``shift``.

Everything the server refuses (an answer other than 200, feedback it cannot match, no
answer at all) is counted by endpoint and status with the first message of each, never
dropped silently; twenty failed requests in a row stop the simulation.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import httpx
from sqlglot import exp

from mlprod import sqlparts as sql
from mlprod.data.sources import connect, open_source
from mlprod.errors import SimulationError
from mlprod.features.events import timestamp_literal
from mlprod.features.requests import request_fields
from mlprod.loop.shift import Shift, parse_shift, shifted_columns
from mlprod.progress import NO_PROGRESS, ProgressCallback

if TYPE_CHECKING:
    from mlprod.api import Project

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MAX_FAILURES_IN_A_ROW = 20
_JSON = {"content-type": "application/json"}
_AVAILABLE, _TIME, _LABEL, _LABEL_AT = "__available", "__time", "__label", "__label_at"


@dataclass
class SimulationSummary:
    """What a simulation sent and what the server answered."""

    url: str
    start: datetime
    end: datetime
    shifts: list[str] = field(default_factory=list)
    sample: float | None = None
    days: int = 0
    predictions: int = 0  # records scored
    prediction_requests: int = 0
    events: dict[str, int] = field(default_factory=dict)  # source -> events pushed
    events_applied: int = 0  # new to the online store (the others it held already)
    outcomes: int = 0  # labels the log took
    outcomes_pending: int = 0  # labels known only after the end: not sent
    outcomes_unknown: int = 0  # rows whose label is NULL: nothing to send
    requests: int = 0  # HTTP requests of every kind
    refused: dict[str, int] = field(default_factory=dict)  # "POST /predict 422" -> records
    refusals: list[str] = field(default_factory=list)  # the first message of each kind
    elapsed: float = 0.0  # wall seconds

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def predictions_per_second(self) -> float:
        return self.predictions / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "shifts": self.shifts,
            "sample": self.sample,
            "days": self.days,
            "predictions": self.predictions,
            "prediction_requests": self.prediction_requests,
            "events": self.events,
            "events_applied": self.events_applied,
            "outcomes": self.outcomes,
            "outcomes_pending": self.outcomes_pending,
            "outcomes_unknown": self.outcomes_unknown,
            "requests": self.requests,
            "refused": self.refused,
            "refusals": self.refusals,
            "elapsed": round(self.elapsed, 3),
            "requests_per_second": round(self.requests_per_second, 1),
            "predictions_per_second": round(self.predictions_per_second, 1),
        }


def simulate(
    project: Project,
    *,
    url: str,
    start: datetime,
    end: datetime,
    speed: float | None = None,
    shift: Sequence[str] | str | None = None,
    shift_from: datetime | None = None,
    shift_to: datetime | None = None,
    sample: float | None = None,
    seed: int = 0,
    connections: int = 8,
    push_every: timedelta | None = None,
    wait: float = 0.0,
    on_day: Callable[[date], None] | None = None,
    progress: ProgressCallback = NO_PROGRESS,
) -> SimulationSummary:
    """Replay ``[start, end)`` of the project's spine as live traffic to the server at ``url``.

    ``speed``: simulated seconds per wall second (3600: an hour a second); 0 or None as fast as
    the server answers. ``shift``: specs that change the replayed rows (between ``shift_from``
    and ``shift_to`` if given). ``sample``: the share of spine rows to predict (events are all
    pushed: the features need them). ``on_day(day)`` runs after each simulated day, once its
    predictions are answered and its known outcomes sent (its time does not count against
    ``speed``)."""
    if end <= start:
        raise SimulationError(f"the simulation ends ({end}) before it starts ({start})")
    if sample is not None and not 0 < sample <= 1:
        raise SimulationError(f"sample must be a share in (0, 1], got {sample}")
    if speed is not None and (speed < 0 or not math.isfinite(speed)):
        raise SimulationError(f"speed must be 0 (as fast as possible) or more, got {speed}")
    if connections < 1:
        raise SimulationError(f"connections must be at least 1, got {connections}")
    specs = [shift] if isinstance(shift, str) else list(shift or [])
    return asyncio.run(
        _Simulation(
            project,
            url.rstrip("/"),
            start,
            end,
            speed or 0.0,
            specs,
            (shift_from, shift_to),
            sample,
            seed,
            connections,
            push_every,
            wait,
            on_day,
            progress,
        ).run()
    )


# --- reading what to replay -----------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One spine row to predict: its request fields and its outcome."""

    time: datetime
    fields: dict[str, Any]
    label: bool | None
    label_at: datetime | None


class _Replay:
    """The rows to replay, read one simulated day at a time from the sources, with the
    shifts applied before any time, label or field is computed from them."""

    def __init__(
        self,
        project: Project,
        sources: Sequence[str],
        shifts: Sequence[Shift],
        fields: Sequence[str],
        sample: float | None,
        seed: int,
    ) -> None:
        self.config = project.config
        self.graph = project.graph
        self.sources = list(sources)
        self.fields = list(fields)
        self.sample = sample
        self.random = random.Random(seed)
        self.con = connect(self.config.engine)
        spine = self.config.spine.source
        try:
            for name in sorted({*sources, spine}):
                open_source(self.con, project.folder, self.config, name)
                columns = shifted_columns(self.config, name, shifts, self.graph.times[name].time)
                view = exp.Create(
                    this=sql.table(_shifted(name)),
                    kind="VIEW",
                    expression=exp.select(*columns).from_(sql.table(name)),
                    properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
                )
                self.con.execute(view.sql("duckdb", identify=True))
        except BaseException:
            self.con.close()
            raise

    def close(self) -> None:
        self.con.close()

    def events(
        self, source: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, dict[str, Any]]]:
        """The source's rows available in ``[start, end)``, by availability (JSON-ready)."""
        available = self.graph.times[source].available_at
        assert available is not None  # only timed sources are replayed
        columns = list(self.config.sources[source].columns)
        inner = exp.select(
            *[sql.col(c) for c in columns], sql.alias(sql.timestamp(available.copy()), _AVAILABLE)
        ).from_(sql.table(_shifted(source)))
        query = (
            exp.select("*")
            .from_(sql.subquery(inner, "__rows"))
            .where(_between(sql.col(_AVAILABLE), start, end))
            .order_by(sql.col(_AVAILABLE))
        )
        rows = self._rows(query)
        return [(row.pop(_AVAILABLE), _json_ready(row)) for row in rows]

    def spine(self, start: datetime, end: datetime) -> list[_Row]:
        """The spine rows whose prediction time is in ``[start, end)``, in time order."""
        spine = self.graph.spine_exprs
        config = self.config.spine
        label_at = spine.get("label_available_at")
        inner = exp.select(
            *[sql.col(c) for c in self.fields],
            sql.alias(sql.timestamp(spine["time"].copy()), _TIME),
            sql.alias(spine["label"].copy() if "label" in spine else exp.null(), _LABEL),
            sql.alias(sql.timestamp(label_at.copy()) if label_at else exp.null(), _LABEL_AT),
        ).from_(sql.table(_shifted(config.source)))
        if "filter" in spine:
            inner = inner.where(spine["filter"].copy())
        query = (
            exp.select("*")
            .from_(sql.subquery(inner, "__rows"))
            .where(_between(sql.col(_TIME), start, end))
            .order_by(sql.col(_TIME), *[sql.col(k) for k in config.keys])
        )
        found: list[_Row] = []
        for row in self._rows(query):
            if self.sample is not None and self.random.random() >= self.sample:
                continue
            when, label, label_at = row.pop(_TIME), row.pop(_LABEL), row.pop(_LABEL_AT)
            found.append(
                _Row(when, _json_ready(row), None if label is None else bool(label), label_at)
            )
        return found

    def _rows(self, query: exp.Select) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = (
                self.con.sql(query.sql("duckdb", identify=True)).to_arrow_table().to_pylist()
            )
        except duckdb.Error as exc:
            raise SimulationError(f"reading the rows to replay failed: {exc}") from None
        return rows


def _shifted(source: str) -> str:
    return f"__shifted_{source}"


def _between(column: exp.Expr, start: datetime, end: datetime) -> exp.Expr:
    return exp.and_(
        exp.GTE(this=column, expression=timestamp_literal(start)),
        exp.LT(this=column.copy(), expression=timestamp_literal(end)),
    )


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    """Times as ISO 8601 text and NaN as null, as a JSON request carries them."""
    for name, value in row.items():
        if isinstance(value, datetime | date):
            row[name] = value.isoformat()
        elif isinstance(value, float) and not math.isfinite(value):
            row[name] = None
    return row


# --- sending it ------------------------------------------------------------------------------


class _Clock:
    """Simulated time mapped to wall time at ``speed`` (0: no waiting)."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self.origin = time.monotonic()

    async def reach(self, moment: datetime) -> None:
        if not self.speed:
            return
        due = self.origin + (moment - self.start).total_seconds() / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        self.origin += seconds


class _Simulation:
    def __init__(
        self,
        project: Project,
        url: str,
        start: datetime,
        end: datetime,
        speed: float,
        specs: list[str],
        window: tuple[datetime | None, datetime | None],
        sample: float | None,
        seed: int,
        connections: int,
        push_every: timedelta | None,
        wait: float,
        on_day: Callable[[date], None] | None,
        progress: ProgressCallback,
    ) -> None:
        self.wait = wait
        self.project = project
        self.url = url
        self.start, self.end = start, end
        self.speed = speed
        self.specs = specs
        self.window = window
        self.sample, self.seed = sample, seed
        self.connections = connections
        self.push_every = push_every or _push_every(speed)
        self.on_day = on_day
        self.progress = progress
        serve = project.config.serve
        self.max_records = serve.max_records
        self.max_bytes = serve.max_body_bytes * 9 // 10  # room for what the encoder adds
        self.summary = SimulationSummary(url, start, end, sample=sample)
        self.failures = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.outcomes: list[tuple[datetime, int, str, bool]] = []  # a heap by label time
        self.counter = itertools.count()
        self.seen: dict[str, str] = {}  # refusal kind -> its first message

    async def run(self) -> SimulationSummary:
        started = time.perf_counter()
        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them,
        # which would fail the next request sent on one (a ReadError).
        limits = httpx.Limits(
            max_connections=self.connections,
            max_keepalive_connections=self.connections,
            keepalive_expiry=2.0,
        )
        async with httpx.AsyncClient(
            base_url=self.url, limits=limits, timeout=httpx.Timeout(60.0)
        ) as client:
            self.client = client
            self.gate = asyncio.Semaphore(self.connections)
            sources = await self._sources()
            fields = await self._fields()
            replayed = sorted({*sources, self.project.config.spine.source})
            shifts = [
                parse_shift(spec, self.project.config, replayed, *self.window)
                for spec in self.specs
            ]
            self.summary.shifts = [s.describe() for s in shifts]
            self.summary.events = {s: 0 for s in sources}
            replay = _Replay(self.project, sources, shifts, fields, self.sample, self.seed)
            try:
                await self._replay(replay, sources)
            finally:
                replay.close()
                for task in self.tasks:  # left only when the replay failed
                    task.cancel()
        self.summary.elapsed = time.perf_counter() - started
        return self.summary

    # --- what the server takes ----------------------------------------------------------

    async def _sources(self) -> list[str]:
        """The timed sources the server's online store is fed from, after checking that it
        holds none of their events from ``start`` on."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                answer = await self.client.get("/ready")
                break
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    waited = f" within {self.wait:g} s" if self.wait else ""
                    raise SimulationError(
                        f"no server answers at {self.url}{waited}: {_reason(exc)}"
                    ) from None
                await asyncio.sleep(0.2)
        body = _json(answer)
        if answer.status_code != 200 or not isinstance(body, dict):
            checks = body.get("checks") if isinstance(body, dict) else None
            raise SimulationError(
                f"the server at {self.url} is not ready (GET /ready answered "
                f"{answer.status_code}{f': {checks}' if checks else ''})"
            )
        freshness: dict[str, str | None] = body.get("freshness") or {}
        config = self.project.config
        sources = sorted(s for s in freshness if s in config.sources and config.sources[s].time)
        ahead = {
            s: freshness[s]
            for s in sources
            if freshness[s] is not None
            and datetime.fromisoformat(str(freshness[s])).replace(tzinfo=None) >= self.start
        }
        if ahead:
            held = ", ".join(f"'{s}' up to {t}" for s, t in sorted(ahead.items()))
            raise SimulationError(
                f"the server's online store already holds events from the simulation's start "
                f"({self.start}) on: {held}. Replay into a store materialized as of the start: "
                f"clear it, run `mlprod materialize --as-of {self.start.isoformat()}`, then "
                "start the server"
            )
        return sources

    async def _fields(self) -> list[str]:
        """The served model's request fields (its v2 metadata), else the project's."""
        name = self.project.registry_name
        try:
            answer = await self.client.get(f"/v2/models/{name}")
            body = _json(answer)
            if answer.status_code == 200 and isinstance(body, dict):
                return [str(i["name"]) for i in body.get("inputs", [])]
        except httpx.HTTPError:
            pass
        return [f.name for f in request_fields(self.project.graph)]

    # --- the replay ---------------------------------------------------------------------

    async def _replay(self, replay: _Replay, sources: list[str]) -> None:
        clock = _Clock(self.start, self.speed)
        days = _days(self.start, self.end)
        task = self.progress.start(f"simulating {self.start} to {self.end}", len(days))
        for first, last in days:
            rows = replay.spine(first, last)
            events = sorted(
                ((at, s, e) for s in sources for at, e in replay.events(s, first, last)),
                key=lambda item: item[0],
            )
            await self._day(clock, first, last, rows, events)
            await self._drain()
            await self._send_outcomes(last)
            await self._drain()
            self.summary.days += 1
            if self.on_day is not None:
                paused = time.monotonic()
                self.on_day(first.date())
                clock.pause(time.monotonic() - paused)
            task.advance()
            task.update(
                f"simulated up to {last}: {self.summary.predictions:,} predictions, "
                f"{self.summary.refused_total:,} refused"
            )
        self.summary.outcomes_pending = len(self.outcomes)
        self.outcomes.clear()
        task.finish(f"simulated {self.summary.days} days: {self.summary.predictions:,} predictions")

    async def _day(
        self,
        clock: _Clock,
        first: datetime,
        last: datetime,
        rows: list[_Row],
        events: list[tuple[datetime, str, dict[str, Any]]],
    ) -> None:
        next_event, next_row = 0, 0
        for tick, tick_end in _ticks(first, last, self.push_every):
            await clock.reach(tick)
            await self._send_outcomes(tick)
            # Every event available before the tick ends is acknowledged before a prediction
            # of the tick is sent (ahead of time: the store answers as of each request's time).
            upto = next_event
            while upto < len(events) and events[upto][0] < tick_end:
                upto += 1
            await self._push(events[next_event:upto])
            next_event = upto
            while next_row < len(rows) and rows[next_row].time < tick_end:
                when = rows[next_row].time
                group = []
                while next_row < len(rows) and rows[next_row].time == when:
                    group.append(rows[next_row])
                    next_row += 1
                await clock.reach(when)
                for part in _chunks(group, self.max_records):
                    await self.gate.acquire()
                    self._spawn(self._predict(when, part))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self) -> None:
        """Wait for every request in flight; the first that failed raises."""
        while self.tasks:
            results = await asyncio.gather(*list(self.tasks), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _predict(self, when: datetime, rows: list[_Row]) -> None:
        try:
            self.summary.prediction_requests += 1
            answer = await self._post(
                "/predict", [r.fields for r in rows], len(rows), {"at": when.isoformat()}
            )
        finally:
            self.gate.release()
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list):
            return
        for row, prediction in zip(rows, predictions, strict=False):
            self.summary.predictions += 1
            if row.label is None or row.label_at is None:
                self.summary.outcomes_unknown += 1
                continue
            known = max(row.label_at, when)
            entry = (known, next(self.counter), str(prediction["prediction_id"]), row.label)
            heapq.heappush(self.outcomes, entry)

    async def _send_outcomes(self, before: datetime) -> None:
        """Send the labels known before ``before`` of the predictions answered so far."""
        due: list[dict[str, Any]] = []
        while self.outcomes and self.outcomes[0][0] < before:
            _, _, prediction_id, label = heapq.heappop(self.outcomes)
            due.append({"prediction_id": prediction_id, "label": label})
        for part in _chunks(due, self.max_records):
            await self.gate.acquire()
            self._spawn(self._feedback(part))

    async def _feedback(self, items: list[dict[str, Any]]) -> None:
        try:
            answer = await self._post("/feedback", items, len(items))
        finally:
            self.gate.release()
        if not isinstance(answer, dict):
            return
        self.summary.outcomes += int(answer.get("applied", 0))
        unmatched = answer.get("unmatched") or []
        if unmatched:
            first = items[int(unmatched[0])]["prediction_id"]
            self._refuse(
                "POST /feedback unmatched",
                len(unmatched),
                f"no logged prediction has the id {first}",
            )

    async def _push(self, events: list[tuple[datetime, str, dict[str, Any]]]) -> None:
        """Push events source by source, in batches the server accepts, and wait for them."""
        by_source: dict[str, list[dict[str, Any]]] = {}
        for _, source, record in events:
            by_source.setdefault(source, []).append(record)
        for source, records in by_source.items():
            for part in self._batches(records):
                self.summary.events[source] += len(part)
                answer = await self._post(f"/events/{source}", part, len(part))
                if isinstance(answer, dict):
                    self.summary.events_applied += int(answer.get("applied", 0))

    def _batches(self, records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Records in even batches under the server's record and body limits (even: a last
        batch of a few rows would be judged alone by the source's contract, e.g. its
        ``max_null_rate``)."""
        size = sum(len(_encode(record)) + 1 for record in records)
        count = max(-(-len(records) // self.max_records), -(-size // self.max_bytes), 1)
        each = -(-len(records) // count)
        return _chunks(records, each) if records else []

    async def _post(
        self, path: str, body: Any, count: int, params: dict[str, str] | None = None
    ) -> Any:
        """POST ``body``; the answer's JSON, or None when refused (counted, with why)."""
        self.summary.requests += 1
        try:
            answer = await self.client.post(
                path, content=_encode(body), params=params, headers=_JSON
            )
        except httpx.HTTPError as exc:
            self.failures += 1
            self._refuse(f"POST {path} no answer", count, _reason(exc))
            if self.failures >= MAX_FAILURES_IN_A_ROW:
                raise SimulationError(
                    f"the server at {self.url} stopped answering ({self.failures} requests in "
                    f"a row failed; the last: {_reason(exc)})"
                ) from None
            return None
        self.failures = 0
        parsed = _json(answer)
        if answer.status_code != 200:
            message = _error_message(parsed) or answer.text[:200]
            self._refuse(f"POST {path} {answer.status_code}", count, message)
            return None
        return parsed

    def _refuse(self, kind: str, count: int, message: str) -> None:
        self.summary.refused[kind] = self.summary.refused.get(kind, 0) + count
        if kind not in self.seen:
            self.seen[kind] = message
            self.summary.refusals.append(f"{kind}: {message}")


def _push_every(speed: float) -> timedelta:
    """As fast as possible: a day of events per push. At a speed: the simulated time of a
    quarter of a wall second, between a minute and an hour."""
    if not speed:
        return DAY
    quarter = timedelta(seconds=speed / 4)
    return min(HOUR, max(timedelta(minutes=1), quarter))


def _days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at midnights."""
    days = []
    first = start
    while first < end:
        midnight = datetime.combine(first.date(), datetime.min.time()) + DAY
        days.append((first, min(midnight, end)))
        first = midnight
    return days


def _ticks(first: datetime, last: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """``[first, last)`` cut at multiples of ``step`` from midnight."""
    midnight = datetime.combine(first.date(), datetime.min.time())
    ticks = []
    moment = first
    while moment < last:
        following = midnight + ((moment - midnight) // step + 1) * step
        ticks.append((moment, min(following, last)))
        moment = following
    return ticks


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _error_message(body: Any) -> str | None:
    """The message of mlprod's JSON error shape (``{"error": {"message": ...}}``)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return None


def _reason(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
