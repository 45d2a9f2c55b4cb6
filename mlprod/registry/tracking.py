"""Record a training run in MLflow and register its artefact as a new model version.

One run holds what explains a model: its parameters (flattened and cut to MLflow's limits), its
metrics, the tags that make it reproducible (config hash, data fingerprint, git commit, library
versions, seeds; the caller chooses them), the HTML report and ``metrics.json``; it is also
tagged with its process, so that a run whose process was killed is ended by the next command
(:mod:`mlprod.registry._orphans`). The artefact
directory itself is logged as a pyfunc model (see :mod:`mlprod.registry.pyfunc`) and registered
as the next version of the model's name.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlprod.artefact import read_manifest
from mlprod.errors import ArtefactError, RegistryError
from mlprod.registry._orphans import end_orphaned_runs, process_tags
from mlprod.registry._store import (
    ARTEFACT_KEY,
    DEFAULT_LOADER,
    MODEL_NAME_IN_RUN,
    client_for,
    error_code,
    mlflow_errors,
    quiet_mlflow,
    sqlite_path,
    using_tracking_uri,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

# MLflow's limits (mlflow.utils.validation), so a long value is cut rather than refused.
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
_KEY_CHARACTERS = re.compile(r"[^\w./\- :]")
_VERSION = re.compile(r"^\d+(\.\d+)*[\w.+!-]*$")  # pinned; anything else ("unknown") is not
# Import names that differ from the distribution to install.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
# MLflow's log lines that say nothing about an mlprod model: the pickle is a reference to
# ArtefactModel, and a model logged without an input example has no signature by choice.
_NOISE = (
    "Passing a Python object as `python_model`",
    "Failed to infer model signature",
)
# A tracking server registers a version asynchronously, and MLflow says that it waits for it.
_REGISTRY_LOGGER = "mlflow.store.model_registry.abstract_store"
_REGISTRY_NOISE = ("Waiting up to",)


# Run tags that each model version carries too (the test fingerprint: the registry counts
# how many versions were tested on the same rows).
_VERSION_TAGS = ("mlprod.artefact_name", "mlprod.content_hash", "mlprod.test_fingerprint")


@dataclass(frozen=True)
class RunRecord:
    """The MLflow run of a training and the model version it registered."""

    run_id: str
    model_version: int


def tracking_uri_for(store: Path, configured: str | None) -> str:
    """The MLflow tracking URI of a project.

    The configured URI (mlprod.yaml) wins, then ``MLFLOW_TRACKING_URI``; by default a SQLite
    database inside the project store, ``sqlite:///<store>/mlflow.db``, whose artifacts go to
    ``<store>/mlruns``.
    """
    if configured:
        return configured
    if from_environment := os.environ.get("MLFLOW_TRACKING_URI"):
        return from_environment
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def log_training_run(
    uri: str,
    experiment: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artefact_dir: Path,
    report: Path | None,
    model_name: str,
    *,
    loader: str = DEFAULT_LOADER,
    pip_requirements: Sequence[str] | None = None,
    input_example: pd.DataFrame | None = None,
) -> RunRecord:
    """Log one training run, log its artefact as a pyfunc model and register a new version.

    ``report`` defaults to the artefact's own ``report.html``. ``pip_requirements`` default to
    MLflow, mlprod and the libraries pinned in the artefact's manifest (nothing is inferred).
    ``input_example`` (a few rows of model input) gives the model an input signature, which
    MLflow then enforces on every prediction: give columns that may be missing as floats, as
    MLflow refuses floats (or NaN) in a column it saw as integers. Without it the model has none.
    """
    try:
        manifest = read_manifest(artefact_dir)
    except ArtefactError as exc:
        raise RegistryError(str(exc)) from None
    requirements = list(pip_requirements or requirements_for(manifest))
    report = report or _existing(artefact_dir / "report.html")
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    client = client_for(uri)
    with mlflow_errors(uri, f"log the training run of '{model_name}'"):
        end_orphaned_runs(client)
        experiment_id = _experiment_id(client, uri, experiment)
        with (
            using_tracking_uri(uri),
            quiet_mlflow("mlflow.pyfunc", _NOISE),
            quiet_mlflow(_REGISTRY_LOGGER, _REGISTRY_NOISE),
        ):
            return _log_and_register(
                client,
                experiment_id,
                params,
                metrics,
                {
                    **tags,
                    "mlprod.artefact_name": str(manifest["name"]),
                    "mlprod.content_hash": str(manifest["content_hash"]),
                },
                artefact_dir,
                [path for path in (report, _existing(artefact_dir / "metrics.json")) if path],
                model_name,
                loader,
                requirements,
                input_example,
            )


def requirements_for(manifest: Mapping[str, Any]) -> list[str]:
    """Pinned requirements of a model: MLflow, mlprod and the manifest's libraries (by their
    distribution names; a version that is not one, like "unknown", leaves its name unpinned)."""
    from mlflow.version import VERSION

    pins = {"mlflow": VERSION, "mlprod": _mlprod_version(manifest)}
    libraries = manifest.get("libraries") or {}
    if isinstance(libraries, Mapping):
        for library, version in libraries.items():
            name = str(library)
            if isinstance(version, str) and version and name.lower() != "python":
                pins.setdefault(_DISTRIBUTIONS.get(name, name), version)
    return [
        f"{name}=={version}" if _VERSION.match(version) else name
        for name, version in sorted(pins.items())
    ]


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested parameters as MLflow parameters: dotted keys, values as text, cut to the limits.

    Lists become JSON; keys lose the characters MLflow refuses.
    """
    flat: dict[str, str] = {}
    for key, value in _flatten(params, ""):
        flat[_key(key)] = _cut(_as_text(value), MAX_PARAM_LENGTH)
    return flat


def _log_and_register(
    client: MlflowClient,
    experiment_id: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artefact_dir: Path,
    artifacts: list[Path],
    model_name: str,
    loader: str,
    requirements: list[str],
    input_example: pd.DataFrame | None,
) -> RunRecord:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.models import infer_signature

    from mlprod.registry.pyfunc import ArtefactModel

    now = int(time.time() * 1000)
    signature = None
    if input_example is not None:
        with warnings.catch_warnings():
            # MLflow's hint that integer columns cannot hold missing values; under a strict
            # warnings filter its inference would fail quietly and fall back to "any" types.
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
            signature = infer_signature(input_example)
    run_name = str(tags["mlprod.artefact_name"])
    # Tagged with its process, so a later command can end the run if the process is killed.
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=process_tags()
    ) as run:
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(_key(k), float(v), now, 0) for k, v in sorted(metrics.items())],
            params=[Param(k, v) for k, v in sorted(flatten_params(params).items())],
            tags=[RunTag(_key(k), _cut(str(v), MAX_TAG_LENGTH)) for k, v in sorted(tags.items())],
        )
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        with warnings.catch_warnings():
            # A signature without an example is deliberate: an example would make MLflow load
            # the artefact (and its loader) at logging time, to predict on it.
            warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
            logged = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=ArtefactModel(),
                artifacts={ARTEFACT_KEY: str(artefact_dir)},
                model_config={"loader": loader},
                pip_requirements=requirements,
                signature=signature,
            )
        version = _register(client, model_name, logged.model_uri, run_id, logged.model_id, tags)
    return RunRecord(run_id=run_id, model_version=version)


def _register(
    client: MlflowClient,
    name: str,
    source: str,
    run_id: str,
    model_id: str | None,
    tags: Mapping[str, str],
) -> int:
    """Add a version to the registered model ``name`` (made on first use), like
    ``mlflow.register_model`` but through an explicit client and without printing."""
    try:
        client.create_registered_model(name)
    except Exception as exc:
        if error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags={key: tags[key] for key in _VERSION_TAGS if key in tags},
        model_id=model_id,
    )
    if model_id:
        link = [{"name": name, "version": str(version.version)}]
        client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(link)})
    return int(version.version)


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """The id of the active experiment ``name``, created on first use (beside a SQLite store,
    its artifacts go to ``mlruns/`` next to the database, never to the working directory)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise RegistryError(
                f"experiment '{name}' was deleted in MLflow at {uri}; restore it with "
                f"'mlflow experiments restore --experiment-id {found.experiment_id}' "
                "or configure another experiment name"
            )
        return str(found.experiment_id)
    database = sqlite_path(uri)
    location = None if database is None else (database.resolve().parent / "mlruns").as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception as exc:  # made meanwhile by another process
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(client.get_experiment_by_name(name).experiment_id)  # type: ignore[union-attr]


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return json.dumps(list(value), default=str)
    return str(value)


def _key(key: str) -> str:
    return _KEY_CHARACTERS.sub("_", key)[:MAX_KEY_LENGTH]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _mlprod_version(manifest: Mapping[str, Any]) -> str:
    version = manifest.get("mlprod_version")
    if isinstance(version, str) and version:
        return version
    return metadata.version("mlprod")
