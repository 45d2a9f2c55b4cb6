"""What the routing tests share: two real versions of the flights model, a server on loopback
around any scoring service, and prediction logs on SQLite and PostgreSQL.

Training is the expensive part, so it happens once per session and cheaply: the flights of
the first three days of every month (the out-of-time split still has months to train, validate
and test on), one small LightGBM and no tuning or ensemble. Version 1 reads every feature of
the example; version 2 leaves out the origin weather, so the two versions differ in features
as real successive versions do. Version 1 is the champion; the online store is materialized
for it (version 2 reads a subset of the same tables).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pyarrow as pa
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE, copy_flights
from live_server import start_server
from psycopg import sql

from mlprod import Project
from mlprod.serve.app import create_app
from mlprod.serve.contract import ScoringService
from mlprod.serve.predlog import PostgresPredictionLog, PredictionLog, SqlitePredictionLog
from mlprod.serve.routing.policy import RoutingPolicy
from mlprod.serve.routing.router import RegistryLoader, RoutedService, open_routed_service
from mlprod.serve.service import OnlineService

AT = "2013-07-02T17:00:00"


@dataclass(frozen=True)
class TwoVersions:
    project: Project
    records: list[dict[str, Any]]  # request records of real flights, each with a tailnum

    @property
    def uri(self) -> str:
        return self.project.tracking_uri()

    @property
    def name(self) -> str:
        return self.project.registry_name


# Built once per session even though each test module that imports the fixture registers it
# anew (pytest keeps a fixture per module that defines it).
_BUILT: dict[Path, TwoVersions] = {}


@pytest.fixture(scope="session")
def two_versions(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoVersions:
    if flights_db not in _BUILT:
        _BUILT[flights_db] = _train_two_versions(flights_db, tmp_path_factory)
    return _BUILT[flights_db]


def _train_two_versions(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoVersions:
    from mlprod.registry.models import promote

    root = tmp_path_factory.mktemp("routing")
    sample = copy_flights(flights_db, root / "sample.duckdb", "day <= 3")
    folder = root / "flights"
    shutil.copytree(FLIGHTS_EXAMPLE, folder, ignore=shutil.ignore_patterns(".mlprod", "data"))
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(sample)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    config.pop("example_data", None)
    params = {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 50}
    config["train"]["models"] = [
        {"kind": "lightgbm", "params": {**params, "n_estimators": 60, "num_threads": 1}}
    ]
    config["train"]["tuning"] = {"trials": 1, "seed": 0}
    config["train"].pop("ensemble", None)
    every_feature = config["features"]
    for features in (
        every_feature,
        [f for f in every_feature if not f["name"].startswith("origin_")],
    ):
        config["features"] = features
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        Project.load(folder).train()
    config["features"] = every_feature
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    project = Project.load(folder)
    promote(project.tracking_uri(), project.registry_name, 1)
    project.materialize(f"{project.registry_name}/1")
    fields = [f.name for f in project.deployment(f"{project.registry_name}/1").request_fields]
    with duckdb.connect(str(sample), read_only=True) as con:
        rows = con.sql(
            f"SELECT {', '.join(fields)} FROM flights WHERE tailnum IS NOT NULL "
            "ORDER BY flight_id LIMIT 6000"
        ).to_arrow_table()
    return TwoVersions(project, rows.to_pylist())


# --- prediction logs ----------------------------------------------------------------------------

LogFactory = Callable[[], PredictionLog]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogFactory]:
    """Opens the test's prediction log (each call a new connection to the same log): a SQLite
    file, or a fresh schema in the test PostgreSQL dropped at the end."""
    if request.param == "sqlite":
        path = tmp_path / "predictions.sqlite"
        yield lambda: SqlitePredictionLog(path)
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"mlprod_routing_{uuid.uuid4().hex[:12]}"
    try:
        yield lambda: PostgresPredictionLog(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def routed(two: TwoVersions, policy: RoutingPolicy, log: PredictionLog) -> RoutedService:
    """A routed service over the session's registry and online store."""
    project = two.project
    return open_routed_service(
        policy, project.folder, project.tracking_uri(), project.online_store(), log
    )


# --- a real server ------------------------------------------------------------------------------


@contextmanager
def serving(service: ScoringService) -> Iterator[httpx.Client]:
    """uvicorn on loopback around ``service``, stopped (not the service) on exit."""
    server, thread, url = start_server(
        create_app(service, max_records=2000, max_body_bytes=10_000_000)
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


# --- a version with a bug -----------------------------------------------------------------------


class Raising:
    """A pipeline that raises on the rows of one carrier (every row: None), like a version
    with a bug."""

    def __init__(self, pipeline: Any, carrier: str | None) -> None:
        self.pipeline, self.carrier = pipeline, carrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def predict_proba(self, features: pa.Table) -> Any:
        self._check(features.column("carrier").to_pylist())
        return self.pipeline.predict_proba(features)

    def predict_proba_rows(self, records: list[dict[str, Any]]) -> Any:
        """The single-record path (feature values, no table) fails alike."""
        self._check([record.get("carrier") for record in records])
        return self.pipeline.predict_proba_rows(records)

    def _check(self, carriers: list[Any]) -> None:
        if self.carrier is None or self.carrier in carriers:
            raise ValueError(f"injected failure on carrier {self.carrier or 'any'}")


class FaultyLoader(RegistryLoader):
    """Loads versions from the registry; ``model`` raises on ``carrier`` (None: always)."""

    def __init__(
        self,
        folder: Path,
        tracking_uri: str,
        store: Any,
        log: PredictionLog,
        model: str,
        carrier: str | None,
    ) -> None:
        super().__init__(folder, tracking_uri, store, log)
        self.faulty, self.carrier = model, carrier

    def load(self, model: str) -> OnlineService:
        service = super().load(model)
        if model == self.faulty:
            service.deployment.pipeline = Raising(service.deployment.pipeline, self.carrier)
        return service
