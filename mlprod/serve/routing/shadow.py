"""Shadow scoring: the shadow variants score the same records after the served answer is
ready, on one background thread, and are logged with ``served=False``.

The served path only puts a job on a bounded queue (no scoring, no I/O). The worker wakes for
a job, sleeps ``linger`` seconds, takes what has queued up meanwhile (at most ``max_rows``
records) and scores it in one go: one feature computation and one model call per shadow, one
log transaction. Scoring one request at a time would cost a shadow about as much as the answer
itself, and in a busy server that time is taken from the answers (one interpreter lock); in
batches it is a fraction. The interpreter's switch interval is lowered to 0.5 ms (from 5 ms)
so that an answer never waits long for the lock while the worker scores: with both, a shadow
measured 1.05x the p50 and 1.07x the p99 of one model (2026-11-30, bench/serve_routing.py);
without them 2.2x and 1.9x. Where a shadow's feature definitions equal those of the version
that answered, the answer's feature values are reused: the shadow is scored on the same
request and the same features.

No shadow failure can reach an answer: a batch that fails is scored again request by request,
each failure is recorded in the scoring errors, and that request's shadow record is dropped.
When the queue is full (the shadows cannot keep up) new jobs are dropped and counted rather
than slowing the answers down; shadow records are best effort. ``close`` drains the queue
before it returns, so a clean shutdown loses none.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlprod.serve.predlog import PredictionLog, PredictionRecord, ScoringError
from mlprod.serve.routing.arms import Arm, tag
from mlprod.serve.routing.assignment import SHADOW

_log = logging.getLogger(__name__)

# While the worker scores, an answer waits for the interpreter lock at most this long before
# the worker must hand it over (Python's default is 5 ms, longer than an answer takes).
SWITCH_INTERVAL_S = 0.0005
_switch_lock = threading.Lock()
_switch_users: list[float] = []  # the interval before the first running scorer lowered it


def _lower_switch_interval() -> None:
    with _switch_lock:
        if not _switch_users:
            _switch_users.append(sys.getswitchinterval())
            sys.setswitchinterval(min(_switch_users[0], SWITCH_INTERVAL_S))
        else:
            _switch_users.append(_switch_users[0])


def _restore_switch_interval() -> None:
    with _switch_lock:
        if _switch_users:
            previous = _switch_users.pop()
            if not _switch_users:
                sys.setswitchinterval(previous)


# Feature values of each record for one shadow, or None where the shadow computes its own.
Reused = list[dict[str, Any] | None]


@dataclass(frozen=True)
class ShadowJob:
    """The records of one request, typed, to score with every shadow of the policy;
    ``reused[k]`` are the answers' feature values for shadow ``arms[k]``."""

    experiment: str
    arms: Sequence[Arm]
    rows: list[dict[str, Any]]
    times: list[datetime]
    reused: Sequence[Reused]


class ShadowScorer:
    """One worker thread behind a bounded queue, scoring in batches."""

    def __init__(
        self,
        log: PredictionLog,
        max_queue: int = 10_000,
        linger: float = 0.05,
        max_rows: int = 1000,
    ) -> None:
        self.log = log
        self.linger, self.max_rows = linger, max_rows
        self.dropped = 0  # jobs refused because the queue was full
        self.failed = 0  # shadow scorings of one request that raised (also in scoring errors)
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(max_queue)
        self._closed = False
        _lower_switch_interval()  # restored when the last scorer closes
        self._thread = threading.Thread(target=self._run, name="mlprod-shadow", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; False (and counted) when the queue is full or closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def wait(self) -> None:
        """Block until every queued job is scored and logged (for tests and shutdown)."""
        self._queue.join()

    def close(self, timeout: float = 60.0) -> None:
        """Score and log what is queued, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        _restore_switch_interval()

    # --- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            jobs, stopping = self._gather(first)
            try:
                self._score(jobs)
            finally:
                for _ in range(len(jobs) + stopping):
                    self._queue.task_done()
            if stopping:
                return

    def _gather(self, first: ShadowJob) -> tuple[list[ShadowJob], bool]:
        """The first job and those queued ``linger`` seconds later (up to ``max_rows``
        records); True when the stop sign came meanwhile. Sleeping once rather than waking
        for every job leaves the interpreter lock to the answers."""
        if not self._closed:
            time.sleep(self.linger)
        jobs, rows = [first], len(first.rows)
        while rows < self.max_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            rows += len(job.rows)
        return jobs, False

    def _score(self, jobs: list[ShadowJob]) -> None:
        try:
            records = [r for group in _groups(jobs) for r in _score_group(*group)]
            self.log.append(records)
        except Exception:  # scored again one request at a time, to find which one fails
            for job in jobs:
                for index, arm in enumerate(job.arms):
                    self._score_alone(job, index, arm)

    def _score_alone(self, job: ShadowJob, index: int, arm: Arm) -> None:
        try:
            self.log.append(_score_group(job.experiment, arm, [(job, index)]))
        except Exception as exc:  # a shadow never affects anything but its own records
            self.failed += 1
            service = arm.service
            try:
                self.log.record_error(
                    ScoringError(
                        job.experiment,
                        arm.name,
                        service.model_name,
                        service.model_version,
                        f"shadow: {describe(exc)}",
                    )
                )
            except Exception:
                _log.exception("recording a shadow failure of variant %s failed", arm.name)


def _groups(jobs: list[ShadowJob]) -> list[tuple[str, Arm, list[tuple[ShadowJob, int]]]]:
    """The jobs by experiment and shadow: each group is scored with one call."""
    groups: dict[tuple[str, int], tuple[str, Arm, list[tuple[ShadowJob, int]]]] = {}
    for job in jobs:
        for index, arm in enumerate(job.arms):
            key = (job.experiment, id(arm))
            groups.setdefault(key, (job.experiment, arm, []))[2].append((job, index))
    return list(groups.values())


def _score_group(
    experiment: str, arm: Arm, members: list[tuple[ShadowJob, int]]
) -> list[PredictionRecord]:
    """One shadow's records of several requests: those with reusable feature values in one
    call, the others (which compute their features) in another."""
    given: tuple[list[dict[str, Any]], list[datetime], list[dict[str, Any]]] = ([], [], [])
    computed: tuple[list[dict[str, Any]], list[datetime]] = ([], [])
    for job, index in members:
        for row, at, values in zip(job.rows, job.times, job.reused[index], strict=True):
            if values is None:
                computed[0].append(row)
                computed[1].append(at)
            else:
                given[0].append(row)
                given[1].append(at)
                given[2].append(values)
    records: list[PredictionRecord] = []
    if given[0]:
        records += arm.service.score(given[0], given[1], given[2])[1]
    if computed[0]:
        records += arm.service.score(computed[0], computed[1])[1]
    return tag(records, experiment, arm.name, SHADOW, served=False)


def describe(exc: BaseException) -> str:
    """An exception in one line: its message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
