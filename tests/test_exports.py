"""The monitoring gauges, and the Prometheus rules and Grafana dashboard made over them: the
rules checked and unit-tested by the real promtool (Debian's prometheus package), the
dashboard's queries checked against the names a real registry exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_example
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import mlprod.cli_export  # noqa: F401  (registers `mlprod export` until cli.py imports it)
from mlprod import Project
from mlprod.cli import app
from mlprod.monitor.alert_state import AlertState
from mlprod.monitor.export_grafana import dashboard
from mlprod.monitor.export_prometheus import rules
from mlprod.monitor.gauges import MonitorGauges, exported_names
from mlprod.monitor.values import MODEL, MetricValue, WindowKey
from mlprod.project.monitoring import FEATURE_METRICS, METRICS

ALERTS = [
    {"name": "delay_drift", "metric": "psi", "feature": "dep_delay", "above": 0.2, "windows": 2},
    {"name": "any_drift", "metric": "psi", "feature": "*", "above": 0.25, "severity": "info"},
    {
        "name": "live_auc",
        "metric": "auc",
        "below": 0.65,
        "severity": "critical",
        "variant": "challenger",
    },
    {"name": "slow", "metric": "latency_p99_ms", "above": 250, "windows": 3},
]
T0 = datetime(2013, 9, 1)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package "
            "(apt-get update && apt-get install -y prometheus)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flights example with alert rules (no data: exports read only mlprod.yaml)."""
    folder = copy_example(tmp_path_factory.mktemp("exports"))
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    config["monitor"] = {"window": "1h", "alerts": ALERTS}
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def project(project_dir: Path) -> Project:
    return Project.load(project_dir)


def key(i: int, version: str = "3", variant: str = "") -> WindowKey:
    return WindowKey(
        T0 + i * timedelta(hours=1), T0 + (i + 1) * timedelta(hours=1), "flights", version, variant
    )


def every_metric(w: WindowKey, base: float) -> list[MetricValue]:
    """One value of every metric in window ``w`` (two features), with bounds."""
    found = []
    for n, metric in enumerate(METRICS):
        subjects = ["dep_delay", "origin"] if metric in FEATURE_METRICS else [MODEL]
        for s, subject in enumerate(subjects):
            value = base + n + s / 10
            found.append(MetricValue(w, metric, subject, value, value - 0.5, value + 0.5))
    return found


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


# --- gauges ---------------------------------------------------------------------------------


def test_gauges_show_the_newest_window_with_a_value_and_drop_stale_series() -> None:
    registry = CollectorRegistry()
    gauges = MonitorGauges(registry)
    a, b = key(0), key(1)
    other = key(0, version="4", variant="challenger")
    metrics = [
        MetricValue(a, "psi", "dep_delay", 0.1),
        MetricValue(b, "psi", "dep_delay", 0.3),
        MetricValue(b, "auc", MODEL, None),  # no labels yet in the newest window
        MetricValue(a, "auc", MODEL, 0.7, 0.66, 0.74),
        MetricValue(b, "latency_p99_ms", MODEL, 250.0),
        MetricValue(other, "psi", "dep_delay", 0.05),
    ]
    firing = [AlertState("any_drift", "dep_delay", "flights", "3", "", "info", "firing")]
    gauges.update(metrics, firing)
    get = registry.get_sample_value
    psi = {"feature": "dep_delay", "model": "flights", "version": "3", "variant": ""}
    model = {"model": "flights", "version": "3", "variant": ""}
    assert get("mlprod_monitor_psi", psi) == 0.3
    assert get("mlprod_monitor_auc", model) == 0.7
    assert (get("mlprod_monitor_auc_lower", model), get("mlprod_monitor_auc_upper", model)) == (
        0.66,
        0.74,
    )
    assert get("mlprod_monitor_latency_p99_seconds", model) == 0.25
    unix = (b.end - datetime(1970, 1, 1)).total_seconds()
    assert get("mlprod_monitor_window_end_timestamp_seconds", model) == unix
    alert = {"alert": "any_drift", "severity": "info", "feature": "dep_delay", **model}
    assert get("mlprod_alert_firing", alert) == 1.0
    challenger = {**psi, "version": "4", "variant": "challenger"}
    assert get("mlprod_monitor_psi", challenger) == 0.05

    # Version 4 is no longer served and the alert resolved: their series go.
    gauges.update([m for m in metrics if m.window.model_version == "3"], [])
    assert get("mlprod_monitor_psi", challenger) is None
    assert get("mlprod_alert_firing", alert) is None
    assert get("mlprod_monitor_psi", psi) == 0.3
    text = registry.collect()
    assert not any('version="4"' in str(s) for family in text for s in family.samples)


def test_every_exported_name_has_samples_after_a_full_update() -> None:
    registry = CollectorRegistry()
    MonitorGauges(registry).update(
        every_metric(key(0), 1.0),
        [AlertState("slow", MODEL, "flights", "3", "", "warning", "firing")],
    )
    assert set(exported_names()) == sample_names(registry)


# --- Prometheus rules -----------------------------------------------------------------------


def test_rules_pass_promtool_check(project: Project, promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules(project.config))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    group = yaml.safe_load(path.read_text())["groups"][0]
    assert [r["alert"] for r in group["rules"]] == [a["name"] for a in ALERTS]
    assert [r.get("for") for r in group["rules"]] == ["2h", "1h", "1h", "3h"]


def series_of(registry: CollectorRegistry, name: str, **labels: str) -> str:
    """The one series ``name`` with ``labels`` the registry really exports, in promtool's
    notation (empty labels left out, as Prometheus stores them)."""
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                shown = ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if v)
                return f"{name}{{{shown}}}"
    raise AssertionError(f"no series {name} {labels} in the registry")


def test_rules_fire_on_the_gauges_series(project: Project, promtool: str, tmp_path: Path) -> None:
    """promtool's rule unit tests, fed the series a real registry exports: each rule fires
    after its `for:` on its own series only, with its labels and summary."""
    registry = CollectorRegistry()
    control, challenger = key(0, variant="control"), key(0, version="4", variant="challenger")
    MonitorGauges(registry).update(
        [
            MetricValue(control, "psi", "dep_delay", 0.3),
            MetricValue(control, "psi", "origin", 0.22),
            MetricValue(control, "auc", MODEL, 0.6),
            MetricValue(challenger, "auc", MODEL, 0.6),
            MetricValue(challenger, "latency_p99_ms", MODEL, 300.0),
        ],
        [],
    )

    def series(name: str, values: str, **labels: str) -> dict[str, str]:
        return {"series": series_of(registry, name, **labels), "values": values}

    (tmp_path / "rules.yml").write_text(rules(project.config))
    psi_dep = series("mlprod_monitor_psi", "0.3x300", feature="dep_delay")
    psi_origin = series("mlprod_monitor_psi", "0.22x300", feature="origin")
    auc_control = series("mlprod_monitor_auc", "0.6x300", variant="control")
    auc_challenger = series("mlprod_monitor_auc", "0.6x300", variant="challenger")
    latency = series("mlprod_monitor_latency_p99_seconds", "0.3x300")
    control_labels = {"model": "flights", "version": "3", "variant": "control"}
    challenger_labels = {"model": "flights", "version": "4", "variant": "challenger"}

    def expect(alert: str, minutes: int, *fired: dict[str, Any]) -> dict[str, Any]:
        return {"eval_time": f"{minutes}m", "alertname": alert, "exp_alerts": list(fired)}

    drift = {
        "exp_labels": {"severity": "warning", "feature": "dep_delay", **control_labels},
        "exp_annotations": {
            "summary": "psi of dep_delay is 0.3 (above 0.2) for flights version 3 variant control",
            "description": "psi of dep_delay above 0.2 in 2 closed windows in a row",
        },
    }
    any_drift = {
        "exp_labels": {"severity": "info", "feature": "dep_delay", **control_labels},
        "exp_annotations": {
            "summary": "psi of dep_delay is 0.3 (above 0.25) for flights version 3 variant control",
            "description": "psi of any feature above 0.25 in a closed window",
        },
    }
    auc = {
        "exp_labels": {"severity": "critical", **challenger_labels},
        "exp_annotations": {
            "summary": "auc is 0.6 (below 0.65) for flights version 4 variant challenger",
            "description": "auc below 0.65 in a closed window",
        },
    }
    slow = {
        "exp_labels": {"severity": "warning", **challenger_labels},
        "exp_annotations": {
            "summary": "latency_p99_seconds is 0.3 (above 0.25) for flights version 4 "
            "variant challenger",
            "description": "latency_p99_ms above 250 in 3 closed windows in a row",
        },
    }
    unit_tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [psi_dep, psi_origin, auc_control, auc_challenger, latency],
                "alert_rule_test": [
                    expect("delay_drift", 119),
                    expect("delay_drift", 121, drift),
                    expect("any_drift", 61, any_drift),  # origin's 0.22 is below 0.25
                    expect("live_auc", 59),
                    expect("live_auc", 61, auc),  # the control's 0.6 is not watched
                    expect("slow", 179),
                    expect("slow", 181, slow),
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_count_windows_have_no_for_and_say_so(project_dir: Path, promtool: str) -> None:
    config = yaml.safe_load((project_dir / "mlprod.yaml").read_text())
    config["monitor"]["window"] = {"count": 5000}
    from mlprod.project.loading import parse_config

    text = rules(parse_config(config))
    group = yaml.safe_load(text)["groups"][0]
    assert all("for" not in r for r in group["rules"])
    assert group["rules"][0]["annotations"]["description"] == (
        "psi of dep_delay above 0.2 in 2 closed windows in a row (windows are counts of "
        "predictions: Prometheus fires as soon as the newest window is above the threshold)"
    )


# --- Grafana ----------------------------------------------------------------------------------


def queries(board: dict[str, Any]) -> list[str]:
    found = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    found += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return found


def test_grafana_queries_use_only_names_the_gauges_export(
    project: Project, promtool: str, tmp_path: Path
) -> None:
    board = dashboard(project.config)
    registry = CollectorRegistry()
    MonitorGauges(registry).update(
        every_metric(key(0), 1.0),
        [AlertState("slow", MODEL, "flights", "3", "", "warning", "firing")],
    )
    exported = sample_names(registry)
    texts = queries(board)
    referenced = {name for text in texts for name in re.findall(r"\bmlprod_[a-z0-9_]+", text)}
    assert referenced - exported == set()
    # Every section is there and draws something.
    assert len(referenced) >= 25
    titles = {panel["title"] for panel in board["panels"]}
    for title in (
        "Volume (predictions per window)",
        "Latency",
        "Score distribution",
        "PSI per feature",
        "AUC: live against estimated",
        "Business value",
        "Alerts firing",
    ):
        assert title in titles
    assert "mlprod_monitor_estimated_auc_lower" in referenced
    # The data source is a variable, used by every panel and query.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    sources = [p["datasource"] for p in board["panels"] if p["type"] != "row"]
    sources += [t["datasource"] for p in board["panels"] for t in p.get("targets", [])]
    assert {json.dumps(s) for s in sources} == {'{"type": "prometheus", "uid": "${datasource}"}'}
    assert isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # Every query parses as PromQL (variables as Grafana expands "All"), per promtool.
    parsed = [
        re.sub(r"\$(version|variant|feature)", ".*", text)
        for text in texts
        if not text.startswith("label_values(")
    ]
    group = {
        "name": "dashboard",
        "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(parsed)],
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_draws_the_alert_thresholds(project: Project) -> None:
    board = dashboard(project.config)
    panels = {p["title"]: p for p in board["panels"]}
    steps = panels["PSI per feature"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[1:] == [{"color": "orange", "value": 0.2}, {"color": "blue", "value": 0.25}]
    latency = panels["Latency"]["fieldConfig"]["defaults"]
    assert latency["unit"] == "s"
    assert latency["thresholds"]["steps"][1:] == [{"color": "orange", "value": 0.25}]


# --- the CLI --------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_writes_both_files(project_dir: Path, promtool: str, tmp_path: Path) -> None:
    rules_path, board_path = tmp_path / "out" / "rules.yml", tmp_path / "out" / "board.json"
    done = runner.invoke(
        app,
        ["export", "prometheus-rules", "--project", str(project_dir), "--output", str(rules_path)],
    )
    assert done.exit_code == 0, done.output
    assert done.stdout == (
        f"wrote 4 alerting rules of 'flights' to {rules_path}; check them with "
        f"'promtool check rules {rules_path}'\n"
    )
    checked = subprocess.run([promtool, "check", "rules", str(rules_path)], capture_output=True)
    assert checked.returncode == 0
    done = runner.invoke(
        app, ["export", "grafana", "--project", str(project_dir), "--output", str(board_path)]
    )
    assert done.exit_code == 0, done.output
    board = json.loads(board_path.read_text())
    assert board == dashboard(Project.load(project_dir).config)
    panels = sum(1 for p in board["panels"] if p["type"] != "row")
    assert done.stdout == (
        f"wrote a Grafana dashboard of 'flights' ({panels} panels) to {board_path}; import it "
        "in Grafana (Dashboards > New > Import)\n"
    )


def test_cli_errors_are_one_line(project_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = runner.invoke(
        app, ["export", "grafana", "--project", str(missing), "--output", str(tmp_path / "b")]
    )
    assert done.exit_code == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"error: {missing}: no mlprod.yaml here; run mlprod in a project folder or pass "
        "--project DIR\n"
    )
    assert "Traceback" not in done.output
    folder = tmp_path / "a_folder"
    folder.mkdir()
    done = runner.invoke(
        app, ["export", "prometheus-rules", "--project", str(project_dir), "--output", str(folder)]
    )
    assert done.exit_code == 2
    assert done.stderr == f"error: cannot write {folder}: Is a directory\n"
    assert list(tmp_path.glob("**/.*.tmp")) == []
