"""The model registry as ``mlprod models list|show|promote|rollback`` sees it.

Versions are chosen with MLflow aliases (``models:/<name>@champion``), never stages. Promoting a
version to ``champion`` records the champion it replaces in the registered model's tag
``mlprod.champion_history`` (a JSON list of versions, oldest first), so ``rollback`` can move
the alias back one step at a time. Alias moves hold the registry's lock
(:mod:`mlprod.registry._lock`) from reading the aliases to writing the history, so concurrent
moves are applied one after the other and the history stays exact.

Every command first ends, as KILLED, the runs whose process was killed before ending them
(:mod:`mlprod.registry._orphans`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlprod.errors import RegistryError, did_you_mean, one_of
from mlprod.registry._cache import cached_artefact, is_local
from mlprod.registry._lock import registry_lock
from mlprod.registry._orphans import end_orphaned_runs
from mlprod.registry._store import (
    ARTEFACT_KEY,
    client_for,
    error_code,
    quiet_mlflow,
    store_is_missing,
)
from mlprod.registry._store import mlflow_errors as _mlflow  # the one MLflow translation

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

CHAMPION = "champion"
HISTORY_TAG = "mlprod.champion_history"
TEST_FINGERPRINT_TAG = "mlprod.test_fingerprint"  # on each version: which test rows it saw
CONTENT_HASH_TAG = "mlprod.content_hash"  # on each version: its artefact's content hash
HISTORY_LIMIT = 100
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


def list_models(uri: str) -> list[dict[str, Any]]:
    """Every registered model, by name: its latest version and its aliases."""
    if store_is_missing(uri):
        return []
    with _mlflow(uri, "list the registered models"):
        client = client_for(uri)
        end_orphaned_runs(client)
        return [
            {
                "name": model.name,
                "latest_version": max((int(v.version) for v in model.latest_versions), default=0),
                "aliases": _aliases(model),
            }
            for model in sorted(_registered_models(client), key=lambda m: m.name)
        ]


def show_model(uri: str, name: str) -> dict[str, Any]:
    """One registered model: its aliases, champion history and versions (oldest first), each
    with its run, creation time, status, aliases and the run's metrics (``test_auc``, ...)."""
    with _mlflow(uri, f"show the model '{name}'"):
        client = _client(uri, name)
        model = _registered_model(client, uri, name)
        aliases = _aliases(model)
        versions = []
        looks: dict[str, int] = {}  # test fingerprint -> versions tested on it so far
        for version in sorted(_versions(client, name), key=lambda v: int(v.version)):
            number = int(version.version)
            fingerprint = (version.tags or {}).get(TEST_FINGERPRINT_TAG)
            versions.append(
                {
                    "version": number,
                    "run_id": version.run_id,
                    "created": _timestamp(version.creation_timestamp),
                    "status": version.status,
                    "aliases": sorted(a for a, v in aliases.items() if v == number),
                    "content_hash": (version.tags or {}).get(CONTENT_HASH_TAG),
                    "test_fingerprint": fingerprint,
                    "test_set_used_before": looks.get(fingerprint, 0) if fingerprint else None,
                    "metrics": _run_metrics(client, version.run_id),
                }
            )
            if fingerprint:
                looks[fingerprint] = looks.get(fingerprint, 0) + 1
        return {
            "name": model.name,
            "description": model.description or "",
            "aliases": aliases,
            "champion_history": _history(model),
            "versions": versions,
        }


def test_set_looks(uri: str, name: str, fingerprint: str) -> int:
    """How many versions of ``name`` were tested on the test rows with ``fingerprint``
    (0 for a model or a store that does not exist yet): each look at a test set makes the
    next score on it less of a fresh estimate."""
    if store_is_missing(uri):
        return 0
    with _mlflow(uri, f"count the looks at the test set of '{name}'"):
        client = client_for(uri)
        try:
            client.get_registered_model(name)
        except Exception as exc:
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
            return 0
        return sum(
            (v.tags or {}).get(TEST_FINGERPRINT_TAG) == fingerprint for v in _versions(client, name)
        )


def promote(uri: str, name: str, version: int, alias: str = CHAMPION) -> dict[str, Any]:
    """Point ``alias`` at ``version``. For ``champion``, remember the champion it replaces.

    Returns the name, alias, version and the version the alias held before (or None).
    """
    _check_alias(alias)
    with _mlflow(uri, f"promote version {version} of '{name}'"):
        client = _client(uri, name)
        with registry_lock(uri):
            return _promote(client, uri, name, version, alias)


def _promote(client: MlflowClient, uri: str, name: str, version: int, alias: str) -> dict[str, Any]:
    """The alias move itself: read, record the replaced champion, move (under the lock)."""
    model = _registered_model(client, uri, name)
    _check_version(client, name, version)
    previous = _aliases(model).get(alias)
    if alias == CHAMPION and previous is not None and previous != version:
        history = [*_history(model), previous][-HISTORY_LIMIT:]
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    client.set_registered_model_alias(name, alias, str(version))
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def rollback(uri: str, name: str) -> dict[str, Any]:
    """Move ``champion`` back to the champion before it (versions since deleted are skipped).

    Returns the name, the alias, the version now champion and the one it replaced.
    """
    with _mlflow(uri, f"roll back '{name}'"):
        client = _client(uri, name)
        with registry_lock(uri):
            return _rollback(client, uri, name)


def _rollback(client: MlflowClient, uri: str, name: str) -> dict[str, Any]:
    """The move back itself (under the lock)."""
    model = _registered_model(client, uri, name)
    current = _aliases(model).get(CHAMPION)
    if current is None:
        raise RegistryError(
            f"cannot roll back model '{name}': it has no champion; "
            f"promote a version first with 'mlprod models promote'"
        )
    history = _history(model)
    existing = {int(v.version) for v in _versions(client, name)}
    while history and (history[-1] == current or history[-1] not in existing):
        history.pop()
    if not history:
        raise RegistryError(
            f"cannot roll back model '{name}': version {current} is the champion and no "
            "earlier champion is on record; promote the version you want instead"
        )
    target = history.pop()
    client.set_registered_model_alias(name, CHAMPION, str(target))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return {"name": name, "alias": CHAMPION, "version": target, "previous": current}


def resolve(uri: str, name: str, alias_or_version: str | int, dst: Path | None = None) -> Path:
    """The local artefact directory of a version, given as a number, an alias or 'latest'.

    From a local artifact store (the SQLite default) this is the stored directory itself, to
    be read and never changed; from a remote one (an MLflow server) it is the copy in the local
    cache (see :mod:`mlprod.registry._cache`), downloaded the first time. With ``dst`` it is
    always downloaded, into ``dst``.
    """
    return locate(uri, name, alias_or_version, dst).path


def _artefact_folder(
    client: MlflowClient, uri: str, version: ModelVersion, dst: Path | None
) -> Path:
    """Where the artefact of a registered version can be read: see :func:`resolve`."""
    what = f"model '{version.name}' version {version.version}"
    root = client.get_model_version_download_uri(version.name, str(version.version)).rstrip("/")
    if dst is not None or is_local(root):
        return _download(uri, root, what, dst)
    expected = (version.tags or {}).get(CONTENT_HASH_TAG)
    return cached_artefact(expected, lambda scratch: _download(uri, root, what, scratch), what, uri)


def _download(uri: str, root: str, what: str, dst: Path | None) -> Path:
    """The artefact folder among a version's model artifacts (at ``root``), downloaded into
    ``dst``; without ``dst`` a local store's own folder."""
    import tempfile

    import mlflow.artifacts
    import yaml

    with quiet_mlflow(), tempfile.TemporaryDirectory(prefix="mlprod-mlmodel-") as scratch:
        mlmodel = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/MLmodel", dst_path=scratch, tracking_uri=uri
        )
        flavor = yaml.safe_load(Path(mlmodel).read_text()).get("flavors", {})
        artifacts = flavor.get("python_function", {}).get("artifacts") or {}
        if ARTEFACT_KEY not in artifacts:
            raise RegistryError(
                f"{what} was not logged by mlprod: its pyfunc model has no '{ARTEFACT_KEY}' "
                "artifact"
            )
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/{artifacts[ARTEFACT_KEY]['path']}",
            dst_path=None if dst is None else str(dst),
            tracking_uri=uri,
        )
    return Path(path)


# --- checks that make the messages -------------------------------------------------------------


def _client(uri: str, name: str) -> MlflowClient:
    """A client for a store that exists (MLflow would create a missing SQLite store), once
    the runs orphaned by killed processes are ended."""
    if store_is_missing(uri):
        _no_models(uri, name)
    client = client_for(uri)
    end_orphaned_runs(client)
    return client


def _registered_model(client: MlflowClient, uri: str, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except Exception as exc:
        if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = [m.name for m in _registered_models(client)]
    if not names:
        _no_models(uri, name)
    raise RegistryError(
        f"unknown model '{name}'{did_you_mean(name, names)}; registered models: {one_of(names)}"
    )


def _no_models(uri: str, name: str) -> NoReturn:
    raise RegistryError(
        f"unknown model '{name}': no model is registered in {uri} yet; "
        "train one, or point the project at the tracking store that has it"
    )


def _check_version(client: MlflowClient, name: str, version: int) -> None:
    existing = sorted(int(v.version) for v in _versions(client, name))
    if version not in existing:
        raise RegistryError(
            f"model '{name}' has no version {version}; its versions are {_numbers(existing)}"
        )


def _version_number(client: MlflowClient, model: RegisteredModel, spec: str | int) -> int:
    name, text = model.name, str(spec).strip()
    if text.isdigit():
        _check_version(client, name, int(text))
        return int(text)
    existing = sorted(int(v.version) for v in _versions(client, name))
    if text.lower() == "latest":
        if not existing:
            raise RegistryError(f"model '{name}' has no versions yet")
        return existing[-1]
    aliases = _aliases(model)
    if text not in aliases:
        known = f"its aliases are {one_of(aliases)}" if aliases else "it has no aliases yet"
        raise RegistryError(
            f"model '{name}' has no alias '{text}'{did_you_mean(text, aliases)}; {known}; "
            f"give a version ({_numbers(existing)}), 'latest', or set the alias with "
            "'mlprod models promote'"
        )
    return aliases[text]


def _check_alias(alias: str) -> None:
    if not _ALIAS.match(alias):
        raise RegistryError(
            f"invalid alias '{alias}': use a simple name of letters, digits and '_' that starts "
            f"with a letter (at most 64 characters), like 'champion' or 'challenger'"
        )
    if _RESERVED_ALIAS.match(alias):
        raise RegistryError(
            f"invalid alias '{alias}': MLflow reserves 'latest' and 'v<number>'; "
            "use a name like 'champion' or 'challenger'"
        )


# --- reading the registry ----------------------------------------------------------------------


def _registered_models(client: MlflowClient) -> list[RegisteredModel]:
    found: list[RegisteredModel] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quoted = name.replace("'", "\\'")
    found: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(
            f"name = '{quoted}'", max_results=10_000, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


def _aliases(model: RegisteredModel) -> dict[str, int]:
    return {alias: int(version) for alias, version in sorted((model.aliases or {}).items())}


def _history(model: RegisteredModel) -> list[int]:
    raw = (model.tags or {}).get(HISTORY_TAG)
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    return [int(v) for v in history if isinstance(v, int | str) and str(v).isdigit()]


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(sorted(client.get_run(run_id).data.metrics.items()))
    except Exception as exc:  # the run was deleted
        if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {}


def _timestamp(milliseconds: int | None) -> str | None:
    if milliseconds is None:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC).isoformat(timespec="seconds")


def _numbers(versions: list[int]) -> str:
    if not versions:
        return "none yet"
    shown = ", ".join(str(v) for v in versions[-20:])
    return shown if len(versions) <= 20 else f"..., {shown} (the last 20 of {len(versions)})"


@dataclass(frozen=True)
class LocatedVersion:
    """A registered version, found by number, alias or 'latest', with its artefact folder."""

    name: str
    version: int
    run_id: str
    path: Path


def locate(
    uri: str, name: str, alias_or_version: str | int, dst: Path | None = None
) -> LocatedVersion:
    """Like :func:`resolve`, with the version number and training run the spec stands for."""
    with _mlflow(uri, f"find '{name}' {alias_or_version}"):
        client = _client(uri, name)
        number = _version_number(client, _registered_model(client, uri, name), alias_or_version)
        version = client.get_model_version(name, str(number))
        path = _artefact_folder(client, uri, version, dst)
    return LocatedVersion(name, number, version.run_id or "", path)
