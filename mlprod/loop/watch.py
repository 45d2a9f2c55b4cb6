"""``mlprod watch``: run the monitor on an interval, and retrain on a schedule or an alert.

Each tick runs the monitor (:func:`mlprod.monitor.run.run_monitor`), then retrains
(:func:`mlprod.loop.retrain.retrain`, as of the tick's time) when

- ``retrain.schedule`` has elapsed since the last retrain, or, before any, since the watch
  first ran on this project (starting a watcher does not retrain at once); or
- the monitor sent a ``firing`` event of an alert named in ``retrain.on_alerts`` (an alert
  fires once, so it triggers one retrain, not one per tick).

When it last retrained (and why) is kept in ``<store>/loop/watch.json``, so a restarted
watcher keeps the schedule. A failed monitor run or retrain is logged and reported with the
tick; the next tick tries again. SIGINT and SIGTERM end the watch after the running tick.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from mlprod.errors import MlprodError

if TYPE_CHECKING:
    from mlprod.api import Project
    from mlprod.loop.retrain import RetrainResult

logger = logging.getLogger("mlprod.loop")

STATE_FILE = Path("loop") / "watch.json"
FIRING = "firing"


class _MonitorRun(Protocol):
    @property
    def events(self) -> list[Any]: ...

    def summary_line(self) -> str: ...


Monitor = Callable[..., Any]  # run_monitor(project, *, now=None, model=None) -> MonitorRun


@dataclass
class Tick:
    """What one tick of the watch did."""

    at: datetime
    monitor: str | None = None  # the monitor run's summary line
    alerts: list[str] = field(default_factory=list)  # firing events sent by this monitor run
    retrain_reason: str | None = None
    retrain: RetrainResult | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "monitor": self.monitor,
            "alerts": self.alerts,
            "retrain_reason": self.retrain_reason,
            "retrain": self.retrain.to_dict() if self.retrain is not None else None,
            "errors": self.errors,
        }


def watch(
    project: Project,
    *,
    once: bool = False,
    interval: timedelta | None = None,
    now: datetime | None = None,
    monitor: Monitor | None = None,
    on_tick: Callable[[Tick], None] | None = None,
) -> list[Tick]:
    """Tick until stopped (or once); returns the ticks.

    ``interval`` defaults to ``monitor.interval``; ``now`` fixes the time of every tick (a
    replay), else the clock's; ``monitor`` defaults to the project's monitor run;
    ``on_tick`` sees each tick as it ends.
    """
    every = interval if interval is not None else project.config.monitor.interval
    if every <= timedelta(0):
        raise MlprodError(f"the watch interval must be longer than 0, got {every}")
    ticks: list[Tick] = []
    with _stop_on_signals() as stopped:
        while True:
            tick = run_tick(project, now=now, monitor=monitor)
            ticks.append(tick)
            if on_tick is not None:
                on_tick(tick)
            if once or stopped.wait(every.total_seconds()):
                return ticks


def run_tick(project: Project, *, now: datetime | None = None, monitor: Monitor | None) -> Tick:
    """One tick: the monitor, then a retrain when the schedule or an alert asks for one."""
    at = now or datetime.now(UTC).replace(tzinfo=None)
    tick = Tick(at)
    settings = project.config.retrain
    try:
        run = (monitor or _run_monitor)(project, now=at)
        tick.monitor = run.summary_line()
        tick.alerts = [str(event.rule) for event in run.events if event.kind == FIRING]
    except MlprodError as exc:
        tick.errors.append(f"monitor: {exc}")
        logger.error("watch: the monitor run failed: %s", exc)
    state_path = project.store / STATE_FILE
    state = _read_state(state_path, at)
    triggered = sorted(set(tick.alerts) & set(settings.on_alerts))
    if triggered:
        tick.retrain_reason = f"alert {', '.join(triggered)} fired"
    elif settings.schedule is not None:
        since = datetime.fromisoformat(state.get("last_retrain") or state["started"])
        if at - since >= settings.schedule:
            tick.retrain_reason = f"schedule: {at - since} since {since:%Y-%m-%d %H:%M}"
    if tick.retrain_reason is not None:
        from mlprod.loop.retrain import retrain

        logger.info("watch: retraining (%s)", tick.retrain_reason)
        try:
            tick.retrain = retrain(project, as_of=at, actor="mlprod watch")
        except MlprodError as exc:
            tick.errors.append(f"retrain: {exc}")
            logger.error("watch: the retrain failed: %s", exc)
        state |= {
            "last_retrain": at.isoformat(),
            "reason": tick.retrain_reason,
            "version": tick.retrain.challenger_version if tick.retrain else None,
            "error": tick.errors[-1] if tick.retrain is None else None,
        }
    _write_state(state_path, state)
    return tick


def _run_monitor(project: Project, *, now: datetime) -> _MonitorRun:
    from mlprod.monitor.run import run_monitor

    result: _MonitorRun = run_monitor(project, now=now)
    return result


def _read_state(path: Path, at: datetime) -> dict[str, Any]:
    """The remembered state; a first watch starts the schedule at ``at``."""
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"started": at.isoformat()}
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("watch: %s cannot be read (%s); the schedule starts again", path, exc)
        return {"started": at.isoformat()}
    state.setdefault("started", at.isoformat())
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Written whole under a temporary name, then renamed: a killed watcher leaves no half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the previous handlers come
    back after it). Off the main thread, where handlers cannot be set, nothing sets it."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("watch: %s received; stopping after this tick", signal.Signals(signum).name)
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
