"""The Python API for notebooks and scripts; the CLI is a thin shell over it.

>>> import mlprod
>>> project = mlprod.Project.load("examples/flights")
>>> matrix = project.build_features()          # a pyarrow.Table
>>> print(project.feature_sql("carrier_origin_mean_delay_7d"))
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlprod.data.sources import explain_unknown_column
from mlprod.errors import UnknownColumnError
from mlprod.features.compiler import MatrixCompiler
from mlprod.features.events import TrainingEvents
from mlprod.features.graph import FeatureGraph
from mlprod.features.typecheck import check_types
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import ProjectConfig
from mlprod.project.engine import EngineKind
from mlprod.project.loading import load_config

if TYPE_CHECKING:  # Arrow, the matrix builder and the deployment stack: imported when used
    import pandas as pd
    import pyarrow as pa

    from mlprod.data.online_store import OnlineStore
    from mlprod.features.ingest import IngestSummary
    from mlprod.features.matrix import Matrix
    from mlprod.features.matrix import StepTime as StepTime  # in BuildSummary, for the CLI
    from mlprod.serve.batch import BatchSummary
    from mlprod.serve.deployment import Deployment
    from mlprod.serve.outcomes import OutcomeSummary
    from mlprod.serve.parity import ParityReport
    from mlprod.serve.predlog import PredictionLog
    from mlprod.serve.service import OnlineService

FAR_FUTURE = datetime(9999, 1, 1)


@dataclass(frozen=True)
class BuildSummary:
    """What ``mlprod features build`` reports."""

    rows: int
    columns: int
    seconds: float
    path: str
    metadata_path: str
    events: dict[str, int]
    steps: list[StepTime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "seconds": round(self.seconds, 3),
            "path": self.path,
            "metadata_path": self.metadata_path,
            "events": self.events,
            "steps": [step.to_dict() for step in self.steps],
        }


@dataclass(frozen=True)
class TrainSummary:
    """What ``mlprod train`` and ``mlprod run`` report."""

    model_name: str
    model_version: int
    run_id: str
    test_auc: float
    test_auc_ci: tuple[float, float]
    threshold: float
    test_value: float | None
    baseline_auc: float
    report_path: str
    artefact_path: str
    leaderboard: list[dict[str, Any]]
    threshold_rule: str | None = None  # how the threshold was chosen on validation
    warnings: tuple[str, ...] = ()  # possible leaks, a reused test set: shown first
    left_out: dict[str, int] | None = None  # spine events not in the matrix, by reason
    test_set_used_before: int = 0  # versions already tested on the same test rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "warnings": list(self.warnings),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "test_auc": round(self.test_auc, 5),
            "test_auc_ci": [round(v, 5) for v in self.test_auc_ci],
            "threshold": self.threshold,
            "test_value": self.test_value,
            "baseline_auc": round(self.baseline_auc, 5),
            "report_path": self.report_path,
            "artefact_path": self.artefact_path,
            "run_id": self.run_id,
            "threshold_rule": self.threshold_rule,
            "left_out": self.left_out,
            "test_set_used_before": self.test_set_used_before,
        }


class Project:
    """A project folder with its ``mlprod.yaml``."""

    def __init__(self, folder: Path, config: ProjectConfig) -> None:
        self.folder = folder
        self.config = config

    @classmethod
    def load(cls, path: str | os.PathLike[str] = ".") -> Project:
        """Load and validate the project in ``path`` (a folder, or its mlprod.yaml)."""
        folder = Path(path)
        if folder.is_file():
            folder = folder.parent
        return cls(folder, load_config(folder))

    @cached_property
    def graph(self) -> FeatureGraph:
        """The resolved features; building it checks every reference in the config."""
        try:
            return FeatureGraph.build(self.config)
        except UnknownColumnError as exc:  # in the data, or only not in the contract?
            raise explain_unknown_column(self.folder, self.config, exc) from None

    @property
    def values(self) -> dict[str, str]:
        """What each outcome is worth per row, as expressions (``train.value``)."""
        train = self.config.train
        return train.value.expressions() if train and train.value else {}

    def check(self) -> dict[str, str]:
        """Validate the whole configuration without reading any data.

        Returns each feature's SQL type, found by binding its query to the contracts' types.
        """
        return check_types(self.graph, TrainingEvents(self.graph, self.values), self.folder)

    @property
    def store(self) -> Path:
        return self.folder / self.config.store

    @property
    def matrix_path(self) -> Path:
        from mlprod.features.files import matrix_path

        return matrix_path(self.store)

    def feature_sql(
        self,
        name: str | None = None,
        as_of: datetime | None = None,
        engine: EngineKind | None = None,
    ) -> str:
        """The SQL that computes one feature (with what it depends on), or all of them, for
        ``engine`` (default: the project's)."""
        training = TrainingEvents(self.graph, self.values)
        names = [name] if name else None
        kind = engine or self.config.engine.kind
        return MatrixCompiler(self.graph).sql(as_of or FAR_FUTURE, names, training, kind)

    def build_matrix(
        self,
        as_of: datetime | None = None,
        features: list[str] | None = None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> Matrix:
        """Build the training matrix in memory, with its lineage and statistics."""
        from mlprod.features.matrix import build_matrix

        return build_matrix(self.folder, self.graph, as_of, features, progress, self.values)

    def build_features(
        self, as_of: datetime | None = None, features: list[str] | None = None
    ) -> pa.Table:
        """The training matrix as an Arrow table (``.to_pandas()`` for a DataFrame)."""
        return self.build_matrix(as_of, features).table

    def write_features(
        self,
        as_of: datetime | None = None,
        progress: ProgressCallback = NO_PROGRESS,
        features: list[str] | None = None,
    ) -> BuildSummary:
        """Build the training matrix and write it with its metadata under the store.

        A build of some ``features`` only is written as ``subset.parquet``, leaving the
        training matrix alone. The sources' profiles become the baseline that the next build
        is compared with.
        """
        matrix = self.build_matrix(as_of, features, progress)
        from mlprod.features.files import matrix_path

        return self._write_matrix(matrix, matrix_path(self.store, subset=features is not None))

    def train(
        self, as_of: datetime | None = None, progress: ProgressCallback = NO_PROGRESS
    ) -> TrainSummary:
        """Build the features, train and choose a model, test it once, and register it."""
        return self._train(self.build_matrix(as_of, progress=progress), progress)

    def run(
        self, as_of: datetime | None = None, progress: ProgressCallback = NO_PROGRESS
    ) -> tuple[BuildSummary, TrainSummary]:
        """The whole loop up to registration: features build -> train -> evaluate -> register."""
        matrix = self.build_matrix(as_of, progress=progress)
        return self._write_matrix(matrix, self.matrix_path), self._train(matrix, progress)

    def tracking_uri(self) -> str:
        """The MLflow tracking store and registry: ``registry.tracking_uri`` (or its older
        spelling ``train.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else a SQLite store
        inside the project store."""
        from mlprod.project.registry import configured_tracking_uri
        from mlprod.registry.tracking import tracking_uri_for

        return tracking_uri_for(self.store, configured_tracking_uri(self.config))

    @property
    def registry_name(self) -> str:
        train = self.config.train
        return (train.registry_name if train else None) or self.config.name

    def evaluation(self, version: str | int = "latest") -> dict[str, Any]:
        """A registered version's evaluation: its metrics and where its report is.

        ``version`` (a number, an alias or 'latest') is answered with the number it stands
        for; the metrics were saved before registration gave it one.
        """
        from mlprod.registry.models import locate

        found = locate(self.tracking_uri(), self.registry_name, version)
        metrics: dict[str, Any] = json.loads((found.path / "metrics.json").read_text())
        metrics.pop("version", None)  # null: saved before the version had a number
        return {
            "model_name": self.registry_name,
            "version": found.version,
            "report_path": str(found.path / "report.html"),
            **metrics,
        }

    def evaluation_charts(self, version: str | int = "latest") -> dict[str, bytes]:
        """The charts of a registered version's evaluation report as PNG images, by title
        ("ROC curves", "Calibration curves", ...): the report's own pictures, to show where
        the HTML page is not at hand (``IPython.display.Image(png)`` in a notebook)."""
        report = Path(self.evaluation(version)["report_path"])
        return report_charts(report.read_text(encoding="utf-8"))

    def reproduce(
        self,
        version: str,
        progress: ProgressCallback = NO_PROGRESS,
        *,
        current_config: bool = False,
    ) -> dict[str, Any]:
        """Rebuild a registered version from its recorded inputs and compare its predictions.

        The version's recorded definitions and training settings are used (``current_config``:
        today's mlprod.yaml instead). The matrix is rebuilt at the version's recorded ``as_of``
        and the model trained again in a scratch store (the registry and the project's models
        are left alone); both models score the test window. Returns whether the predictions
        are reproduced, their largest difference, which configuration was used and each
        recorded input (data, config, code, library, source schema) that differs now.
        """
        from mlprod.registry.models import resolve

        folder = resolve(self.tracking_uri(), self.registry_name, version)
        from mlprod.train.reproduce import reproduce  # the training stack, only when used

        result = reproduce(
            self.config,
            self.store,
            folder,
            lambda config, as_of: Project(self.folder, config).build_matrix(
                as_of, progress=progress
            ),
            progress,
            version=version,
            current_config=current_config,
        )
        return {"model_name": self.registry_name, **result}

    # --- deployment --------------------------------------------------------------------

    def deployment(self, model: str | None = None) -> Deployment:
        """A registered version, loaded and verified: ``NAME@ALIAS`` or ``NAME/VERSION``
        (default: this project's model at alias ``champion``)."""
        from mlprod.serve.deployment import Deployment, parse_model_reference

        reference = parse_model_reference(model or f"{self.registry_name}@champion")
        return Deployment.load(self.folder, self.tracking_uri(), reference)

    def score(
        self,
        model: str | None,
        input: str,
        output: str,
        at: datetime | None = None,
        run_id: str | None = None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> BatchSummary:
        """Score every row of ``input`` with its features as of its prediction time; write
        keys, prediction time, score, decision, model and run id to ``output`` at once."""
        from mlprod.serve.batch import score_batch

        deployment = self.deployment(model)
        kind = self.config.engine.kind
        return score_batch(deployment, input, output, at, run_id, progress, kind)

    def predict(
        self,
        rows: pa.Table | pd.DataFrame,
        model: str | None = None,
        at: datetime | None = None,
    ) -> pa.Table:
        """Score request rows held in memory, as ``score`` scores a file: each row's features
        as of its ``prediction_time`` column (else ``at``, else now). Returns, in the rows'
        order, the keys, ``prediction_time``, ``score`` (a probability), ``decision``,
        ``model_name``, ``model_version`` and ``scored_at``."""
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        from mlprod.errors import ScoreIOError
        from mlprod.serve.batch import score_batch

        if not isinstance(rows, pa.Table):
            rows = pa.Table.from_pandas(rows, preserve_index=False)
        with tempfile.TemporaryDirectory(prefix="mlprod-predict-") as scratch:
            requests, scores = Path(scratch, "requests.parquet"), Path(scratch, "scores.parquet")
            pq.write_table(rows, requests)
            try:
                score_batch(self.deployment(model), str(requests), str(scores), at)
            except ScoreIOError as exc:  # a missing field: name the rows, not the scratch file
                raise ScoreIOError(str(exc).replace(str(requests), "rows")) from None
            scored = pq.read_table(scores)
        return scored.drop_columns(["run_id"])  # the run of a throwaway file

    def online_store(self) -> OnlineStore:
        """The configured online store (``online:``; default a SQLite file in the store)."""
        from mlprod.data.online_store import open_online_store

        spec = self.config.online
        return open_online_store(spec, self.folder, spec.namespace or self.config.name)

    def prediction_log(self) -> PredictionLog:
        """The configured prediction log (``log:``; default a SQLite file in the store)."""
        from mlprod.serve.predlog import open_prediction_log

        return open_prediction_log(self.config.log, self.folder)

    def materialize(
        self,
        model: str | None = None,
        as_of: datetime | None = None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> IngestSummary:
        """Fill the online store with what the model's features read, as of ``as_of``
        (default now): every source row available strictly before then."""
        from mlprod.features.ingest import materialize
        from mlprod.features.online_plan import plan_online

        deployment = self.deployment(model)
        plan = plan_online(deployment.graph, deployment.features)
        store = self.online_store()
        try:
            moment = as_of or datetime.now(UTC).replace(tzinfo=None)
            return materialize(self.folder, deployment.graph, plan, store, moment, progress)
        finally:
            store.close()

    def push(
        self,
        source: str,
        rows: pa.Table,
        model: str | None = None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> IngestSummary:
        """Apply new events of ``source`` to the online store (each event once)."""
        from mlprod.features.ingest import push
        from mlprod.features.online_plan import plan_online

        deployment = self.deployment(model)
        plan = plan_online(deployment.graph, deployment.features)
        store = self.online_store()
        try:
            return push(deployment.graph, plan, store, source, rows, progress)
        finally:
            store.close()

    def parity(
        self,
        model: str | None = None,
        sample: int = 2000,
        seed: int = 0,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> ParityReport:
        """Replay ``sample`` historical events through the online path and the batch path
        and compare every feature value and score."""
        from mlprod.serve.parity import check_parity

        return check_parity(
            self.deployment(model), sample, seed, online_spec=self.config.online, progress=progress
        )

    def outcomes(self, now: datetime | None = None) -> OutcomeSummary:
        """Label logged predictions whose outcome the spine's sources now know."""
        from mlprod.serve.outcomes import compute_outcomes

        log = self.prediction_log()
        try:
            return compute_outcomes(self.folder, self.graph, log, now)
        finally:
            log.close()

    def service(self, model: str | None = None) -> OnlineService:
        """The live scoring service of a model: online features, scoring, prediction log."""
        from mlprod.serve.service import OnlineService

        deployment = self.deployment(model)
        return OnlineService(
            deployment,
            self.online_store(),
            self.prediction_log(),
            max_records=self.config.serve.max_records,
        )

    def _train(self, matrix: Matrix, progress: ProgressCallback) -> TrainSummary:
        from mlprod.registry.models import test_set_looks
        from mlprod.registry.tracking import log_training_run
        from mlprod.train.trainer import train_pipeline  # the training stack, only when used

        uri, name = self.tracking_uri(), self.registry_name
        trained = train_pipeline(
            self.config,
            self.graph,
            matrix,
            self.store,
            progress,
            test_looks=lambda fingerprint: test_set_looks(uri, name, fingerprint),
        )
        metrics = trained.metrics
        test, baseline = metrics["test"], metrics["baseline"]
        flat = {
            "valid_auc": metrics["validation"]["auc"],
            "test_auc": test["auc"],
            "test_auc_ci_low": test["auc_ci"][0],
            "test_auc_ci_high": test["auc_ci"][1],
            "test_log_loss": test["log_loss"],
            "test_brier": test["brier"],
            "baseline_auc": baseline["auc"],
            "auc_gain_over_baseline": baseline["difference"],
            "threshold": metrics["threshold"],
        }
        if test["value"] is not None:
            flat["test_value"] = test["value"]["total"]
        record = log_training_run(
            self.tracking_uri(),
            self.config.name,
            trained.params,
            flat,
            {**trained.tags, "mlprod.test_fingerprint": trained.test_fingerprint},
            trained.artefact,
            None,
            self.registry_name,
        )
        return TrainSummary(
            model_name=self.registry_name,
            model_version=record.model_version,
            run_id=record.run_id,
            test_auc=test["auc"],
            test_auc_ci=(test["auc_ci"][0], test["auc_ci"][1]),
            threshold=metrics["threshold"],
            test_value=test["value"]["total"] if test["value"] is not None else None,
            baseline_auc=baseline["auc"],
            report_path=str(trained.artefact / "report.html"),
            artefact_path=str(trained.artefact),
            leaderboard=trained.leaderboard,
            threshold_rule=metrics.get("threshold_rule"),
            warnings=tuple(trained.warnings),
            left_out=metrics.get("left_out"),
            test_set_used_before=trained.test_looks_before,
        )

    def _write_matrix(self, matrix: Matrix, path: Path) -> BuildSummary:
        metadata = matrix.metadata(self.graph)
        metadata["path"] = str(path)
        from mlprod.data.baselines import save_baselines
        from mlprod.features.files import write_matrix

        meta_path = write_matrix(path, matrix.table, metadata)

        save_baselines(self.store, list(matrix.sources.values()))
        return BuildSummary(
            matrix.table.num_rows,
            matrix.table.num_columns,
            matrix.seconds,
            str(path),
            str(meta_path),
            matrix.events,
            matrix.steps,
        )


def describe_difference(difference: dict[str, Any]) -> str:
    """One line for a difference that ``Project.reproduce`` reports, e.g.
    ``library lightgbm: recorded 4.5.0, now 4.6.0``."""
    from mlprod.train.reproduce import describe

    return describe(difference)


def report_charts(page: str) -> dict[str, bytes]:
    """The PNG charts embedded in an evaluation report's HTML, by their ``alt`` text."""
    images = _EmbeddedImages()
    images.feed(page)
    images.close()
    return images.charts


class _EmbeddedImages(HTMLParser):
    """Collects ``<img alt="..." src="data:image/png;base64,...">``, as the report embeds."""

    PREFIX = "data:image/png;base64,"

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, bytes] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        source = found.get("src") or ""
        if tag == "img" and source.startswith(self.PREFIX):
            title = found.get("alt") or f"chart {len(self.charts) + 1}"
            self.charts[title] = base64.b64decode(source.removeprefix(self.PREFIX))
