"""Monitoring inside ``mlprod serve``: ``/dashboard`` and the monitoring gauges on ``/metrics``.

A pass runs at most once per ``monitor.interval`` (at least every ``MIN_REFRESH``), in a
background thread, started by a scrape or a dashboard view that finds the last one stale; a
scrape never waits for it (it answers the gauges of the last pass), the dashboard does. A
failing pass is logged and shown on the dashboard; it never breaks scoring.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI

from mlprod.errors import MlprodError, MonitorError
from mlprod.monitor.dashboard import DashboardData
from mlprod.monitor.dashboard_route import install_dashboard_route
from mlprod.monitor.gauges import MonitorGauges
from mlprod.monitor.report import dashboard_data
from mlprod.monitor.run import MonitorRun, run_monitor

if TYPE_CHECKING:
    from mlprod.api import Project

logger = logging.getLogger("mlprod.monitor")
MIN_REFRESH = 5.0  # seconds between passes, whatever the configured interval


class ServerMonitor:
    """The latest monitoring pass of a project, refreshed when stale."""

    def __init__(self, project: Project, gauges: MonitorGauges, refresh_seconds: float) -> None:
        self.project = project
        self.gauges = gauges
        self.refresh_seconds = max(MIN_REFRESH, refresh_seconds)
        self._lock = threading.Lock()  # one pass at a time
        self._latest: MonitorRun | None = None
        self._error: str | None = None
        self._finished = 0.0  # monotonic time of the last pass (0: never)
        self._thread: threading.Thread | None = None

    def stale(self) -> bool:
        return time.monotonic() - self._finished >= self.refresh_seconds

    def refresh_in_background(self) -> None:
        """Start a pass if the last one is stale and none is running (for scrapes)."""
        if not self.stale() or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._pass, name="mlprod-monitor", daemon=True)
        self._thread.start()

    def latest(self) -> MonitorRun:
        """The latest pass, running one first if it is stale (for the dashboard)."""
        if self.stale():
            self._pass()
        if self._latest is None:
            raise MonitorError(f"monitoring failed: {self._error or 'no pass has run yet'}")
        return self._latest

    def dashboard(self) -> DashboardData:
        run = self.latest()
        data = dashboard_data(self.project, run)
        if self._error is not None:
            data.notes.append(f"the latest monitoring pass failed: {self._error}")
        return data

    def _pass(self) -> None:
        with self._lock:
            if not self.stale():
                return  # another caller ran it while this one waited
            try:
                run = run_monitor(self.project, offline=True)
            except MlprodError as exc:
                self._error = str(exc)
                logger.warning("monitoring pass failed: %s", exc)
            else:
                self._latest, self._error = run, None
                self.gauges.update(run.metrics, run.firing)
            self._finished = time.monotonic()


def install_monitoring(app: FastAPI, project: Project) -> ServerMonitor:
    """Add ``/dashboard`` and the monitoring gauges to a server made by ``create_app``."""
    metrics = app.state.metrics
    monitor = ServerMonitor(
        project,
        MonitorGauges(metrics.registry),
        project.config.monitor.interval.total_seconds(),
    )
    metrics.before_scrape(monitor.refresh_in_background)
    install_dashboard_route(app, monitor.dashboard, project.config.name)
    app.state.monitor = monitor
    return monitor
