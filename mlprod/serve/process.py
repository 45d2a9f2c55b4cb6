"""How ``mlprod serve`` runs its app under uvicorn, and stops without dropping a request.

On SIGTERM (what ``docker stop``, Kubernetes and systemd send) or Ctrl-C the server

1. stops accepting connections: with workers, the supervisor shuts the listening socket it
   shares with them at once, so a new connection is refused (a client or load balancer goes
   elsewhere) rather than left in the kernel's queue until a worker busy scoring gets to it,
   only to be reset when the server exits;
2. lets every request it has started reading finish (scored, logged, answered), for up to
   ``graceful_timeout`` seconds (uvicorn's ``timeout_graceful_shutdown``; past it the
   remaining ones are cancelled);
3. runs the app's shutdown (queued shadows scored, stores closed) and exits 0.
"""

from __future__ import annotations

import signal
import socket
import sys
from contextlib import suppress
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


def run_server(app: Any, *, host: str, port: int, graceful_timeout: int, workers: int = 1) -> None:
    """Serve ``app`` (with ``workers`` > 1: the import string of an app factory, which each
    worker process calls) until SIGTERM or Ctrl-C, then drain as the module says."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": graceful_timeout,
    }
    if workers == 1:
        # uvicorn re-raises the signal it stopped on once it has drained; SIGTERM then ends
        # the command with exit code 0 instead of killing it (Ctrl-C keeps its own handling).
        signal.signal(signal.SIGTERM, _exit_cleanly)
        uvicorn.run(app, **options)
        return
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    supervisor = _Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    if not supervisor.signalled:  # it gave up: a worker failed to start (logged by uvicorn)
        sys.exit(STARTUP_FAILURE)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, shutting the socket it shares with them as
    soon as a stop signal arrives. uvicorn only queues the signal, for a loop that can spend
    seconds health-checking busy workers before it passes the signal on to them."""

    signalled = False

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        for sock in self.sockets:
            with suppress(OSError):  # not listening (any more): nothing to stop
                sock.shutdown(socket.SHUT_RDWR)
        self.signal_queue.append(signum)  # what uvicorn's own handler does
