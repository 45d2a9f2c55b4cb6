"""Hyper-parameter search with Optuna, scored on validation rows only, resumable.

A study is one search over one objective, as Optuna means it. Each candidate model gets its
own study, stored in the project (``<store>/tuning/``) under a name that hashes everything
that shapes a trial's score: what the trials are scored on (the training matrix's
fingerprint, the feature definitions, the split and the training seed, given by the trainer),
the model's spec with its search space, the sampler and its seed. Changed inputs start a fresh
study; an interrupted run on the same inputs picks up where it stopped.

Resuming is exact. Only one process searches a study at a time (it holds the study's lock),
so a trial found ``RUNNING`` belongs to a process that was killed: it is marked failed and not
counted. Each counted trial is sampled by a sampler seeded with the seed plus the number of
trials counted before it (see :func:`_sampler`), so a search interrupted and resumed samples
what an uninterrupted one does, and a version keeps the first ``trials`` counted trials of its
study: ``reproduce``, which searches afresh in one go, finds the same best trial. Gradient
boosting trials report their validation AUC as they grow, so hopeless trials are pruned early.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from mlprod.errors import TrainError
from mlprod.progress import NO_PROGRESS, ProgressCallback, ProgressTask
from mlprod.project.training import ModelSpec, SearchRange, TuningConfig

# Optuna imports tqdm, which warns in a Jupyter kernel without ipywidgets that it cannot draw
# notebook bars; mlprod draws its own progress, so the warning says nothing to our users.
warnings.filterwarnings("ignore", message="IProgress not found")

if TYPE_CHECKING:
    import optuna

Model = TypeVar("Model")
# fit(params, callbacks) -> (model, validation AUC)
Fit = Callable[[dict[str, Any], list[Any]], tuple[Model, float]]


@dataclass
class TuningResult(Generic[Model]):
    model: Model
    valid_auc: float
    best_params: dict[str, Any]
    trials: int  # the trials the result was chosen from (killed ones are not counted)
    pruned: int


def study_name(
    project: str,
    spec: ModelSpec,
    tuning: TuningConfig,
    objective: Mapping[str, Any],
    folds: int = 1,
) -> str:
    """The study's name: a hash of what the trials are scored on (``objective``), the search
    space, the sampler, its seed and the folds.

    The number of trials and the timeout are left out: they say how long to search, so
    raising them continues the same study.
    """
    settings = {
        "model": spec.model_dump(mode="json"),
        "sampler": tuning.sampler,
        "seed": tuning.seed,
        "folds": folds,
        "objective": objective,
    }
    settings_json = json.dumps(settings, sort_keys=True, default=str)
    return f"{project}.{spec.label}.{hashlib.sha256(settings_json.encode()).hexdigest()[:10]}"


def tune(
    spec: ModelSpec,
    fit: Fit[Model],
    tuning: TuningConfig,
    storage: Path | None,
    name: str,
    progress: ProgressCallback = NO_PROGRESS,
) -> TuningResult[Model]:
    """Run (or resume) the study, then return the best of its first ``tuning.trials`` counted
    trials (completed or pruned; fewer on a smaller grid), refitted if its model is not in
    memory.

    ``storage`` is the study's journal file; None keeps the study in memory (not resumable).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    models: dict[int, tuple[Model, float]] = {}
    planned = _planned(spec, tuning)
    task = progress.start(f"tuning {spec.label}", total=planned)

    def objective(trial: optuna.Trial) -> float:
        params = {**spec.params, **_suggest(trial, spec.search)}
        callbacks = [_pruning_callback(trial)] if spec.kind == "lightgbm" else []
        try:
            model, auc = fit(params, callbacks)
        except KeyboardInterrupt:  # Optuna marks the trial failed and re-raises it, after
            optuna.logging.set_verbosity(optuna.logging.ERROR)  # logging it with a traceback
            raise
        models[trial.number] = (model, auc)
        return auc

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(_counted(study))
        if done < planned:
            study.sampler = _sampler(spec, tuning, done)  # for the next trial
        best = study.best_value if study.best_trial else float("nan")
        task.advance()
        task.update(description=f"tuning {spec.label} (best AUC {best:.4f})")

    with _session(storage, spec.label, task) as backend:
        study = optuna.create_study(
            study_name=name,
            storage=backend,
            direction="maximize",
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30),
            load_if_exists=True,
        )
        _fail_stale_trials(study, backend)
        done = len(_counted(study))
        task.update(completed=min(done, planned))
        if done < planned:
            study.sampler = _sampler(spec, tuning, done)
            timeout = tuning.timeout.total_seconds() if tuning.timeout else None
            study.optimize(objective, n_trials=planned - done, timeout=timeout, callbacks=[advance])
        used = _counted(study)[:planned]
    task.finish()
    best = _best(used, spec)
    best_params = {**spec.params, **best.params}
    if best.number in models:
        model, auc = models[best.number]
    else:  # the best trial ran in an earlier session: refit it (fitting is deterministic)
        model, auc = fit(best_params, [])
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in used)
    return TuningResult(model, auc, best_params, len(used), pruned)


@contextmanager
def _session(
    storage: Path | None, label: str, task: ProgressTask
) -> Iterator[optuna.storages.BaseStorage]:
    """The study's storage, searched by this process alone until the block ends.

    The lock is an exclusive ``flock`` on ``<journal>.session``, which the kernel releases when
    the process ends, however it ends: under it, a trial still ``RUNNING`` was left by a
    process that is gone. A second run of the same search waits for the first to end, then
    resumes from where it stopped (usually with nothing left to do).
    """
    import fcntl

    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        yield optuna.storages.InMemoryStorage()
        return
    storage.parent.mkdir(parents=True, exist_ok=True)
    with storage.with_name(f"{storage.name}.session").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            task.update(description=f"tuning {label} (waiting for another run of this search)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        # Optuna locks the journal for each append with a symlink, <journal>.lock; one left by
        # a process killed mid-append would stall this session for 30 s. No one else writes
        # the journal while the session is held, so it is stale.
        Path(f"{storage}.lock").unlink(missing_ok=True)
        yield optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


def _fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark the trials a killed session left ``RUNNING`` as failed: they were never scored, so
    they are not counted, and their parameters are sampled again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not stale:
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count, in the order they ran: completed or pruned, never failed."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _best(used: list[optuna.trial.FrozenTrial], spec: ModelSpec) -> optuna.trial.FrozenTrial:
    """The best completed trial; the first of equals, as Optuna chooses."""
    from optuna.trial import TrialState

    complete = [t for t in used if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        raise TrainError(
            f"the search for {spec.label} completed no trial ({len(used)} pruned); give it "
            "more trials or a longer tuning.timeout"
        )
    return max(complete, key=lambda t: float(t.value or 0.0))


def _planned(spec: ModelSpec, tuning: TuningConfig) -> int:
    """How many trials the search runs: ``tuning.trials``, or fewer if a grid has fewer
    points (past them it would score its points again)."""
    if tuning.sampler != "grid":
        return tuning.trials
    return min(tuning.trials, len(_grid(spec, tuning.seed)))


def _sampler(spec: ModelSpec, tuning: TuningConfig, position: int) -> Any:
    """A fresh sampler for the trial at ``position`` (the trials counted before it), seeded
    with ``seed + position``.

    A seeded sampler restarted in a new session replays its first draws: a resumed search
    would try its first trial's parameters again. Nor can one sampler's random stream be
    continued across sessions: the draws of a killed trial die with it. Seeding each trial by
    its position makes its parameters depend on the seed and the trials counted before it
    only, whatever the sessions: a finished trial's parameters are not drawn again by the
    restart, a killed trial's (never scored) are retried, and a resumed search samples, trial
    for trial, what an uninterrupted one does, so ``reproduce`` finds the same best trial.
    Enqueuing untried parameters instead would make the sequence depend on where the
    interruptions fell. A grid search gives the trial at ``position`` that point of the grid
    (Optuna's GridSampler numbers its points by trial number, which a killed trial shifts).
    """
    import optuna

    seed = tuning.seed + position
    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tuning.sampler == "grid":
        return _grid_point_sampler(_grid(spec, tuning.seed)[position], seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, tuning.trials))


def _grid(spec: ModelSpec, seed: int) -> list[dict[str, Any]]:
    """Every point of the grid of the search's lists, in an order shuffled by ``seed`` (so that
    a search cut short still spreads over the grid)."""
    names = sorted(name for name, space in spec.search.items() if isinstance(space, list))
    lists = [spec.search[name] for name in names]
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*lists)]
    order = np.random.RandomState(seed).permutation(len(points))
    return [points[i] for i in order]


def _grid_point_sampler(point: dict[str, Any], seed: int) -> Any:
    """A sampler that gives a trial one grid point (and any ranges of the search at random)."""
    import optuna

    class GridPoint(optuna.samplers.RandomSampler):
        def sample_independent(
            self,
            study: optuna.Study,
            trial: optuna.trial.FrozenTrial,
            param_name: str,
            param_distribution: optuna.distributions.BaseDistribution,
        ) -> Any:
            if param_name in point:
                return point[param_name]
            return super().sample_independent(study, trial, param_name, param_distribution)

    return GridPoint(seed=seed)


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
