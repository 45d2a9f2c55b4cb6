"""Hyper-parameter search with Optuna, scored on validation rows only, resumable.

Each candidate model gets its own study, stored in the project (``<store>/tuning/``) under
a name that includes the hash of its search settings: an interrupted search picks up where
it stopped, and a changed search space starts afresh. Gradient boosting trials report their
validation AUC as they grow, so hopeless trials are pruned early.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.training import ModelSpec, SearchRange, TuningConfig

Model = TypeVar("Model")
# fit(params, callbacks) -> (model, validation AUC)
Fit = Callable[[dict[str, Any], list[Any]], tuple[Model, float]]


@dataclass
class TuningResult(Generic[Model]):
    model: Model
    valid_auc: float
    best_params: dict[str, Any]
    trials: int
    pruned: int


def study_name(project: str, spec: ModelSpec, tuning: TuningConfig, folds: int = 1) -> str:
    """The study's name: changing the search space, sampler, seed or folds starts afresh."""
    settings: list[Any] = [spec.model_dump(mode="json"), tuning.sampler, tuning.seed]
    if folds > 1:
        settings.append(folds)
    settings_json = json.dumps(settings, sort_keys=True)
    return f"{project}.{spec.label}.{hashlib.sha256(settings_json.encode()).hexdigest()[:10]}"


def tune(
    spec: ModelSpec,
    fit: Fit[Model],
    tuning: TuningConfig,
    storage: Path,
    name: str,
    progress: ProgressCallback = NO_PROGRESS,
) -> TuningResult[Model]:
    """Run (or resume) the study, then return the best model, refitted if it is not in memory."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(storage))
    study = optuna.create_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(backend),
        direction="maximize",
        sampler=_sampler(spec, tuning),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30),
        load_if_exists=True,
    )
    finished = [t for t in study.trials if t.state.is_finished()]
    remaining = max(tuning.trials - len(finished), 0)
    models: dict[int, tuple[Model, float]] = {}
    task = progress.start(f"tuning {spec.label}", total=tuning.trials)
    task.update(completed=len(finished))

    def objective(trial: optuna.Trial) -> float:
        params = {**spec.params, **_suggest(trial, spec.search)}
        callbacks = [_pruning_callback(trial)] if spec.kind == "lightgbm" else []
        model, auc = fit(params, callbacks)
        models[trial.number] = (model, auc)
        return auc

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = study.best_value if study.best_trial else float("nan")
        task.advance()
        task.update(description=f"tuning {spec.label} (best AUC {best:.4f})")

    if remaining:
        timeout = tuning.timeout.total_seconds() if tuning.timeout else None
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[advance])
    task.finish()
    best = study.best_trial
    best_params = {**spec.params, **best.params}
    if best.number in models:
        model, auc = models[best.number]
    else:  # the best trial ran in an earlier, interrupted session: refit it (deterministic)
        model, auc = fit(best_params, [])
    states = [t.state for t in study.trials]
    pruned = sum(state == optuna.trial.TrialState.PRUNED for state in states)
    return TuningResult(model, auc, best_params, len(study.trials), pruned)


def _sampler(spec: ModelSpec, tuning: TuningConfig) -> Any:
    import optuna

    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tuning.seed)
    if tuning.sampler == "grid":
        grid = {k: v for k, v in spec.search.items() if isinstance(v, list)}
        return optuna.samplers.GridSampler(grid, seed=tuning.seed)
    return optuna.samplers.TPESampler(seed=tuning.seed, n_startup_trials=min(5, tuning.trials))


def _suggest(trial: Any, search: dict[str, SearchRange | list[Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, space in search.items():
        if isinstance(space, list):
            params[name] = trial.suggest_categorical(name, space)
        elif space.integer:
            params[name] = trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
        else:
            params[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return params


def _pruning_callback(trial: Any) -> Callable[[Any], None]:
    """A LightGBM callback that reports validation AUC and stops a hopeless trial."""
    import optuna

    def callback(env: Any) -> None:
        for _, metric, value, _ in env.evaluation_result_list:
            if metric == "auc":
                trial.report(value, step=env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {env.iteration}")

    return callback
