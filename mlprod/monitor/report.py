"""What the dashboard shows, gathered from a monitoring pass: the windows' metrics, the firing
alerts, each version's offline test AUC and, while an experiment runs, its A/B readout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlprod.errors import MlprodError
from mlprod.monitor.dashboard import DashboardData
from mlprod.monitor.run import MonitorRun

if TYPE_CHECKING:
    from mlprod.api import Project

DASHBOARD_DAYS = 60  # the span of windows the dashboard draws (the latest ones)


def dashboard_data(project: Project, run: MonitorRun) -> DashboardData:
    notes = [run.summary_line()]
    notes.extend(f"alert not delivered: {failure.line()}" for failure in run.failures)
    latest = max((v.window.end for v in run.metrics), default=None)
    metrics = run.metrics
    if latest is not None:
        since = latest - timedelta(days=DASHBOARD_DAYS)
        metrics = [v for v in run.metrics if v.window.end > since]
    return DashboardData(
        project=project.config.name,
        generated_at=datetime.now(UTC).replace(tzinfo=None),
        metrics=metrics,
        firing=[state.to_dict() for state in run.firing],
        offline_auc=dict(run.offline_auc),
        readout=experiment_readout(project, notes),
        notes=notes,
    )


def experiment_readout(project: Project, notes: list[str]) -> dict[str, Any] | None:
    """The readout of the experiment the ``deploy:`` section runs (None without one)."""
    deploy = project.config.deploy
    if deploy is None or not deploy.experiment:
        return None
    from mlprod.evaluate.experiment import experiment_report

    log = project.prediction_log()
    try:
        report = experiment_report(
            log,
            deploy.experiment,
            weights={v.name: float(v.weight) for v in deploy.variants},
            weights_source="mlprod.yaml deploy",
            unit=deploy.assign_by,
            value=project.config.train.value if project.config.train else None,
        )
    except MlprodError as exc:
        notes.append(f"no experiment readout: {exc}")
        return None
    finally:
        log.close()
    readout: dict[str, Any] = report.to_dict()
    return readout
