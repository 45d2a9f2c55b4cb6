"""uvicorn on a free loopback port in a background thread: the real HTTP server the live tests
talk to."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve ``app`` and return once it accepts requests: the server, its thread, its base URL.

    Stop it with ``server.should_exit = True`` and ``thread.join(...)``.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"
