"""End the training runs whose process died before it could end them.

MLflow marks a run ``RUNNING`` when it starts and ``FINISHED`` (or ``FAILED``) when the block
that started it exits; a process killed in between (SIGKILL, out of memory, a power cut)
leaves the run ``RUNNING`` forever, even when its model version was registered. Each run that
mlprod starts is tagged with its process (host, pid and the process's start time, so a reused
pid is not taken for it); every registry command then ends, as ``KILLED``, the running runs of
this host whose process is gone. Runs of other hosts, and runs without these tags, are left
alone: nothing here can tell whether they still run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlprod.registry._store import quiet_mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient

HOST_TAG = "mlprod.host"
PID_TAG = "mlprod.pid"
STARTED_TAG = "mlprod.process_started"
ENDED_TAG = "mlprod.ended_by"
_MAX_RUNS = 1000


def process_tags() -> dict[str, str]:
    """The tags that name the process running a new run."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: _started(pid) or ""}


def end_orphaned_runs(client: MlflowClient) -> list[str]:
    """Mark KILLED the running runs of this host whose process is gone; return their ids.

    Only active runs of active experiments are looked at (MLflow refuses to change the
    others); a run that cannot be ended is left for the next command, never an error.
    """
    from mlflow.exceptions import MlflowException

    host = socket.gethostname()
    if "'" in host or "\\" in host:  # cannot be quoted in MLflow's filter; never seen
        return []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(
        experiments,
        filter_string=f"attributes.status = 'RUNNING' AND tags.`{HOST_TAG}` = '{host}'",
        max_results=_MAX_RUNS,
    )
    ended = []
    for run in running:
        tags, run_id = run.data.tags, run.info.run_id
        pid = tags.get(PID_TAG, "")
        if not pid.isdigit() or _alive(int(pid), tags.get(STARTED_TAG) or None):
            continue
        note = (
            f"its process (pid {pid} on {host}) ended without ending the run; "
            "a later mlprod command marked it KILLED"
        )
        try:
            with quiet_mlflow():  # a server's run links, printed on ending a run
                client.set_tag(run_id, ENDED_TAG, note)
                client.set_terminated(run_id, status="KILLED", end_time=int(time.time() * 1000))
        except MlflowException:
            continue
        ended.append(run_id)
    return ended


def _alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    state = _stat(pid)
    if state is None:
        return True  # no /proc: trust the signal
    if state[0] == "Z":  # killed, not yet reaped by its parent
        return False
    return started is None or state[19] == started


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot), where /proc tells."""
    state = _stat(pid)
    return state[19] if state is not None else None


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()
