"""Rebuild a registered model from its recorded inputs and compare its predictions.

An artefact's lineage records what the model was made from: the ``as_of`` of its training
matrix, a fingerprint of that matrix and of each source's columns, the hash of the
configuration, the training settings (the ``train`` section), the hash of each source's
schema, the git commit and the library versions; the artefact itself keeps the definitions
(sources, spine, features). Reproducing a model restores that configuration, so an edit of
``mlprod.yaml`` made since does not stand in the way (``current_config`` retrains with today's
instead, to see what the edit changes). It rebuilds the matrix at the recorded ``as_of``,
trains again (same seeds) into a scratch store, so the project's registry, models and tuning
studies are left alone and the hyper-parameter search runs afresh, then scores the test window
with both the recorded pipeline and the rebuilt one. Predictions equal within
:data:`TOLERANCE` mean the model was reproduced; every recorded input that differs now is
listed, whether or not it changed them.
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
from mlprod.data.contracts import ROWS
from mlprod.errors import TrainError, one_of
from mlprod.features.graph import FeatureGraph
from mlprod.features.matrix import Matrix
from mlprod.progress import NO_PROGRESS, ProgressCallback
from mlprod.project.config import ProjectConfig
from mlprod.project.loading import parse_config
from mlprod.train.splits import split_matrix
from mlprod.train.trainer import (
    RESOURCES,
    config_hash,
    git_commit,
    matrix_fingerprint,
    source_fingerprints,
    source_schema_hashes,
    train_pipeline,
)

TOLERANCE = 1e-9
ABSENT = "(absent)"
# At most this many differences of one kind are listed; the rest are counted.
SHOWN = 20


def reproduce(
    today: ProjectConfig,
    store: Path,
    recorded_dir: Path,
    build_matrix: Callable[[ProjectConfig, datetime], Matrix],
    progress: ProgressCallback = NO_PROGRESS,
    *,
    version: str | None = None,
    current_config: bool = False,
) -> dict[str, Any]:
    """Retrain the model in ``recorded_dir`` from its recorded inputs and compare predictions.

    ``today`` is the project's configuration now: it gives the resource settings (engine,
    online store, ...), and with ``current_config`` everything else too. ``build_matrix``
    builds the matrix of a configuration at an ``as_of``.

    Returns the version, whether the test-window predictions are reproduced, their largest
    absolute difference, the number of test rows (and how many of them differ), which
    configuration was used (``config``: ``used`` is ``recorded`` or ``current``, with the
    hashes), each recorded input that differs now (``what``: data, config, code, library or
    source_schema, with its ``name`` and the ``recorded`` and ``now`` values) and the seconds
    it took. Raises TrainError only when the model cannot be rebuilt or compared at all.
    """
    started = time.perf_counter()
    lineage: dict[str, Any] = read_manifest(recorded_dir).get("lineage") or {}
    if not lineage.get("as_of"):
        raise TrainError(
            f"the artefact {recorded_dir} records no as_of in its lineage, so its training "
            "matrix cannot be rebuilt; only models trained by this version of mlprod can be "
            "reproduced"
        )
    recorded = load_artefact(recorded_dir)
    if current_config:
        config, differences = _current(lineage, today, recorded.definitions)
        used = {"used": "current", "train": "current"}
    else:
        config, differences, train_from = _recorded(lineage, today, recorded.definitions, version)
        used = {"used": "recorded", "train": train_from}
    used |= {
        "hash": config_hash(config),
        "recorded_hash": lineage.get("config_hash", ABSENT),
        "today_hash": config_hash(today),
    }
    train = config.train
    assert train is not None  # both configurations above have a train section
    matrix = build_matrix(config, datetime.fromisoformat(lineage["as_of"]))
    differences += [*_data_differences(lineage, matrix), *_code_differences(lineage)]
    missing = sorted(set(recorded.features) - set(matrix.table.column_names))
    if missing:
        raise TrainError(
            f"the recorded model uses features the configuration no longer defines: "
            f"{one_of(missing)}; restore their definitions to reproduce it" + _listed(differences)
        )
    graph = FeatureGraph.build(config)
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
        "config": used,
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


def _current(
    lineage: dict[str, Any], today: ProjectConfig, definitions: dict[str, Any]
) -> tuple[ProjectConfig, list[dict[str, Any]]]:
    """Today's configuration, and how it differs from the recorded one."""
    if today.train is None:
        raise TrainError(
            "mlprod.yaml has no 'train' section; reproducing a model trains it again, so add "
            "the train section it was trained with"
        )
    return today, _config_differences(lineage, today, definitions)


def _recorded(
    lineage: dict[str, Any],
    today: ProjectConfig,
    definitions: dict[str, Any],
    version: str | None,
) -> tuple[ProjectConfig, list[dict[str, Any]], str]:
    """The configuration the model was trained with: its definitions and training settings
    as recorded, with today's resource settings (which do not change what is computed).

    Models trained before the training settings were recorded get today's ``train`` section;
    the config hash then says whether it is the same, and the third value is ``current``.
    """
    train = lineage.get("train")
    train_from = "recorded"
    if train is None:
        if today.train is None:
            raise TrainError(
                "this version records no training settings (it was trained by an earlier "
                "mlprod) and mlprod.yaml has no 'train' section; add the train section it was "
                "trained with"
            )
        train, train_from = today.train.model_dump(mode="json", by_alias=True), "current"
    resources = today.model_dump(mode="json", by_alias=True, include=set(RESOURCES))
    what = f"model version {version}" if version else "the recorded model"
    config = parse_config(
        {**definitions, "train": train, **resources}, file=f"the configuration of {what}"
    )
    restored, hashed = config_hash(config), lineage.get("config_hash", ABSENT)
    if restored == hashed:
        return config, [], train_from
    found = _difference("config", "hash", hashed, restored)
    found["note"] = (
        "this version records no training settings; today's train section was used"
        if train_from == "current"
        else "the recorded configuration could not be restored exactly"
    )
    return config, [found], train_from


def _config_differences(
    lineage: dict[str, Any], config: ProjectConfig, definitions: dict[str, Any]
) -> list[dict[str, Any]]:
    """The config hash, then each changed setting (the train section's only where the
    version recorded it; older versions keep only its hash)."""
    now = config_hash(config)
    if lineage.get("config_hash") == now:
        return []
    found = [_difference("config", "hash", lineage.get("config_hash", ABSENT), now)]
    current = _plain(config.model_dump(mode="json", by_alias=True, exclude={"train", *RESOURCES}))
    changed = _changes("config", "", definitions, current)
    recorded_train = lineage.get("train")
    if recorded_train is not None:
        today_train = config.train.model_dump(mode="json", by_alias=True) if config.train else None
        changed += _changes("config", "train", recorded_train, today_train)
    elif not changed:
        found[0]["note"] = "the train section changed; the recording keeps only its hash"
    return found + changed


def _data_differences(lineage: dict[str, Any], matrix: Matrix) -> list[dict[str, Any]]:
    """The matrix fingerprint and, when it differs, the sources whose data differs (rows
    added after ``as_of`` change a source but not the matrix, so they are only named then);
    then each changed source schema."""
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
        recorded_sources = lineage.get("sources")
        if recorded_sources is None:
            found[-1]["note"] = "this version records no fingerprint per source"
        else:
            found += _source_differences(recorded_sources, source_fingerprints(matrix))
    schemas = source_schema_hashes(matrix)
    recorded: dict[str, str] = lineage.get("source_schemas") or {}
    for name in sorted(set(recorded) | set(schemas)):
        before, after = recorded.get(name, ABSENT), schemas.get(name, ABSENT)
        if before != after:
            found.append(_difference("source_schema", name, before, after))
    return found


def _source_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """One difference per source whose rows or column fingerprints differ, naming the
    columns (``columns``) and the row counts."""
    found = []
    for name in sorted(set(recorded) | set(now)):
        before, after = recorded.get(name) or {}, now.get(name) or {}
        before_columns, after_columns = before.get("columns") or {}, after.get("columns") or {}
        columns = sorted(
            column
            for column in (set(before_columns) | set(after_columns)) - {ROWS}
            if before_columns.get(column) != after_columns.get(column)
        )
        rows_differ = before_columns.get(ROWS) != after_columns.get(ROWS)
        if not columns and not rows_differ and before.get("rows") == after.get("rows"):
            continue
        difference = _difference(
            "data", f"source {name}", _rows(before.get("rows")), _rows(after.get("rows"))
        )
        if columns:
            noun = "column" if len(columns) == 1 else "columns"
            difference["note"] = f"values differ in {noun} {one_of(columns, SHOWN)}"
        else:
            difference["note"] = "each column holds the same values, in other rows"
        difference["columns"] = columns
        found.append(difference)
    return found


def _rows(count: Any) -> str:
    return f"{count:,} rows" if isinstance(count, int) else ABSENT


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
    elif isinstance(recorded, list) and isinstance(now, list) and _records(recorded, now):
        # Lists of unnamed records (models) of one length are compared by position.
        for index, (before, after) in enumerate(zip(recorded, now, strict=True)):
            yield from _walk(f"{path}[{index}]", before, after)
    elif recorded != now:
        yield path, recorded, now


def _named(*lists: list[Any]) -> bool:
    items = [item for values in lists for item in values]
    return all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items)


def _records(recorded: list[Any], now: list[Any]) -> bool:
    return len(recorded) == len(now) and all(isinstance(i, dict) for i in [*recorded, *now])


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
