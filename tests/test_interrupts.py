"""Ctrl-C is a clean stop: SIGINT sent to a real ``mlprod`` process ends it with one line on
stderr, exit code 130, no traceback, and nothing half written."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, copy_example

from mlprod.interrupts import INTERRUPTED
from mlprod.registry.models import list_models
from mlprod.registry.tracking import tracking_uri_for

MLPROD = ROOT / ".venv" / "bin" / "mlprod"
# Later tries wait less, in case the command finished before the signal came.
DELAYS = (2.0, 1.0, 0.3)


@pytest.fixture
def example(tmp_path: Path, flights_db: Path) -> Path:
    folder = copy_example(tmp_path)
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(flights_db)
    return folder


@contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """A child inherits an ignored SIGINT (pytest started in the background by a shell
    without job control), and Python would then never raise KeyboardInterrupt in it. A
    handler, unlike SIG_IGN, is reset to the default by exec."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if before is signal.SIG_IGN:
            signal.signal(signal.SIGINT, before)


def interrupt(
    folder: Path, args: list[str], started: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    """Run ``mlprod args`` in ``folder``, send SIGINT a moment after ``started()`` holds, and
    return how it ended; tried again, sooner, while the command finishes before the signal."""
    for delay in DELAYS:
        shutil.rmtree(folder / ".mlprod", ignore_errors=True)  # what a finished try wrote
        with _sigint_not_ignored():
            process = subprocess.Popen(
                [str(MLPROD), *args],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        try:
            deadline = time.monotonic() + 120
            while not started() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(delay)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
            process.wait()
        if process.returncode != 0:
            return subprocess.CompletedProcess(process.args, process.returncode, out, err)
    pytest.fail(f"mlprod {' '.join(args)} finished each time before SIGINT reached it")


def test_ctrl_c_during_a_build_interrupts_the_query(example: Path) -> None:
    """The signal lands while DuckDB computes the features (about 10 s of queries, from a
    second after the store folder appears)."""
    store = example / ".mlprod"
    ended = interrupt(example, ["features", "build", "--as-of", "2014-06-01"], store.exists)
    assert (ended.returncode, ended.stderr, ended.stdout) == (
        INTERRUPTED,
        "interrupted; nothing was written\n",
        "",
    )
    assert not (store / "features").exists()


def _small_search(config: dict[str, Any]) -> None:
    """Few features (a quick build) and one model whose trials take seconds each."""
    config["features"] = [f for f in config["features"] if f["kind"] == "expr"][:6]
    train = config["train"]
    train["models"] = train["models"][:1]
    train["models"][0]["params"]["n_estimators"] = 2000
    train["tuning"]["trials"] = 3
    train.pop("ensemble", None)


def test_ctrl_c_during_tuning_registers_nothing(example: Path) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    config = yaml.safe_load((example / "mlprod.yaml").read_text())
    _small_search(config)
    (example / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    tuning = example / ".mlprod" / "tuning"

    def tuning_started() -> bool:
        return any(tuning.glob("*.log"))

    ended = interrupt(example, ["train"], tuning_started)
    assert (ended.returncode, ended.stderr, ended.stdout) == (
        INTERRUPTED,
        "interrupted; nothing was registered (finished tuning trials are kept)\n",
        "",
    )
    assert list_models(tracking_uri_for(example / ".mlprod", None)) == []
    # Optuna recorded the interrupted trial as failed: nothing stays RUNNING.
    (journal,) = tuning.glob("*.log")
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_names(storage)
    states = [t.state for t in optuna.load_study(study_name=study, storage=storage).trials]
    assert states and optuna.trial.TrialState.RUNNING not in states
