"""Benchmark: monitoring 1M logged predictions x 25 features, against Evidently on the same data.

Our path is the one `mlprod monitor run` takes: predictions stored in the SQLite prediction log
(with their features as JSON and 80% of them labelled through the feedback API), read once into
the monitoring archive, summarised into hourly windows per model version and variant, and turned
into drift (PSI, KS, Wasserstein, Jensen-Shannon), data quality (nulls, unseen levels, out of
range, volume) and performance (AUC, log-loss, calibration, value, estimated AUC) per window.

Three figures of ours, each in its own process with its own peak RSS:
- ingest: the log read into the archive, once per prediction (incremental in production);
- full recompute: every window summarised again from the archive and every metric computed;
- one new hourly window: 1,400 new predictions appended to the log, then a monitoring pass.

The reference is Evidently 0.7.23 (in its own virtualenv, ``bench/out/evidently-venv``, since
its pins clash with ours) on the same reference and current rows: data drift, data summary and
classification presets, one report over the whole current period (its in-memory pandas frames
are read from Parquet before the clock starts).

Run ``.venv/bin/python bench/monitor.py`` (``--rows 100000`` for a quick look). The section
"# Monitoring" of ``bench/RESULTS.md`` is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_BENCH = Path(__file__).resolve().parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from results_md import write_section  # noqa: E402

OUT = _BENCH / "out" / "monitor"
EVIDENTLY_VENV = _BENCH / "out" / "evidently-venv"
# Evidently 0.7.23 imports a pandas helper that pandas 2.3 removed.
EVIDENTLY = ["evidently==0.7.23", "pandas<2.3", "pyarrow"]
SECTION = "# Monitoring"
NUMERIC = [f"num_{i:02d}" for i in range(20)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
START = datetime(2013, 9, 1)
DAYS = 30
THRESHOLD = 0.35
NEW_WINDOW_ROWS = 1_400


def generate(rows: int, seed: int, drift_from: float | None) -> pa.Table:
    """Rows of 20 numeric and 5 categorical features, a calibrated score and its label.

    From ``drift_from`` (a share of the rows, in time order) three features shift: a mean
    moves, a spread doubles and a new category level appears."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        kind = i % 4
        if kind == 0:
            values = rng.normal(10 * i, 1 + i, rows)
        elif kind == 1:
            values = rng.lognormal(1 + i / 10, 0.5, rows)
        elif kind == 2:
            values = rng.poisson(3 + i, rows).astype(float)
        else:
            values = rng.uniform(-i, i + 1, rows)
        values[rng.random(rows) < 0.01 * (i % 3)] = np.nan
        columns[name] = values
    levels = [[f"L{j}" for j in range(4 + 3 * i)] for i in range(5)]
    for name, choices in zip(CATEGORICAL, levels, strict=True):
        weights = np.arange(len(choices), 0, -1, dtype=float)
        columns[name] = rng.choice(choices, rows, p=weights / weights.sum()).astype(object)
    if drift_from is not None:
        start = int(rows * drift_from)
        columns["num_00"][start:] += 2.0
        columns["num_05"][start:] = 5 + (columns["num_05"][start:] - 5) * 2
        late = rng.random(rows - start) < 0.2
        columns["cat_1"][start:][late] = "NEW"
    logit = -1.2 + 0.05 * np.nan_to_num(columns["num_00"]) / 2 + 0.3 * rng.normal(size=rows)
    score = 1 / (1 + np.exp(-logit))
    label = rng.random(rows) < score
    table = pa.table(
        {
            **{n: pa.array(columns[n], pa.float64(), from_pandas=True) for n in NUMERIC},
            **{n: pa.array(columns[n], pa.string()) for n in CATEGORICAL},
            "score": score,
            "label": label,
        }
    )
    return table


def prepare(rows: int) -> dict[str, Path]:
    """The reference and current rows as Parquet, and the current ones in a prediction log."""
    folder = OUT / f"rows-{rows}"
    paths = {
        "reference": folder / "reference.parquet",
        "current": folder / "current.parquet",
        "log": folder / "log.sqlite",
    }
    if all(path.exists() for path in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        path.unlink(missing_ok=True)
    pq.write_table(generate(200_000, seed=1, drift_from=None), paths["reference"])
    current = generate(rows, seed=2, drift_from=0.5)
    pq.write_table(current, paths["current"])
    print(f"writing {rows:,} predictions and their labels into the prediction log ...")
    _log_rows(paths["log"], current, START, timedelta(days=DAYS) / rows)
    return paths


def _log_rows(path: Path, table: pa.Table, start: datetime, step: timedelta) -> None:
    from mlprod.serve.predlog import Feedback, PredictionRecord, SqlitePredictionLog

    log = SqlitePredictionLog(path)
    rng = np.random.default_rng(3)
    names = NUMERIC + CATEGORICAL
    try:
        for offset in range(0, table.num_rows, 20_000):
            chunk = table.slice(offset, 20_000).to_pylist()
            records, feedback = [], []
            for i, row in enumerate(chunk):
                at = start + (offset + i) * step
                pid = uuid.uuid4().hex
                features = {n: (None if row[n] != row[n] else row[n]) for n in names}
                records.append(
                    PredictionRecord(
                        pid,
                        at,
                        at,
                        "bench",
                        "1",
                        {"id": offset + i},
                        {},
                        features,
                        row["score"],
                        row["score"] >= THRESHOLD,
                        latency_ms=1.0 + rng.random(),
                    )
                )
                if rng.random() < 0.8:
                    feedback.append(Feedback(label=row["label"], prediction_id=pid, observed_at=at))
            log.append(records)
            log.add_feedback(feedback)
    finally:
        log.close()


def _profile(reference: Path) -> Any:
    from mlprod.artefact.reference import reference_statistics
    from mlprod.monitor.compute import VersionProfile
    from mlprod.monitor.reference import ReferenceProfile

    table = pq.read_table(reference)
    scores = table["score"].to_numpy()
    stats = reference_statistics(table, NUMERIC + CATEGORICAL, scores, THRESHOLD)
    return VersionProfile(ReferenceProfile.of(stats), THRESHOLD, (300.0, -100.0, 0.0, 0.0))


def ours(paths: dict[str, Path], folder: Path) -> dict[str, Any]:
    """Ingest, full recompute and one new window, timed; every metric counted."""
    from mlprod.monitor.archive import Archive
    from mlprod.monitor.compute import compute_metrics
    from mlprod.monitor.store import MonitorStore
    from mlprod.monitor.windows import WindowSpec, summarise_windows
    from mlprod.project.monitoring import DriftSettings
    from mlprod.serve.predlog import SqlitePredictionLog

    profile = _profile(paths["reference"])
    types = {n: "DOUBLE" for n in NUMERIC} | {n: "VARCHAR" for n in CATEGORICAL}
    spec = WindowSpec(length=timedelta(hours=1))
    settings = DriftSettings()
    archive = Archive(folder / "archive")
    log = SqlitePredictionLog(paths["log"])
    figures: dict[str, Any] = {}

    started = time.perf_counter()
    ingested = archive.ingest(log, lambda name, version: types)
    figures["ingest_s"] = time.perf_counter() - started
    figures["rows"] = ingested.predictions
    figures["labels"] = ingested.labels

    store = MonitorStore(folder / "windows.sqlite")
    started = time.perf_counter()
    windows = summarise_windows(archive, "bench", "1", profile.reference, spec)
    summarised = time.perf_counter()
    metrics = compute_metrics(windows, {("bench", "1"): profile}, settings)
    computed = time.perf_counter()
    store.put(spec, windows, metrics)
    done = time.perf_counter()
    figures.update(
        full_s=done - started,
        full_summarise_s=summarised - started,
        full_metrics_s=computed - summarised,
        full_store_s=done - computed,
        windows=len(windows),
        metrics=len(metrics),
    )

    # One more hour of traffic, then an incremental pass over what it touched.
    extra = generate(NEW_WINDOW_ROWS, seed=4, drift_from=None)
    last = max(w.key.end for w in windows)
    log.close()
    _log_rows(paths["log"], extra, last, timedelta(hours=1) / NEW_WINDOW_ROWS)
    log = SqlitePredictionLog(paths["log"])
    started = time.perf_counter()
    new = archive.ingest(log, lambda name, version: types)
    positions = sorted({spec.position_of(last + timedelta(minutes=30))})
    fresh = summarise_windows(archive, "bench", "1", profile.reference, spec, positions)
    keys = {w.key for w in fresh}
    earlier = [(key, rows) for key, rows in store.keys(spec) if key not in keys]
    window_metrics = compute_metrics(fresh, {("bench", "1"): profile}, settings, earlier)
    store.put(spec, fresh, window_metrics)
    figures["window_s"] = time.perf_counter() - started
    figures["window_rows"] = new.predictions
    figures["window_metrics"] = len(window_metrics)
    log.close()
    store.close()
    return figures


def evidently(paths: dict[str, Path]) -> dict[str, Any]:
    """Evidently's drift, summary and classification presets on the same rows."""
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset, DataSummaryPreset

    reference = pd.read_parquet(paths["reference"])
    current = pd.read_parquet(paths["current"])
    for frame in (reference, current):
        frame["prediction"] = (frame["score"] >= THRESHOLD).astype(int)
        frame["label"] = frame["label"].astype(int)
    definition = DataDefinition(
        numerical_columns=NUMERIC,
        categorical_columns=CATEGORICAL,
        classification=[BinaryClassification(target="label", prediction_probas="score")],
    )
    started = time.perf_counter()
    report = Report([DataDriftPreset(), DataSummaryPreset(), ClassificationPreset()])
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    return {"report_s": time.perf_counter() - started, "metrics": len(result.get("metrics", []))}


def _worker(kind: str, rows: int, folder: Path) -> None:
    paths = prepare(rows) if kind == "ours" else _paths(rows)
    figures = ours(paths, folder) if kind == "ours" else evidently(paths)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def _paths(rows: int) -> dict[str, Path]:
    folder = OUT / f"rows-{rows}"
    return {
        "reference": folder / "reference.parquet",
        "current": folder / "current.parquet",
        "log": folder / "log.sqlite",
    }


def _run(python: Path, kind: str, rows: int, folder: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), __file__, "--worker", kind, "--rows", str(rows), "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    figures: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    figures["process_s"] = time.perf_counter() - started
    return figures


def _evidently_python() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {EVIDENTLY} into {EVIDENTLY_VENV} (once) ...")
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", choices=["ours", "evidently"])
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--no-evidently", action="store_true")
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.rows, args.folder)
        return
    prepare(args.rows)
    runs = OUT / f"run-{datetime.now(UTC):%Y%m%d%H%M%S}"
    mine = _run(Path(sys.executable), "ours", args.rows, runs / "ours")
    print(f"ours: {json.dumps(mine)}")
    theirs = None
    if not args.no_evidently:
        theirs = _run(_evidently_python(), "evidently", args.rows, runs / "evidently")
        print(f"evidently: {json.dumps(theirs)}")
    _write(args.rows, mine, theirs)


def _write(rows: int, mine: dict[str, Any], theirs: dict[str, Any] | None) -> None:
    import mlprod

    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"Generated by `bench/monitor.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; mlprod "
        f"{mlprod.__version__}; {os.cpu_count()} cores; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
        "",
        f"{mine['rows']:,} logged predictions x 25 features (20 numeric, 5 categorical; 80% "
        "labelled) "
        f"over {DAYS} days, against a 200,000-row reference; hourly windows. Each measurement "
        "is its own process; peak RSS is that process's high-water mark.",
        "",
        "| step | mlprod | target |",
        "|---|---|---|",
        f"| ingest: log -> archive, once per prediction | {mine['ingest_s']:.2f} s | - |",
        f"| full recompute: {mine['windows']:,} windows, {mine['metrics']:,} metric values | "
        f"{mine['full_s']:.2f} s (summarise {mine['full_summarise_s']:.2f}, metrics "
        f"{mine['full_metrics_s']:.2f}, store {mine['full_store_s']:.2f}) | <= 3 s |",
        f"| one new hourly window ({mine['window_rows']:,} rows: ingest, summarise, metrics, "
        f"store) | {mine['window_s']:.3f} s | <= 0.3 s |",
        f"| peak RSS | {mine['peak_rss_mb']:.0f} MB | - |",
    ]
    if theirs is not None:
        ratio = theirs["report_s"] / mine["full_s"]
        lines += [
            "",
            "| Evidently 0.7.23 (drift + summary + classification presets, one report) | "
            "seconds | peak RSS | Evidently / mlprod full recompute |",
            "|---|---|---|---|",
            f"| same rows | {theirs['report_s']:.1f} s | {theirs['peak_rss_mb']:.0f} MB | "
            f"{ratio:.1f}x (target >= 20x) |",
        ]
    write_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
