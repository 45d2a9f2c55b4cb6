"""The admin API on a real server on loopback: closed without a token configured, a bare 401
for a missing or wrong token on every route, changes with the right one, and an audit row for
each change that names who did it and holds nothing of the token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from live_server import start_server

from mlprod import Project
from mlprod.serve.app import create_app
from mlprod.serve.routing.policy import RoutingPolicy, Variant
from mlprod.serve.routing.rollout import MlflowRegistry
from mlprod.serve.routing.router import RegistryLoader, RoutedService
from mlprod.serve.routing.state import RoutingStore
from mlprod.serve.routing.sync import ServerRouting

TOKEN = "admin-test-" + uuid.uuid4().hex
UNAUTHORIZED = {"error": {"status": 401, "message": "unauthorized", "problems": []}}
ROUTES = [
    ("GET", "/admin/routing"),
    ("PUT", "/admin/routing"),
    ("GET", "/admin/rollout"),
    ("POST", "/admin/rollout"),
    ("POST", "/admin/rollout/abort"),
    ("POST", "/admin/reload"),
    ("GET", "/admin/audit"),
]


@pytest.fixture(scope="module")
def project(deployed: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The deployed project (same registry and online store) with a log of its own."""
    folder = tmp_path_factory.mktemp("admin")
    (folder / "data").symlink_to(deployed.folder / "data")
    (folder / ".mlprod").symlink_to(deployed.folder / ".mlprod")
    config = yaml.safe_load((deployed.folder / "mlprod.yaml").read_text())
    config["log"] = {"kind": "sqlite", "path": "admin-log/predictions.sqlite"}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Project.load(folder)


@dataclass
class Servers:
    admin: httpx.Client  # the server with a token configured
    closed: httpx.Client  # the same service, served with no token configured
    store: RoutingStore
    log_file: Path


@pytest.fixture(scope="module")
def servers(project: Project, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Servers]:
    monkeypatch_module.delenv("MLPROD_ADMIN_TOKEN", raising=False)
    store, log = project.online_store(), project.prediction_log()
    loader = RegistryLoader(project.folder, project.tracking_uri(), store, log)
    policy = RoutingPolicy("flights-main", (Variant("control", "flights@champion", 1),))
    service = RoutedService(policy, loader, store, log)
    routing = ServerRouting(
        RoutingStore.for_log(project.config.log, project.folder),
        log,
        MlflowRegistry(project.tracking_uri()),
        poll_s=0.1,
    )
    running = [
        start_server(create_app(service, routing=routing, admin_token=TOKEN)),
        start_server(create_app(service)),  # MLPROD_ADMIN_TOKEN is unset: disabled
    ]
    reader = RoutingStore.for_log(project.config.log, project.folder)
    with (
        httpx.Client(base_url=running[0][2], timeout=30) as admin,
        httpx.Client(base_url=running[1][2], timeout=30) as closed,
    ):
        yield Servers(admin, closed, reader, project.folder / "admin-log" / "predictions.sqlite")
    for server, thread, _ in running:
        server.should_exit = True
        thread.join(15)
    reader.close()
    service.close()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _bearer(token: str, actor: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    return headers | ({"X-Actor": actor} if actor else {})


POLICY = {
    "experiment": "flights-admin",
    "variants": [{"name": "control", "model": "flights/1", "weight": 1}],
    "assign_by": "tailnum",
}


def test_a_missing_or_wrong_token_gets_a_bare_401_on_every_route(servers: Servers) -> None:
    revision, audited = servers.store.latest_revision(), len(servers.store.audit_trail())
    refusals = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for method, path in ROUTES:
        for headers in refusals:
            answer = servers.admin.request(method, path, headers=headers, json=POLICY)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.json() == UNAUTHORIZED
            assert answer.headers["www-authenticate"] == "Bearer"
    # Nothing changed, nothing was recorded.
    assert servers.store.latest_revision() == revision
    assert len(servers.store.audit_trail()) == audited


def test_without_a_configured_token_the_admin_api_is_closed(servers: Servers) -> None:
    for method, path in ROUTES:
        answer = servers.closed.request(method, path, headers=_bearer(TOKEN), json=POLICY)
        assert answer.status_code == 403
        assert answer.json()["error"]["message"] == (
            "the admin API is disabled: start the server with MLPROD_ADMIN_TOKEN set to a "
            "secret token to enable it"
        )


def test_the_right_token_changes_routing_and_each_change_is_audited_without_it(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        changed = servers.admin.put("/admin/routing", headers=_bearer(TOKEN, "alice"), json=POLICY)
        assert changed.status_code == 200, changed.text
        revision = changed.json()["policy"]["revision"]
        assert changed.json()["applied_revision"] == revision
        shown = servers.admin.get("/admin/routing", headers=_bearer(TOKEN)).json()
        assert shown["policy"]["experiment"] == "flights-admin"
        assert shown["stored_revision"] == shown["applied_revision"] == revision
        reloaded = servers.admin.post("/admin/reload", headers=_bearer(TOKEN))
        assert reloaded.status_code == 200, reloaded.text
    trail = servers.store.audit_trail(2)
    reload, change = trail
    assert (change.actor, change.action, change.detail["policy"]["experiment"]) == (
        "alice",
        "routing.set",
        "flights-admin",
    )
    assert change.peer is not None and change.peer.startswith("127.0.0.1:")
    assert (reload.action, reload.actor) == ("reload", reload.peer)  # no X-Actor: the peer
    # The token is nowhere: not in the audit rows, the database file, nor the server's log.
    assert TOKEN not in str([e.to_json() for e in servers.store.audit_trail(1000)])
    stored = b"".join(p.read_bytes() for p in servers.log_file.parent.iterdir() if p.is_file())
    assert TOKEN.encode() not in stored
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_a_short_token_is_refused_when_the_server_starts() -> None:
    from mlprod.errors import ConfigError
    from mlprod.serve.admin import AdminAuth

    with pytest.raises(ConfigError) as error:
        AdminAuth("secret")
    assert str(error.value) == (
        "MLPROD_ADMIN_TOKEN is 6 characters long; use at least 16, e.g. the output of: "
        'python -c "import secrets; print(secrets.token_urlsafe(32))"'
    )


def test_bad_admin_requests_are_refused_with_what_is_wrong(servers: Servers) -> None:
    headers = _bearer(TOKEN)
    zero = {**POLICY, "variants": [{"name": "control", "model": "flights/1", "weight": 0}]}
    answer = servers.admin.put("/admin/routing", headers=headers, json=zero)
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "the variants of experiment 'flights-admin' have weights summing to 0; give at least "
        "one served variant a weight above 0"
    )
    revision = servers.store.latest_revision()
    missing = {**POLICY, "variants": [{"name": "control", "model": "flights/99", "weight": 1}]}
    answer = servers.admin.put("/admin/routing", headers=headers, json=missing)
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith("the policy cannot be served: ")
    assert "99" in answer.json()["error"]["message"]
    assert servers.store.latest_revision() == revision  # nothing stored
    answer = servers.admin.put(
        "/admin/routing", headers=_bearer(TOKEN, "alice<script>"), json=POLICY
    )
    assert answer.status_code == 400 and "invalid X-Actor header" in answer.text
    answer = servers.admin.post("/admin/rollout/abort", headers=headers)
    assert answer.status_code == 409
    assert answer.json()["error"]["message"].startswith("no rollout is running")
    answer = servers.admin.post(
        "/admin/rollout", headers=headers, json={"model": "flights/1", "steps": "5,50"}
    )
    assert answer.status_code == 409
    assert "the last step must be 100" in answer.json()["error"]["message"]
