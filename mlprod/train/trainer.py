"""The training run: split, fit candidates, calibrate, choose the threshold, test once, save.

The order is the point: every choice (model, parameters, calibration, threshold) is made on
validation rows, and the test window is opened once, at the end, for the final numbers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from mlprod.artefact import (
    FittedPipeline,
    InputSchema,
    library_versions,
    reference_statistics,
    save_artefact,
)
from mlprod.errors import TrainError
from mlprod.evaluate.metrics import compare_to_baseline
from mlprod.evaluate.report import LEFT_OUT, ReportData, Scores, render_report, test_set_used
from mlprod.features.graph import ROW_NUMBER, FeatureGraph
from mlprod.features.matrix import Matrix
from mlprod.features.requests import request_fields
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import ExprFeature, ProjectConfig
from mlprod.project.training import ModelSpec, TrainConfig
from mlprod.train.calibration import choose_calibration
from mlprod.train.candidates import Candidate, fit_candidates, labels
from mlprod.train.leaks import leak_warnings
from mlprod.train.splits import Fold, SplitData, split_matrix
from mlprod.train.value import (
    F1_RULE,
    VALUE_RULE,
    check_values,
    choose_threshold,
    f1_threshold,
    outcome_values,
)

BASELINE = "baseline_raw_columns"


@dataclass
class TrainedModel:
    """What a training run produced, before registration."""

    pipeline: FittedPipeline
    artefact: Path
    metrics: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    params: dict[str, Any]
    tags: dict[str, str]
    warnings: list[str]
    test_fingerprint: str
    test_looks_before: int


def train_pipeline(
    config: ProjectConfig,
    graph: FeatureGraph,
    matrix: Matrix,
    store: Path,
    progress: ProgressCallback = NO_PROGRESS,
    test_looks: Callable[[str], int] | None = None,
) -> TrainedModel:
    """Train, choose and evaluate; write the artefact under ``store/models``.

    ``test_looks`` says how many registered versions were already tested on the test rows
    with a given fingerprint (the registry knows; by default none): the report says so, as
    a second look at the same test rows is no longer a fresh estimate.
    """
    train_config = config.train
    if train_config is None:
        raise TrainError("mlprod.yaml has no 'train' section; add one to train a model")
    value = train_config.value
    if value is not None:  # before any model is fitted: a null value would stop the run later
        check_values(value, matrix.table)
    split = split_matrix(matrix.table, train_config.split)
    features = list(matrix.features)
    categorical = {
        n.name: n.feature.categorical
        for n in graph.nodes.values()
        if n.feature.categorical is not None and n.name in features
    }
    fingerprint = matrix_fingerprint(matrix.table)
    warnings = leak_warnings(split.train, split.valid, features)
    spine = graph.config.spine
    if not spine.keys:
        warnings.append(
            f"no spine.keys: each row of source '{spine.source}' is named by its row number "
            f"({ROW_NUMBER}), in the source's order; add keys to score or label rows by id"
        )
    objective = tuning_objective(graph, fingerprint, features, train_config)
    candidates = fit_candidates(
        config.name,
        train_config,
        features,
        categorical,
        split.folds,
        store,
        progress,
        objective=objective,
    )
    best = candidates[0]
    y_valid = labels(split.valid)
    calibrator = choose_calibration(
        y_valid, best.valid_scores, train_config.calibration, train_config.seed
    )
    valid_scores = (
        calibrator.transform(best.valid_scores) if calibrator is not None else best.valid_scores
    )
    valid_worth = outcome_values(value, split.valid) if value is not None else None
    if valid_worth is not None:
        threshold, _ = choose_threshold(y_valid, valid_scores, valid_worth)
        rule = VALUE_RULE
    else:
        threshold, rule = f1_threshold(y_valid, valid_scores), F1_RULE
    baseline, baseline_name = _baseline(
        config.name, train_config, graph, features, split.folds, store
    )

    test = split.test.open("final evaluation")
    test_fingerprint = rows_fingerprint(test, list(graph.config.spine.keys))
    looks_before = test_looks(test_fingerprint) if test_looks is not None else 0
    if looks_before:
        warnings.append(
            f"{test_set_used(looks_before)}: "
            f"earlier versions were tested on these {test.num_rows:,} test rows (fingerprint "
            f"{test_fingerprint}), so this test score is not a fresh estimate"
        )
    y_test = labels(test)
    test_worth = outcome_values(value, test) if value is not None else None
    pipeline = FittedPipeline(
        project=config.name,
        definitions=config.model_dump(mode="json", by_alias=True, exclude={"train", *RESOURCES}),
        features=features,
        scorer=best.scorer,
        model_name=best.name,
        calibrator=calibrator,
        threshold=threshold,
        reference=reference_statistics(split.train, features, valid_scores, threshold),
        input_schema=input_schema(graph, matrix, features),
    )
    test_scores = pipeline.predict_proba(test)
    baseline_scores = baseline.scorer.predict_table(test)
    lineage = _lineage(config, matrix, fingerprint, split.summary, train_config)
    pipeline.lineage = lineage
    leaderboard = [c.row() for c in candidates]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.html"
        metrics = render_report(
            ReportData(
                model_name=f"{config.name} ({best.name})",
                version=None,
                created=datetime.now(UTC),
                datasets={k: v for k, v in split.summary.items() if isinstance(v, dict)},
                chosen=best.name,
                validation=Scores(y_valid, valid_scores, valid_worth),
                test=Scores(y_test, test_scores, test_worth),
                threshold=threshold,
                threshold_rule=rule,
                value=value,
                importance=best.scorer.importance(),
                leaderboard=leaderboard,
                baseline=compare_to_baseline(
                    y_test,
                    test_scores,
                    baseline_scores,
                    name=baseline_name,
                    seed=train_config.seed,
                    split="test",
                ),
                notes=graph.notes(),
                folds=_fold_rows(split, best.valid_scores),
                warnings=warnings,
                left_out=left_out(matrix.events),
                test_fingerprint=test_fingerprint,
                test_looks_before=looks_before,
            ),
            report,
        )
        metrics_path = Path(scratch) / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        artefact = store / "models" / (train_config.registry_name or config.name) / stamp
        save_artefact(pipeline, artefact, {"report.html": report, "metrics.json": metrics_path})
    params = {
        "model": best.name,
        "threshold": threshold,
        "threshold_rule": rule,
        "calibration": getattr(calibrator, "method_", "none"),
        **{f"{best.name}.{k}": v for k, v in best.params.items()},
    }
    tags = {key: str(value) for key, value in lineage.items() if not isinstance(value, dict)}
    return TrainedModel(
        pipeline,
        artefact,
        metrics,
        leaderboard,
        params,
        tags,
        warnings,
        test_fingerprint,
        looks_before,
    )


def left_out(events: dict[str, int]) -> dict[str, int]:
    """How many spine events the matrix left out, by reason (``LEFT_OUT``)."""
    return {reason: int(events.get(reason, 0)) for reason in LEFT_OUT}


def rows_fingerprint(table: pa.Table, keys: list[str]) -> str:
    """A hash of which rows a table holds (keys, prediction time, label): the same test rows
    give the same fingerprint whatever features a version computes for them."""
    wanted = [*keys, "prediction_time", "label"]
    columns = [name for name in dict.fromkeys(wanted) if name in table.column_names]
    return matrix_fingerprint(table.select(columns))


def tuning_objective(
    graph: FeatureGraph, fingerprint: str, features: list[str], train: TrainConfig
) -> dict[str, Any]:
    """What a tuning trial is scored on, to key its study by: the training matrix's
    ``fingerprint`` (it covers the data, the features' values and ``as_of``), the definitions of the
    features in the order the model reads them (their encodings change scores without
    changing the matrix), the split and the seed the models are fitted with."""
    return {
        "matrix": fingerprint,
        "features": [
            graph.nodes[n].feature.model_dump(mode="json", by_alias=True) for n in features
        ],
        "split": train.split.model_dump(mode="json"),
        "seed": train.seed,
    }


def input_schema(graph: FeatureGraph, matrix: Matrix, features: list[str]) -> InputSchema:
    """What the model reads: request fields (from the graph), keys, feature types (matrix)."""
    request = [field.to_dict() for field in request_fields(graph, features)]
    keys = list(graph.config.spine.keys)
    return InputSchema.of_table(matrix.table, features, matrix.hashes, keys, request)


def _fold_rows(split: SplitData, valid_scores: np.ndarray) -> list[dict[str, Any]]:
    """Under cross-validation, each fold's rows and the chosen model's out-of-fold AUC on it."""
    if len(split.folds) < 2:
        return []
    rows, start = [], 0
    for fold in split.folds:
        end = start + fold.valid.num_rows
        y = labels(fold.valid)
        rows.append(
            {
                "fold": fold.name,
                "train_rows": fold.train.num_rows,
                "valid_rows": fold.valid.num_rows,
                "valid_positive_rate": float(y.mean()),
                "valid_auc": float(roc_auc_score(y, valid_scores[start:end])),
            }
        )
        start = end
    return rows


def _baseline(
    project: str,
    config: TrainConfig,
    graph: FeatureGraph,
    features: list[str],
    folds: Sequence[Fold],
    store: Path,
) -> tuple[Candidate, str]:
    """A model of the row expressions of the spine alone (no lookups, as-of joins or
    aggregates), with the name the report gives it.

    LightGBM, unless the features are the spine's own columns and nothing else: then it
    would compare the model with itself, and an L2-regularised logistic regression on the
    same columns is the baseline instead.
    """
    raw = baseline_features(graph, features)
    if not raw:
        raise TrainError("the baseline needs at least one row-expression feature of the spine")
    categorical = {n: spec for n in raw if (spec := graph.nodes[n].feature.categorical) is not None}
    count = f"{len(raw)} {'feature' if len(raw) == 1 else 'features'}"
    if len(raw) == len(features):
        model = ModelSpec(kind="logistic", name=BASELINE, params={"penalty": "l2", "C": 1.0})
        name = (
            f"logistic regression (L2, C=1) on the spine's own columns ({count}; the model "
            "reads only these, so LightGBM on them would compare it with itself)"
        )
    else:
        model = ModelSpec(kind="lightgbm", name=BASELINE)
        name = f"LightGBM on the spine's own columns ({count})"
    baseline = config.model_copy(update={"models": [model], "tuning": config.tuning})
    return fit_candidates(project, baseline, raw, categorical, folds, store)[0], name


def baseline_features(graph: FeatureGraph, features: list[str]) -> list[str]:
    """The features computed from the spine's own columns: what a model without mlprod sees."""
    return [
        name
        for name in features
        if isinstance(graph.nodes[name].feature, ExprFeature) and not graph.nodes[name].deps
    ]


def matrix_fingerprint(table: pa.Table) -> str:
    """A hash of the training matrix, insensitive to the last bits of float sums.

    Window sums are added in parallel, in an order that can change between runs; floats are
    hashed as float32 so that run-to-run rounding does not change the fingerprint.
    """
    digest = hashlib.sha256()
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_floating(column.type):
            digest.update(np.asarray(column.to_numpy(zero_copy_only=False), np.float32).tobytes())
        else:
            hashed = pd.util.hash_pandas_object(column.to_pandas(), index=False)
            digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()[:16]


# Sections that say how much of the machine to use, where models are kept or how the model is
# watched, not what to compute: outside the lineage, so giving a build more memory, moving the
# registry to a server or changing an alert rule does not make a model's recorded config differ.
RESOURCES = frozenset({"engine", "registry", "online", "log", "serve", "monitor", "retrain"})


def config_hash(config: ProjectConfig) -> str:
    """A hash of the whole configuration but its resource settings, as the lineage records it."""
    dumped = config.model_dump(mode="json", by_alias=True, exclude=set(RESOURCES))
    config_json = json.dumps(dumped, sort_keys=True)
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def source_schema_hashes(matrix: Matrix) -> dict[str, str]:
    """A hash of each source's column types, as the lineage records them."""
    return {
        name: hashlib.sha256(json.dumps(p.types, sort_keys=True).encode()).hexdigest()[:16]
        for name, p in matrix.sources.items()
    }


def source_fingerprints(matrix: Matrix) -> dict[str, dict[str, Any]]:
    """Each source's row count and column fingerprints, as the lineage records them."""
    return {
        name: {"rows": p.rows, "columns": dict(p.fingerprints)}
        for name, p in matrix.sources.items()
    }


def _lineage(
    config: ProjectConfig,
    matrix: Matrix,
    fingerprint: str,
    summary: dict[str, Any],
    train: TrainConfig,
) -> dict[str, Any]:
    # "train" and "sources" were added later: readers treat them as optional (older artefacts).
    return {
        "config_hash": config_hash(config),
        "data_fingerprint": fingerprint,
        "source_schemas": source_schema_hashes(matrix),
        "sources": source_fingerprints(matrix),
        "as_of": matrix.as_of.isoformat(),
        "git_commit": git_commit(),
        "seed": train.seed,
        "train": train.model_dump(mode="json", by_alias=True),
        "libraries": library_versions(),
        "splits": summary,
    }


def git_commit() -> str:
    """The commit the code runs from, for lineage ("unknown" outside a git checkout)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() or "unknown"
