"""Fit the configured candidate models on one split and rank them on validation."""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import log_loss, roc_auc_score

from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import CategoricalSpec
from mlprod.project.training import ModelSpec, TrainConfig
from mlprod.train.encoders import Encoding, TabularEncoder
from mlprod.train.ensemble import EncodedModel, Ensemble, describe, fit_ensemble
from mlprod.train.models import encoding_for, fit_model
from mlprod.train.splits import Fold
from mlprod.train.tuning import study_name, tune


@dataclass
class Candidate:
    """A fitted candidate with its validation scores and what it costs to deploy."""

    name: str
    kind: str
    scorer: EncodedModel | Ensemble
    params: dict[str, Any]
    valid_scores: np.ndarray
    valid_auc: float
    valid_log_loss: float
    fit_seconds: float
    size_bytes: int
    latency_ms: float
    trials: int = 1
    fold_aucs: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        spread = {}
        if len(self.fold_aucs) > 1:
            spread = {"fold_auc_std": round(float(np.std(self.fold_aucs)), 5)}
        return {
            "name": self.name,
            "kind": self.kind,
            "valid_auc": round(self.valid_auc, 5),
            **spread,
            "valid_log_loss": round(self.valid_log_loss, 5),
            "fit_seconds": round(self.fit_seconds, 2),
            "trials": self.trials,
            "size_bytes": self.size_bytes,
            "latency_ms": round(self.latency_ms, 4),
        }


def labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass
class _FoldData:
    """One fold's rows, encoded for each encoding a model asks for (encoders fitted on its
    training rows only)."""

    fold: Fold
    y_train: np.ndarray
    y_valid: np.ndarray
    encoded: dict[Encoding, tuple[TabularEncoder, np.ndarray, np.ndarray]]

    def encode(
        self, encoding: Encoding, features: list[str], categorical: dict[str, CategoricalSpec]
    ) -> tuple[TabularEncoder, np.ndarray, np.ndarray]:
        if encoding not in self.encoded:
            encoder = TabularEncoder(features, categorical, encoding).fit(self.fold.train)
            self.encoded[encoding] = (
                encoder,
                encoder.transform(self.fold.train),
                encoder.transform(self.fold.valid),
            )
        return self.encoded[encoding]


@dataclass
class _Fitted:
    """One candidate fitted on every fold, with its out-of-fold validation scores."""

    members: list[EncodedModel]
    scores: np.ndarray
    fold_aucs: list[float]
    auc: float  # of the out-of-fold scores

    @property
    def scorer(self) -> EncodedModel | Ensemble:
        """The model of a single split; the average of the fold models under cross-validation."""
        return self.members[0] if len(self.members) == 1 else Ensemble(self.members, "average")


def fit_candidates(
    project: str,
    config: TrainConfig,
    features: list[str],
    categorical: dict[str, CategoricalSpec],
    folds: Sequence[Fold],
    store: Path,
    progress: ProgressCallback = NO_PROGRESS,
    *,
    objective: Mapping[str, Any] | None = None,
) -> list[Candidate]:
    """Fit (and tune) every configured model on every fold; best validation AUC first.

    Under cross-validation a candidate is scored on its out-of-fold predictions (each fold's
    validation rows scored by the model that did not train on them) and deployed as the
    average of its fold models, each of which stopped early on its own fold.

    ``objective`` says what the folds were made from (see ``trainer.tuning_objective``); it
    keys the stored tuning studies, so a search resumes only on the same inputs. Without it
    a search is kept in memory and starts afresh each time.
    """
    data = [_FoldData(f, labels(f.train), labels(f.valid), {}) for f in folds]
    y_valid = np.concatenate([d.y_valid for d in data])
    candidates = []
    for spec in config.models:
        encoding = encoding_for(spec.kind)

        def fit(
            params: dict[str, Any],
            callbacks: list[Any],
            spec: ModelSpec = spec,
            encoding: Encoding = encoding,
        ) -> tuple[_Fitted, float]:
            members, scores, aucs = [], [], []
            for index, fold in enumerate(data):
                encoder, x_train, x_valid = fold.encode(encoding, features, categorical)
                model = fit_model(
                    spec.kind,
                    params,
                    (x_train, fold.y_train),
                    (x_valid, fold.y_valid),
                    encoder.categorical_indices,
                    config.seed,
                    callbacks if index == 0 else [],  # pruning watches the first fold
                )
                members.append(EncodedModel(encoder, model))
                scores.append(model.predict_proba(x_valid))
                aucs.append(float(roc_auc_score(fold.y_valid, scores[-1])))
            pooled = np.concatenate(scores)
            auc = aucs[0] if len(aucs) == 1 else float(roc_auc_score(y_valid, pooled))
            return _Fitted(members, pooled, aucs, auc), auc

        trials = 1
        if spec.search and config.tuning.trials > 1:
            name = study_name(project, spec, config.tuning, objective or {}, len(data))
            journal = store / "tuning" / f"{name}.log" if objective is not None else None
            result = tune(spec, fit, config.tuning, journal, name, progress)
            fitted, trials = result.model, result.trials
        else:
            fitted, _ = fit(dict(spec.params), [])
        first = fitted.members[0]
        latency = sum(
            single_row_latency_ms(m.model, fold.encode(encoding, features, categorical)[2])
            for m, fold in zip(fitted.members, data, strict=True)
        )
        candidates.append(
            Candidate(
                spec.label,
                spec.kind,
                fitted.scorer,
                first.model.params,
                fitted.scores,
                fitted.auc,
                float(log_loss(y_valid, fitted.scores, labels=[0, 1])),
                sum(m.model.fit_seconds for m in fitted.members),
                sum(len(pickle.dumps(m.model.estimator)) for m in fitted.members),
                latency,
                trials,
                fitted.fold_aucs,
            )
        )
    ranked = rank(candidates)
    if config.ensemble is not None and len(ranked) >= 2:
        ranked = rank([*ranked, *ensembles(ranked, config, y_valid)])
    return ranked


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best validation AUC first; log-loss breaks ties."""
    return sorted(candidates, key=lambda c: (-c.valid_auc, c.valid_log_loss))


def ensembles(ranked: list[Candidate], config: TrainConfig, y_valid: np.ndarray) -> list[Candidate]:
    """Average and/or stack the best single models, scored on the same validation rows."""
    assert config.ensemble is not None
    top = [c for c in ranked if not c.kind.startswith("ensemble:")][: config.ensemble.top]
    members = [c.scorer for c in top]
    results = []
    for method in config.ensemble.methods:
        started = time.perf_counter()
        ensemble, scores = fit_ensemble(
            members, [c.valid_scores for c in top], y_valid, method, config.seed
        )
        names = [c.name for c in top]
        results.append(
            Candidate(
                f"{method}({'+'.join(names)})",
                f"ensemble:{method}",
                ensemble,
                describe(ensemble, names),
                scores,
                float(roc_auc_score(y_valid, scores)),
                float(log_loss(y_valid, scores, labels=[0, 1])),
                sum(c.fit_seconds for c in top) + time.perf_counter() - started,
                sum(c.size_bytes for c in top) + len(pickle.dumps(ensemble.stacker)),
                sum(c.latency_ms for c in top),
                sum(c.trials for c in top),
            )
        )
    return results


def single_row_latency_ms(model: Any, x: np.ndarray, rows: int = 200) -> float:
    """Median time to score one row, as a server scoring single requests would."""
    timings = []
    for row in x[: min(rows, len(x))]:
        started = time.perf_counter()
        model.predict_proba(row.reshape(1, -1))
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000) if timings else 0.0
