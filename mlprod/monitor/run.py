"""One monitoring pass: archive what the log gained, summarise the windows it touched, compute
the metrics, apply the alert rules and send what changed.

Incremental: rows and labels are read from the log once (the archive's cursors); a window is
summarised again only when new predictions or labels reach it. ``recompute=True`` drops every
summary and summarises the whole archive again (what the benchmark times).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import MlprodError
from mlprod.monitor.alert_state import AlertState, open_alert_store
from mlprod.monitor.alerts import AlertEvent, evaluate, firing
from mlprod.monitor.archive import Archive, FeatureTypes, Ingested
from mlprod.monitor.compute import VersionProfile, compute_metrics
from mlprod.monitor.reference import NumericReference, ReferenceProfile
from mlprod.monitor.sinks import Failure, send
from mlprod.monitor.store import MonitorStore
from mlprod.monitor.values import MetricValue, WindowKey
from mlprod.monitor.windows import Window, WindowSpec, summarise_windows
from mlprod.progress import NO_PROGRESS, ProgressCallback

if TYPE_CHECKING:
    from mlprod.api import Project


@dataclass
class MonitorRun:
    """What a pass found and did."""

    load_metrics: Callable[[], list[MetricValue]]  # every window's, read when first asked
    windows: list[WindowKey]  # every window, by start
    fresh: list[Window]  # the windows summarised (again) in this pass, with their summaries
    closed: set[WindowKey]
    events: list[AlertEvent]
    firing: list[AlertState]
    failures: list[Failure]
    ingested: Ingested
    summarised: int  # windows summarised (again) in this pass
    offline_auc: dict[str, float] = field(default_factory=dict)  # version -> test AUC
    seconds: dict[str, float] = field(default_factory=dict)  # time per step

    @cached_property
    def metrics(self) -> list[MetricValue]:
        """Every window's metrics, by window start (a pass that changed one window reads
        only that one's; the rest are read here, for the report, dashboard or gauges)."""
        return self.load_metrics()

    def summary_line(self) -> str:
        firing_now = len(self.firing)
        return (
            f"monitored {len(self.windows):,} windows ({self.summarised:,} summarised now, "
            f"{self.ingested.predictions:,} new predictions, {self.ingested.labels:,} new "
            f"labels); {len(self.events)} alert change(s), {firing_now} firing"
        )


class Profiles:
    """The monitoring profile of each model version seen in the log, loaded once."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._loaded: dict[tuple[str, str], VersionProfile | None] = {}
        self.offline_auc: dict[str, float] = {}

    def get(self, name: str, version: str) -> VersionProfile | None:
        key = (name, version)
        if key not in self._loaded:
            self._loaded[key] = self._load(name, version)
        return self._loaded[key]

    def _load(self, name: str, version: str) -> VersionProfile | None:
        try:
            deployment = self.project.deployment(f"{name}/{version}")
        except MlprodError:
            return None  # a version this registry does not hold: its rows are not monitored
        pipeline = deployment.pipeline
        train = self.project.config.train
        worth = None
        if train is not None and train.value is not None:
            amounts = [getattr(train.value, o) for o in ("tp", "fp", "fn", "tn")]
            if all(isinstance(a, int | float) for a in amounts):
                worth = (float(amounts[0]), float(amounts[1]), float(amounts[2]), float(amounts[3]))
        return VersionProfile(
            reference=ReferenceProfile.of(pipeline.reference or {}),
            threshold=float(pipeline.threshold),
            worth=worth,
        )

    def load_offline_auc(self) -> None:
        """The test AUC each monitored version was registered with (for live vs offline)."""
        from mlprod.registry.models import show_model

        for name in sorted({name for name, _ in self.all()}):
            try:
                shown = show_model(self.project.tracking_uri(), name)
            except MlprodError:
                continue
            for entry in shown["versions"]:
                auc = entry["metrics"].get("test_auc")
                if isinstance(auc, int | float):
                    self.offline_auc[str(entry["version"])] = float(auc)

    def feature_types(self, name: str, version: str) -> FeatureTypes:
        profile = self.get(name, version)
        if profile is None:
            return {}
        return {
            feature: "DOUBLE" if isinstance(ref, NumericReference) else "VARCHAR"
            for feature, ref in profile.reference.features.items()
        }

    def all(self) -> dict[tuple[str, str], VersionProfile]:
        return {key: value for key, value in self._loaded.items() if value is not None}


def run_monitor(
    project: Project,
    *,
    now: datetime | None = None,
    recompute: bool = False,
    send_alerts: bool = True,
    offline: bool = False,
    progress: ProgressCallback = NO_PROGRESS,
) -> MonitorRun:
    """Bring monitoring up to date with the prediction log and apply the alert rules
    (``offline``: also read each version's registered test AUC, for the dashboard)."""
    config = project.config.monitor
    folder = project.store / "monitor"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    profiles = Profiles(project)
    archive = Archive(folder / "archive")
    log = project.prediction_log()
    try:
        ingested = archive.ingest(log, profiles.feature_types)
    finally:
        log.close()
    timings["ingest"] = time.perf_counter() - started
    spec = WindowSpec.of(config.window)
    store = MonitorStore(folder / "windows.sqlite")
    try:
        mark = time.perf_counter()
        # A store of an older layout (emptied on opening) or an empty one starts again.
        everything = recompute or store.reset or not store.keys(spec)
        if recompute:
            store.clear(spec)
        dirty = _dirty(archive, spec, ingested, everything=everything)
        fresh: list[Window] = []
        task = progress.start("summarising windows", total=len(dirty))
        for (name, version), positions in dirty.items():
            profile = profiles.get(name, version)
            if profile is not None:
                fresh.extend(
                    summarise_windows(archive, name, version, profile.reference, spec, positions)
                )
            task.advance()
        task.finish()
        timings["summarise"] = time.perf_counter() - mark
        mark = time.perf_counter()
        fresh_keys = {w.key for w in fresh}
        earlier = [(key, rows) for key, rows in store.keys(spec) if key not in fresh_keys]
        computed = compute_metrics(fresh, profiles.all(), config.drift, earlier)
        timings["metrics"] = time.perf_counter() - mark
        mark = time.perf_counter()
        store.put(spec, fresh, computed)
        windows = store.keys(spec)
        timings["store"] = time.perf_counter() - mark
    finally:
        store.close()
    if offline:
        for name, version in {(k.model_name, k.model_version) for k, _ in windows}:
            profiles.get(name, version)
        profiles.load_offline_auc()
    closed = _closed(windows, spec, now)
    mark = time.perf_counter()
    changed = _changed(windows, {w.key for w in fresh}, spec, now)
    candidates = _stored_metrics(folder, spec, changed)
    alert_store = open_alert_store(project.config, project.folder)
    try:
        events = evaluate(config.alerts, candidates, closed, alert_store, now=now)
        failures = send(events, config.sinks, project.folder) if send_alerts and events else []
        firing_now = firing(alert_store, config.alerts)
    finally:
        alert_store.close()
    timings["alerts"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return MonitorRun(
        load_metrics=partial(_stored_metrics, folder, spec, None),
        windows=[key for key, _ in windows],
        fresh=fresh,
        closed=closed,
        events=events,
        firing=firing_now,
        failures=failures,
        ingested=ingested,
        summarised=len(fresh),
        offline_auc=dict(profiles.offline_auc),
        seconds=timings,
    )


def _stored_metrics(
    folder: Path, spec: WindowSpec, windows: Collection[WindowKey] | None
) -> list[MetricValue]:
    """The metrics kept in the monitoring store (of these windows only, when given)."""
    store = MonitorStore(folder / "windows.sqlite")
    try:
        return store.metrics(spec, windows=windows)
    finally:
        store.close()


def _dirty(
    archive: Archive, spec: WindowSpec, ingested: Ingested, everything: bool
) -> dict[tuple[str, str], list[int] | None]:
    """The windows to summarise again, per model version (None: all of them)."""
    if everything or spec.count is not None:
        # Count windows shift with every new row of a variant: summarise the version again.
        touched = (
            set(archive.versions())
            if everything
            else _versions_of([*ingested.new_rows, *ingested.labelled_rows])
        )
        return dict.fromkeys(sorted(touched))
    dirty: dict[tuple[str, str], set[int]] = defaultdict(set)
    assert spec.length is not None
    length = int(spec.length.total_seconds() * 1_000_000)
    for part in [*ingested.new_rows, *ingested.labelled_rows]:
        _add_positions(dirty, part, length)
    return {key: sorted(positions) for key, positions in sorted(dirty.items())}


def _add_positions(dirty: dict[tuple[str, str], set[int]], rows: pa.Table, length: int) -> None:
    if rows.num_rows == 0:
        return
    micros = np.asarray(pc.cast(rows["prediction_time"], pa.int64()).to_numpy(), dtype=np.int64)
    positions = (micros // length) * length
    names = rows["model_name"].to_pylist()
    versions = rows["model_version"].to_pylist()
    for key, position in zip(zip(names, versions, strict=True), positions.tolist(), strict=True):
        dirty[key].add(position)


def _versions_of(parts: list[pa.Table]) -> set[tuple[str, str]]:
    """The (model name, version) pairs of rows with those two columns."""
    found: set[tuple[str, str]] = set()
    for part in parts:
        found |= set(
            zip(part["model_name"].to_pylist(), part["model_version"].to_pylist(), strict=True)
        )
    return found


def _closed(
    windows: list[tuple[WindowKey, int]], spec: WindowSpec, now: datetime | None
) -> set[WindowKey]:
    """Windows that will get no more predictions: a later window has begun (or ``now`` is past
    their end); a count window once it is full."""
    if spec.count is not None:
        return {key for key, rows in windows if rows >= spec.count}
    latest = max((key.start for key, _ in windows), default=None)
    return {
        key
        for key, _ in windows
        if (latest is not None and key.start < latest) or (now is not None and key.end <= now)
    }


def _changed(
    windows: list[tuple[WindowKey, int]],
    fresh: set[WindowKey],
    spec: WindowSpec,
    now: datetime | None,
) -> set[WindowKey]:
    """The windows whose alert state this pass can change: those summarised again, the window
    before each of them in its series (it may have just closed), and, with ``now``, those that
    ended within the last two window lengths (closed by the clock)."""
    changed = set(fresh)
    previous: dict[tuple[str, str, str], WindowKey] = {}
    for key, _ in windows:  # by start
        series = (key.model_name, key.model_version, key.variant)
        if key in fresh and series in previous:
            changed.add(previous[series])
        previous[series] = key
    if now is not None and spec.length is not None:
        recent = now - 2 * spec.length
        changed |= {key for key, _ in windows if recent < key.end <= now}
    return changed


def describe(run: MonitorRun) -> dict[str, Any]:
    """The pass as plain data (for ``--json`` and the dashboard's notes)."""
    return {
        "windows": len(run.windows),
        "summarised": run.summarised,
        "new_predictions": run.ingested.predictions,
        "new_labels": run.ingested.labels,
        "events": [event.to_dict() for event in run.events],
        "firing": [state.to_dict() for state in run.firing],
        "seconds": run.seconds,
    }
