"""Retrain: a challenger on the newest data, compared with the champion where neither looked.

``retrain(project, as_of=...)`` builds the matrix as of ``as_of`` (the events whose label is
known by then) and takes the most recent ``retrain.comparison_window`` of it, ending at the
latest label known, as the comparison window. The champion must not have trained or validated
on it, so the window starts no earlier than the end of the champion's validation window (its
lineage records its split). The challenger is trained with the project's configuration, its
split moved forward so that training and validation end (less the configured gap) where the
comparison window starts; the comparison window is then the challenger's sealed test window
too. Both models score the window, :mod:`mlprod.loop.compare` compares them with a paired
bootstrap, and the challenger is registered with the comparison (a readout logged with its
run, ``mlprod.comparison.*`` tags on its version). The ``retrain.policy`` then decides: a
challenger sure enough (``confidence``) to gain at least ``min_auc_gain`` in AUC (and
``min_value_gain`` in value, when set) gets the policy's alias and, with ``rollout: true``,
a rollout against the champion, started as ``mlprod rollout start`` starts one.

Without ``--retune`` the challenger is not tuned again: each configured model trains with the
parameters it was given, and the champion's model with the values its tuning chose.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlprod.errors import RolloutError, TrainError
from mlprod.loop.champion import CHAMPION, champion_scores, find_champion, validation_end
from mlprod.loop.compare import Comparison, compare
from mlprod.loop.readout import describe_comparison
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.monitoring import RetrainPolicy
from mlprod.project.training import (
    OUTCOMES,
    ModelSpec,
    OutOfTimeSplit,
    TimeSeriesCVSplit,
    TrainConfig,
    value_column,
)

if TYPE_CHECKING:
    from mlprod.api import Project, TrainSummary
    from mlprod.artefact import FittedPipeline
    from mlprod.serve.routing.state import RolloutState

# The rollout a winning challenger starts, as `mlprod rollout start` does by default.
ROLLOUT_STEPS = "5,25,50,100"
ROLLOUT_EVERY = "10m"
TAG = "mlprod.comparison"  # prefix of the comparison's tags on the challenger's version


@dataclass(frozen=True)
class Window:
    """The comparison window: events predicted in [start, end), all labelled by ``end``."""

    start: datetime
    end: datetime
    rows: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "positives": self.positives,
        }


@dataclass(frozen=True)
class Decision:
    """What the policy made of the comparison, and why."""

    accepted: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did: the challenger registered, the comparison, the decision, the moves."""

    model_name: str
    champion_version: int
    challenger_version: int
    window: Window
    comparison: Comparison
    decision: Decision
    training: TrainSummary
    readout: str  # the comparison as people read it
    readout_path: str
    champion_valid_end: datetime
    challenger_valid_end: datetime
    alias: str | None = None  # the alias moved to the challenger
    rollout: RolloutState | None = None
    rollout_error: str | None = None  # why a rollout the policy asked for did not start
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "window": self.window.to_dict(),
            "champion_valid_end": self.champion_valid_end.isoformat(),
            "challenger_valid_end": self.challenger_valid_end.isoformat(),
            "comparison": self.comparison.to_dict(),
            "decision": self.decision.to_dict(),
            "alias": self.alias,
            "rollout": self.rollout.to_json() if self.rollout is not None else None,
            "rollout_error": self.rollout_error,
            "readout_path": self.readout_path,
            "report_path": self.training.report_path,
            "warnings": list(self.training.warnings),
            "notes": list(self.notes),
        }


def retrain(
    project: Project,
    *,
    as_of: datetime | None = None,
    retune: bool | None = None,
    progress: ProgressCallback = NO_PROGRESS,
    actor: str | None = None,
) -> RetrainResult:
    """Train, compare and register a challenger; move its alias and start its rollout when the
    policy says so (see the module docstring). ``retune`` defaults to ``retrain.retune``."""
    from mlprod.artefact import load_artefact
    from mlprod.registry.models import locate

    train = project.config.train
    if train is None:
        raise TrainError("mlprod.yaml has no 'train' section; add one to retrain a model")
    split = train.split
    if not isinstance(split, OutOfTimeSplit | TimeSeriesCVSplit):
        raise TrainError(
            f"retrain compares models on the most recent events, which needs a split in time; "
            f"train.split.method is '{split.method}', use out_of_time or time_series_cv"
        )
    uri, name = project.tracking_uri(), project.registry_name
    champion = find_champion(uri, name)
    champion_pipeline = load_artefact(champion.path)
    champion_end = validation_end(champion_pipeline, champion.version)
    matrix = project.build_matrix(as_of, progress=progress)
    window, notes = _window(
        matrix.table, project.config.retrain.comparison_window, champion_end, champion.version
    )
    retune = project.config.retrain.retune if retune is None else retune
    moved = _moved_train(train, window, champion_pipeline, retune)
    task = progress.start("training the challenger", None)
    from mlprod.api import Project as ProjectClass

    challenger_project = ProjectClass(
        project.folder, project.config.model_copy(update={"train": moved})
    )
    summary = challenger_project._train(matrix, progress)
    task.finish()
    challenger = locate(uri, name, summary.model_version)
    challenger_pipeline = load_artefact(challenger.path)

    task = progress.start("comparing champion and challenger", None)
    rows = _window_rows(matrix.table, window)
    scores = champion_scores(project, champion_pipeline, matrix, rows, progress)
    comparison = compare(
        _labels(rows),
        scores,
        challenger_pipeline.predict_proba(rows),
        champion_threshold=champion_pipeline.threshold,
        challenger_threshold=challenger_pipeline.threshold,
        value=train.value,
        per_row=_per_row_values(train, rows),
        seed=train.seed,
    )
    policy = project.config.retrain.policy
    decision = decide(policy, comparison)
    task.finish()

    alias = None
    if decision.accepted and policy.set_alias:
        from mlprod.registry.models import promote

        promote(uri, name, summary.model_version, policy.set_alias)
        alias = policy.set_alias
    rollout, rollout_error = None, None
    if decision.accepted and policy.rollout:
        try:
            rollout = _start_rollout(project, f"{name}/{summary.model_version}", actor)
        except RolloutError as exc:  # e.g. one is running: the challenger stays registered
            rollout_error = str(exc)
    challenger_end = validation_end(challenger_pipeline, summary.model_version)
    readout = describe_comparison(
        name,
        champion.version,
        summary.model_version,
        window.to_dict(),
        comparison,
        decision.to_dict(),
        {"champion": champion_end, "challenger": challenger_end},
        alias=alias,
        rollout=rollout.to_json() if rollout is not None else None,
        rollout_error=rollout_error,
        currency=train.value.currency if train.value else "",
        notes=notes,
    )
    result = RetrainResult(
        model_name=name,
        champion_version=champion.version,
        challenger_version=summary.model_version,
        window=window,
        comparison=comparison,
        decision=decision,
        training=summary,
        readout=readout,
        readout_path="",
        champion_valid_end=champion_end,
        challenger_valid_end=challenger_end,
        alias=alias,
        rollout=rollout,
        rollout_error=rollout_error,
        notes=tuple(notes),
    )
    path = _record(project, result, challenger.run_id)
    return _with_path(result, path)


def decide(policy: RetrainPolicy, comparison: Comparison) -> Decision:
    """Accept the challenger when the bootstrap is at least ``policy.confidence`` sure that it
    gains more than ``min_auc_gain`` in AUC, and more than ``min_value_gain`` in value when
    that is set."""
    checks = [("AUC", comparison.auc, policy.min_auc_gain, "{:+.4f}")]
    if policy.min_value_gain is not None:
        if comparison.value is None:
            return Decision(
                False,
                (
                    "retrain.policy.min_value_gain is set but the project has no train.value "
                    "to price the decisions with",
                ),
            )
        checks.append(("value", comparison.value, policy.min_value_gain, "{:+,.2f}"))
    reasons, accepted = [], True
    for metric, difference, minimum, shape in checks:
        sure = difference.probability_above(minimum)
        met = sure >= policy.confidence
        accepted &= met
        relation = ">=" if met else "<"
        reasons.append(
            f"P({metric} gain > {shape.format(minimum)}) = {sure:.3f} {relation} "
            f"{policy.confidence:g} (gain {shape.format(difference.difference)})"
        )
    return Decision(accepted, tuple(reasons))


# --- the window and the moved split ------------------------------------------------------------


def _window(
    table: pa.Table, length: timedelta, champion_end: datetime, champion_version: int
) -> tuple[Window, list[str]]:
    """The last ``length`` of predictions before the latest known label, and none before the
    champion's validation ends."""
    known = _times(table, "label_available_at")
    known = known[~np.isnat(known)]
    if len(known) == 0:
        raise TrainError("the matrix has no labelled events to compare the models on")
    end = datetime.fromisoformat(str(known.max().astype("datetime64[us]")))
    start, notes = end - length, []
    if start < champion_end:
        if champion_end >= end:
            raise TrainError(
                f"the champion (version {champion_version}) validated on events up to "
                f"{champion_end:%Y-%m-%d %H:%M}, and the newest label known is from "
                f"{end:%Y-%m-%d %H:%M}: there is no event it has not trained on yet; retrain "
                "later (or as of a later time)"
            )
        notes.append(
            f"the comparison window starts at {champion_end:%Y-%m-%d %H:%M}, where the "
            f"champion's validation ended, instead of {start:%Y-%m-%d %H:%M}: it is shorter "
            "than retrain.comparison_window"
        )
        start = champion_end
    t = _times(table, "prediction_time")
    inside = (t >= np.datetime64(start, "us")) & (t < np.datetime64(end, "us"))
    y = _labels(table)[inside]
    if not 0 < int(y.sum()) < len(y):
        raise TrainError(
            f"the comparison window {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} has "  # noqa: RUF001
            f"{len(y):,} labelled events, not of both classes; lengthen "
            "retrain.comparison_window or retrain later"
        )
    return Window(start, end, len(y), int(y.sum())), notes


def _moved_train(
    train: TrainConfig, window: Window, champion: FittedPipeline, retune: bool
) -> TrainConfig:
    """The training settings with the split moved so that validation ends, less the gap, where
    the comparison window starts, and the test window is the comparison window."""
    split = train.split
    assert isinstance(split, OutOfTimeSplit | TimeSeriesCVSplit)  # checked by retrain
    valid_end = window.start - split.gap
    moved: dict[str, Any] = {"valid_end": valid_end, "test_end": window.end}
    if split.train_start is not None:
        moved["train_start"] = _naive(split.train_start)
    if isinstance(split, OutOfTimeSplit):
        moved["train_end"] = _naive(split.train_end) + (valid_end - _naive(split.valid_end))
    try:
        new_split = type(split).model_validate({**split.model_dump(), **moved})
    except ValueError as exc:
        raise TrainError(
            f"the split cannot be moved to end before the comparison window "
            f"({window.start:%Y-%m-%d %H:%M}): {exc}"
        ) from None
    update: dict[str, Any] = {"split": new_split}
    if not retune:
        update["models"] = _fixed_models(train.models, champion)
    return train.model_copy(update=update)


def _fixed_models(models: list[ModelSpec], champion: FittedPipeline) -> list[ModelSpec]:
    """The models without tuning: searched parameters set to what the champion's tuning chose
    for its model (when the champion is one of them), else left as configured."""
    tuned = _tuned_params(champion)
    fixed = []
    for spec in models:
        params = dict(spec.params)
        if spec.label == champion.model_name:
            params |= {key: tuned[key] for key in spec.search if key in tuned}
        fixed.append(spec.model_copy(update={"params": params, "search": {}}))
    return fixed


def _tuned_params(champion: FittedPipeline) -> dict[str, Any]:
    """The parameters the champion's single model was fitted with (none for an ensemble)."""
    scorer: Any = champion.scorer
    members = getattr(scorer, "members", None)
    if members:  # the fold models of cross-validation share their parameters
        scorer = members[0]
    model = getattr(scorer, "model", None)
    params = getattr(model, "params", None)
    return dict(params) if isinstance(params, dict) else {}


def _window_rows(table: pa.Table, window: Window) -> pa.Table:
    t = _times(table, "prediction_time")
    inside = (t >= np.datetime64(window.start, "us")) & (t < np.datetime64(window.end, "us"))
    return table.filter(pa.array(inside))


def _labels(table: pa.Table) -> np.ndarray:
    return np.asarray(pc.cast(table.column("label"), pa.int64()).to_numpy(), dtype=np.int64)


def _times(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.cast(table.column(name), pa.timestamp("us")).to_numpy())


def _per_row_values(train: TrainConfig, rows: pa.Table) -> dict[str, Any] | None:
    if train.value is None:
        return None
    return {
        outcome: rows.column(value_column(outcome)).to_numpy(zero_copy_only=False)
        for outcome in OUTCOMES
        if outcome in train.value.expressions()
    }


def _naive(value: datetime) -> datetime:
    """Naive UTC, as the matrix's times are."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# --- what the retrain changes --------------------------------------------------------------


def _start_rollout(project: Project, challenger: str, actor: str | None) -> RolloutState:
    """A rollout of ``challenger`` against the current control, as `mlprod rollout start`."""
    from mlprod.serve.routing.guardrails import GuardrailLimits
    from mlprod.serve.routing.policy import policy_from_config
    from mlprod.serve.routing.rollout import MlflowRegistry, base_policy, start_rollout
    from mlprod.serve.routing.state import Action, RoutingStore

    deploy = project.config.deploy
    limits = GuardrailLimits.from_config(deploy.guardrails if deploy is not None else None)
    store = RoutingStore.for_log(project.config.log, project.folder)
    try:
        configured = policy_from_config(deploy) if deploy is not None else None
        base = base_policy(store, configured, f"{project.registry_name}@{CHAMPION}")
        action = Action(actor or _actor(), "rollout.start", {"via": "retrain"})
        return start_rollout(
            store,
            MlflowRegistry(project.tracking_uri()),
            base,
            challenger,
            ROLLOUT_STEPS,
            ROLLOUT_EVERY,
            limits,
            action,
        )
    finally:
        store.close()


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (retrain)"


def _record(project: Project, result: RetrainResult, run_id: str) -> Path:
    """Write the readout and the comparison under the store, log both with the challenger's
    run and tag its version with the comparison's numbers."""
    from mlprod.registry._store import client_for, mlflow_errors

    folder = project.store / "retrain"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{result.model_name}-v{result.challenger_version}-comparison"
    text, data = folder / f"{stem}.txt", folder / f"{stem}.json"
    text.write_text(result.readout + "\n", encoding="utf-8")
    data.write_text(json.dumps(_with_path(result, text).to_dict(), indent=2) + "\n")
    uri, version = project.tracking_uri(), str(result.challenger_version)
    with mlflow_errors(uri, f"record the comparison of version {version}"):
        client = client_for(uri)
        for path in (text, data):
            client.log_artifact(run_id, str(path))
        for key, value in _tags(result).items():
            client.set_model_version_tag(result.model_name, version, key, value)
    return text


def _tags(result: RetrainResult) -> dict[str, str]:
    comparison, tags = result.comparison, {}
    tags[f"{TAG}.champion_version"] = str(result.champion_version)
    tags[f"{TAG}.window"] = f"{result.window.start.isoformat()}/{result.window.end.isoformat()}"
    tags[f"{TAG}.rows"] = str(result.window.rows)
    for difference in (comparison.auc, comparison.value):
        if difference is None:
            continue
        metric = difference.metric
        tags[f"{TAG}.{metric}_champion"] = repr(difference.champion)
        tags[f"{TAG}.{metric}_challenger"] = repr(difference.challenger)
        tags[f"{TAG}.{metric}_difference"] = repr(difference.difference)
        tags[f"{TAG}.{metric}_difference_ci"] = json.dumps(list(difference.ci))
        tags[f"{TAG}.{metric}_p_better"] = repr(difference.p_better)
    tags[f"{TAG}.decision"] = "accepted" if result.decision.accepted else "rejected"
    tags[f"{TAG}.reasons"] = "; ".join(result.decision.reasons)
    return tags


def _with_path(result: RetrainResult, path: Path) -> RetrainResult:
    return replace(result, readout_path=str(path))
