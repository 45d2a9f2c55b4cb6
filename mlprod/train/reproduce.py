"""Rebuild a registered model from its recorded inputs and compare its predictions.

An artefact's lineage records what the model was made from: the ``as_of`` of its training
matrix, a fingerprint of that matrix, the hash of the configuration, the hash of each
source's schema, the git commit and the library versions. Reproducing a model rebuilds the
matrix at the recorded ``as_of``, trains again with the current configuration (same seeds)
into a scratch store, so the project's registry, models and tuning studies are left alone and
the hyper-parameter search runs afresh, then scores the test window with both the recorded
pipeline and the rebuilt one. Predictions equal within :data:`TOLERANCE` mean the model was
reproduced; every recorded input that differs now is listed, whether or not it changed them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlprod.artefact import library_versions, load_artefact, read_manifest
from mlprod.errors import TrainError, one_of
from mlprod.features.graph import FeatureGraph
from mlprod.features.matrix import Matrix
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import ProjectConfig
from mlprod.train.splits import split_matrix
from mlprod.train.trainer import (
    RESOURCES,
    config_hash,
    git_commit,
    matrix_fingerprint,
    source_schema_hashes,
    train_pipeline,
)

TOLERANCE = 1e-9
ABSENT = "(absent)"
# At most this many differences of one kind are listed; the rest are counted.
SHOWN = 20


def reproduce(
    config: ProjectConfig,
    graph: FeatureGraph,
    store: Path,
    recorded_dir: Path,
    build_matrix: Callable[[datetime], Matrix],
    progress: ProgressCallback = NO_PROGRESS,
    *,
    version: str | None = None,
) -> dict[str, Any]:
    """Retrain the model in ``recorded_dir`` from its recorded inputs and compare predictions.

    Returns the version, whether the test-window predictions are reproduced, their largest
    absolute difference, the number of test rows (and how many of them differ), each recorded
    input that differs now (``what``: data, config, code, library or source_schema, with its
    ``name`` and the ``recorded`` and ``now`` values) and the seconds it took. Raises
    TrainError only when the model cannot be rebuilt or compared at all.
    """
    started = time.perf_counter()
    train = config.train
    if train is None:
        raise TrainError(
            "mlprod.yaml has no 'train' section; reproducing a model trains it again, so add "
            "the train section it was trained with"
        )
    lineage: dict[str, Any] = read_manifest(recorded_dir).get("lineage") or {}
    if not lineage.get("as_of"):
        raise TrainError(
            f"the artefact {recorded_dir} records no as_of in its lineage, so its training "
            "matrix cannot be rebuilt; only models trained by this version of mlprod can be "
            "reproduced"
        )
    recorded = load_artefact(recorded_dir)
    matrix = build_matrix(datetime.fromisoformat(lineage["as_of"]))
    differences = [
        *_config_differences(lineage, config, recorded.definitions),
        *_data_differences(lineage, matrix),
        *_code_differences(lineage),
    ]
    missing = sorted(set(recorded.features) - set(matrix.table.column_names))
    if missing:
        raise TrainError(
            f"the recorded model uses features the configuration no longer defines: "
            f"{one_of(missing)}; restore their definitions to reproduce it" + _listed(differences)
        )
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".reproduce-", dir=store) as scratch:
        try:
            rebuilt = train_pipeline(config, graph, matrix, Path(scratch), progress)
        except TrainError as exc:
            raise TrainError(
                f"the model could not be trained again: {exc}" + _listed(differences)
            ) from None
    differences += _changes(
        "data", "splits", lineage.get("splits"), rebuilt.pipeline.lineage["splits"]
    )
    test = split_matrix(matrix.table, train.split).test.open("reproduction")
    gaps = np.abs(recorded.predict_proba(test) - rebuilt.pipeline.predict_proba(test))
    largest = float(gaps.max()) if gaps.size else 0.0
    return {
        "version": version,
        "reproduced": bool(largest <= TOLERANCE),
        "max_abs_difference": largest,
        "rows": int(test.num_rows),
        "rows_different": int((gaps > TOLERANCE).sum()),
        "differences": differences,
        "seconds": round(time.perf_counter() - started, 3),
    }


def describe(difference: dict[str, Any]) -> str:
    """One line for a difference, e.g. ``library lightgbm: recorded 4.5.0, now 4.6.0``."""
    if difference.get("omitted"):
        return f"{difference['what']}: {difference['omitted']} more differences not listed"
    line = (
        f"{difference['what']} {difference['name']}: recorded {_shown(difference['recorded'])}, "
        f"now {_shown(difference['now'])}"
    )
    return f"{line} ({difference['note']})" if difference.get("note") else line


# --- what differs ------------------------------------------------------------------------------


def _config_differences(
    lineage: dict[str, Any], config: ProjectConfig, definitions: dict[str, Any]
) -> list[dict[str, Any]]:
    """The config hash, then each changed setting outside ``train`` (which is only hashed)."""
    now = config_hash(config)
    if lineage.get("config_hash") == now:
        return []
    found = [_difference("config", "hash", lineage.get("config_hash", ABSENT), now)]
    current = _plain(config.model_dump(mode="json", by_alias=True, exclude={"train", *RESOURCES}))
    changed = _changes("config", "", definitions, current)
    if not changed:
        found[0]["note"] = "the train section changed; the recording keeps only its hash"
    return found + changed


def _data_differences(lineage: dict[str, Any], matrix: Matrix) -> list[dict[str, Any]]:
    found = []
    fingerprint = matrix_fingerprint(matrix.table)
    if lineage.get("data_fingerprint") != fingerprint:
        found.append(
            _difference(
                "data",
                "training matrix fingerprint",
                lineage.get("data_fingerprint", ABSENT),
                fingerprint,
            )
        )
    schemas = source_schema_hashes(matrix)
    recorded: dict[str, str] = lineage.get("source_schemas") or {}
    for name in sorted(set(recorded) | set(schemas)):
        before, after = recorded.get(name, ABSENT), schemas.get(name, ABSENT)
        if before != after:
            found.append(_difference("source_schema", name, before, after))
    return found


def _code_differences(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    commit = git_commit()
    if lineage.get("git_commit", ABSENT) != commit:
        found.append(_difference("code", "git commit", lineage.get("git_commit", ABSENT), commit))
    recorded: dict[str, str] = lineage.get("libraries") or {}
    versions = library_versions()
    for name in sorted(set(recorded) | set(versions)):
        before, after = recorded.get(name, ABSENT), versions.get(name, ABSENT)
        if before != after:
            found.append(_difference("library", name, before, after))
    return found


def _changes(what: str, root: str, recorded: Any, now: Any) -> list[dict[str, Any]]:
    """Each leaf that differs between two JSON values, by path; long lists are cut."""
    found = [
        _difference(what, path, before, after)
        for path, before, after in _walk(root, _plain(recorded), _plain(now))
    ]
    if len(found) > SHOWN:
        cut = {**_difference(what, "...", None, None), "omitted": len(found) - SHOWN}
        found = [*found[:SHOWN], cut]
    return found


def _walk(path: str, recorded: Any, now: Any) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(recorded, dict) and isinstance(now, dict):
        for key in sorted(set(recorded) | set(now), key=str):
            inner = f"{path}.{key}" if path else str(key)
            yield from _walk(inner, recorded.get(key, ABSENT), now.get(key, ABSENT))
    elif isinstance(recorded, list) and isinstance(now, list) and _named(recorded, now):
        # Lists of named things (features) are compared by name, not by position.
        before = {item["name"]: item for item in recorded}
        after = {item["name"]: item for item in now}
        for name in sorted(set(before) | set(after)):
            yield from _walk(f"{path}[{name}]", before.get(name, ABSENT), after.get(name, ABSENT))
    elif recorded != now:
        yield path, recorded, now


def _named(*lists: list[Any]) -> bool:
    items = [item for values in lists for item in values]
    return all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items)


def _difference(what: str, name: str, recorded: Any, now: Any) -> dict[str, Any]:
    return {"what": what, "name": name, "recorded": recorded, "now": now}


def _listed(differences: list[dict[str, Any]]) -> str:
    if not differences:
        return ""
    return "; what differs from the recording: " + "; ".join(describe(d) for d in differences)


def _plain(value: Any) -> Any:
    """The value as the manifest's JSON holds it (tuples as lists, times as text)."""
    return json.loads(json.dumps(value, default=str))


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
