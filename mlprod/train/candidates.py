"""Fit the configured candidate models on one split and rank them on validation."""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.progress import Progress
from sklearn.metrics import log_loss, roc_auc_score

from mlprod.project.config import CategoricalSpec
from mlprod.project.training import ModelSpec, TrainConfig
from mlprod.train.encoders import Encoding, TabularEncoder
from mlprod.train.ensemble import EncodedModel, Ensemble, describe, fit_ensemble
from mlprod.train.models import FittedModel, encoding_for, fit_model
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

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "valid_auc": round(self.valid_auc, 5),
            "valid_log_loss": round(self.valid_log_loss, 5),
            "fit_seconds": round(self.fit_seconds, 2),
            "trials": self.trials,
            "size_bytes": self.size_bytes,
            "latency_ms": round(self.latency_ms, 4),
        }


def labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)


def fit_candidates(
    project: str,
    config: TrainConfig,
    features: list[str],
    categorical: dict[str, CategoricalSpec],
    train: pa.Table,
    valid: pa.Table,
    store: Path,
    progress: Progress | None = None,
) -> list[Candidate]:
    """Fit (and tune) every configured model; best validation AUC first."""
    encoders: dict[Encoding, TabularEncoder] = {}
    y_train, y_valid = labels(train), labels(valid)
    candidates = []
    scored: dict[int, np.ndarray] = {}  # validation scores by model, from fitting
    for spec in config.models:
        encoding = encoding_for(spec.kind)
        if encoding not in encoders:
            encoders[encoding] = TabularEncoder(features, categorical, encoding).fit(train)
        encoder = encoders[encoding]
        x_train, x_valid = encoder.transform(train), encoder.transform(valid)

        def fit(
            params: dict[str, Any],
            callbacks: list[Any],
            spec: ModelSpec = spec,
            encoder: TabularEncoder = encoder,
            x_train: np.ndarray = x_train,
            x_valid: np.ndarray = x_valid,
        ) -> tuple[FittedModel, float]:
            model = fit_model(
                spec.kind,
                params,
                (x_train, y_train),
                (x_valid, y_valid),
                encoder.categorical_indices,
                config.seed,
                callbacks,
            )
            scored[id(model)] = model.predict_proba(x_valid)
            return model, float(roc_auc_score(y_valid, scored[id(model)]))

        trials = 1
        if spec.search and config.tuning.trials > 1:
            name = study_name(project, spec, config.tuning)
            result = tune(
                spec, fit, config.tuning, store / "tuning" / f"{name}.log", name, progress
            )
            model, trials = result.model, result.trials
        else:
            model, _ = fit(dict(spec.params), [])
        scores = scored[id(model)]  # validation scores, computed once while fitting
        candidates.append(
            Candidate(
                spec.label,
                spec.kind,
                EncodedModel(encoder, model),
                model.params,
                scores,
                float(roc_auc_score(y_valid, scores)),
                float(log_loss(y_valid, scores, labels=[0, 1])),
                model.fit_seconds,
                len(pickle.dumps(model.estimator)),
                single_row_latency_ms(model, x_valid),
                trials,
            )
        )
    ranked = sorted(candidates, key=lambda c: (-c.valid_auc, c.valid_log_loss))
    if config.ensemble is not None and len(ranked) >= 2:
        ranked = rank([*ranked, *ensembles(ranked, config, y_valid)])
    return ranked


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best validation AUC first; log-loss breaks ties."""
    return sorted(candidates, key=lambda c: (-c.valid_auc, c.valid_log_loss))


def ensembles(ranked: list[Candidate], config: TrainConfig, y_valid: np.ndarray) -> list[Candidate]:
    """Average and/or stack the best single models, scored on the same validation rows."""
    assert config.ensemble is not None
    top = [c for c in ranked if isinstance(c.scorer, EncodedModel)][: config.ensemble.top]
    members = [c.scorer for c in top if isinstance(c.scorer, EncodedModel)]
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
