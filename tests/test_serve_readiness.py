"""`/ready` covers every store a server needs: the online store (Redis), the prediction log
(PostgreSQL) and the routing store of an experiment (the log's database). Each store is reached
through a TCP relay the test can cut: the server is started ready, each cut makes /ready
answer 503 naming what cannot be reached, and mending it makes the server ready again."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from live_server import free_port, start_server
from psycopg import sql

from mlprod import Project
from mlprod.data.online_store import RedisOnlineStore
from mlprod.serve.app import create_app
from mlprod.serve.predlog import PostgresPredictionLog
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.rollout import MlflowRegistry
from mlprod.serve.routing.router import RegistryLoader, RoutedService
from mlprod.serve.routing.state import RoutingStore
from mlprod.serve.routing.sync import ServerRouting

pytestmark = pytest.mark.postgres


class Relay:
    """Forwards a loopback port to a real server; ``cut`` closes the port and every
    connection through it (the server is unreachable), ``mend`` opens the port again."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        host, port = parts.hostname or "127.0.0.1", parts.port or 0
        self.target, self.port = (host, port), free_port()
        netloc = parts.netloc.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")
        self.url = urlunsplit(parts._replace(netloc=netloc))  # the same server, through here
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.mend()

    def mend(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        self._close(self._listener)
        with self._lock:
            for sock in list(self._sockets):
                self._close(sock)
            self._sockets.clear()

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                inside, _ = listener.accept()
            except OSError:  # cut
                return
            outside = socket.create_connection(self.target)
            with self._lock:
                self._sockets |= {inside, outside}
            for source, sink in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextmanager
def experiment_server(
    deployed: Project, redis: Relay, postgres: Relay, schema: str
) -> Iterator[httpx.Client]:
    """The server of a one-variant experiment whose stores are behind the relays."""
    store = RedisOnlineStore(redis.url, schema)
    log = PostgresPredictionLog(postgres.url, schema)
    loader = RegistryLoader(deployed.folder, deployed.tracking_uri(), store, log)
    policy = RoutingPolicy("readiness", (Variant("control", "flights@champion", 1),))
    service = RoutedService(policy, loader, store, log)
    routing = ServerRouting(
        RoutingStore.postgres(postgres.url, schema), log, MlflowRegistry(deployed.tracking_uri())
    )
    server, thread, url = start_server(create_app(service, routing=routing))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        service.close()


def _ready(client: httpx.Client) -> tuple[int, dict[str, str]]:
    answer = client.get("/ready")
    v2 = client.get("/v2/health/ready")
    assert v2.status_code == answer.status_code and v2.json() == {"ready": answer.is_success}
    body: dict[str, Any] = answer.json()
    assert body["ready"] is answer.is_success
    return answer.status_code, body["checks"]


def test_ready_names_each_store_that_cannot_be_reached_and_recovers(
    deployed: Project, redis_url: str, postgres_url: str
) -> None:
    redis, postgres = Relay(redis_url), Relay(postgres_url)
    schema = f"mlprod_ready_{uuid.uuid4().hex[:12]}"
    everything = {
        "model": "ok",
        "online_store": "ok",
        "prediction_log": "ok",
        "routing_store": "ok",
    }
    try:
        with experiment_server(deployed, redis, postgres, schema) as client:
            assert _ready(client) == (200, everything)

            postgres.cut()
            status, checks = _ready(client)
            assert status == 503
            assert {k: v for k, v in checks.items() if v == "ok"} == {
                "model": "ok",
                "online_store": "ok",
            }
            where = f"127.0.0.1:{postgres.port}"
            assert "prediction log in PostgreSQL" in checks["prediction_log"]
            assert where in checks["prediction_log"]
            assert "routing state in PostgreSQL" in checks["routing_store"]
            assert where in checks["routing_store"]

            postgres.mend()
            assert _ready(client) == (200, everything)

            redis.cut()
            status, checks = _ready(client)
            assert status == 503
            assert checks["online_store"].startswith(
                f"cannot reach the online store: Redis at {redis.url} does not answer"
            )
            assert {k: v for k, v in checks.items() if k != "online_store"} == {
                "model": "ok",
                "prediction_log": "ok",
                "routing_store": "ok",
            }

            redis.mend()
            assert _ready(client) == (200, everything)
    finally:
        redis.cut()
        postgres.cut()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
        RedisOnlineStore(redis_url, schema).clear()
