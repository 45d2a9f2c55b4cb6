"""The artefact directory: written once through a staging folder, verified whole when read.

``pipeline.pkl`` (the fitted pipeline), ``manifest.json`` (the artefact format, the mlprod and
library versions it was made with, content hashes of every file, the input schema, lineage)
and the evaluation files. Loading checks, in order: the format (a newer one is refused: this
mlprod cannot know its layout), the hashes, mlprod's major version and the versions of the
libraries that shape predictions; a mismatch is refused with a message that says what to do,
rather than scoring differently in silence.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mlprod.artefact import pickling
from mlprod.artefact.pipeline import FittedPipeline
from mlprod.errors import ArtefactError

# The layout of the directory and manifest. Raise it when a reader of the previous format
# could misread the new one; a missing "format" is format 0 (artefacts made before it).
ARTEFACT_FORMAT = 1
PIPELINE_FILE = "pipeline.pkl"
MANIFEST_FILE = "manifest.json"
# Libraries whose version changes can change predictions: major.minor must match to load.
PREDICTIVE_LIBRARIES = ("lightgbm", "scikit-learn", "numpy")
RECORDED_LIBRARIES = (*PREDICTIVE_LIBRARIES, "mlprod", "pyarrow", "duckdb", "pandas", "sqlglot")


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries an artefact records, and Python's."""
    versions = {}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def save_artefact(
    pipeline: FittedPipeline, directory: Path, extra_files: dict[str, Path] | None = None
) -> dict[str, Any]:
    """Write the artefact into ``directory`` (replaced whole) and return its manifest."""
    if pipeline.input_schema is None:
        raise ArtefactError(
            "cannot save the model: its pipeline has no input schema (InputSchema); training "
            "records one from the feature graph and the matrix"
        )
    pickled = pickling.dumps(pipeline)  # before anything is written: it may refuse a class
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / PIPELINE_FILE).write_bytes(pickled)
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, staging / name)
    files = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
    versions = library_versions()
    manifest = {
        "format": ARTEFACT_FORMAT,
        "name": pipeline.project,
        "model": pipeline.model_name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mlprod_version": versions.get("mlprod", "unknown"),
        "libraries": versions,
        "files": files,
        "content_hash": _combined(files),
        "threshold": pipeline.threshold,
        "features": pipeline.features,
        "input_schema": pipeline.input_schema.to_dict(),
        "lineage": pipeline.lineage,
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """An artefact's manifest, checked for the keys every reader relies on."""
    folder = Path(directory)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ArtefactError(f"artefact directory '{folder}' does not exist")
    if not path.is_file():
        raise ArtefactError(
            f"'{folder}' is not an mlprod artefact: it has no {MANIFEST_FILE}; give the "
            "directory that training wrote (under the store's models/)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtefactError(f"{path} holds a {type(manifest).__name__}, expected an object")
    missing = [key for key in ("name", "content_hash") if key not in manifest]
    if missing:
        raise ArtefactError(f"{path} lacks {', '.join(repr(key) for key in missing)}")
    return manifest


def artefact_format(manifest: dict[str, Any]) -> int:
    """The manifest's format: 0 for artefacts made before formats were recorded."""
    made = manifest.get("format", 0)
    if not isinstance(made, int) or isinstance(made, bool) or made < 0:
        raise ArtefactError(f"the manifest's format is {made!r}; expected a whole number")
    return made


def load_artefact(directory: str | os.PathLike[str]) -> FittedPipeline:
    """Load and verify an artefact: format, content hashes, then mlprod and library versions."""
    folder = Path(directory)
    manifest = read_manifest(folder)
    made_by = manifest.get("mlprod_version", "unknown")
    made = artefact_format(manifest)
    if made > ARTEFACT_FORMAT:
        raise ArtefactError(
            f"artefact {folder} was made by mlprod {made_by} with artefact format {made}; this "
            f"mlprod ({_mlprod_version()}) reads formats up to {ARTEFACT_FORMAT}; upgrade mlprod"
        )
    _check_files(folder, manifest)
    _check_versions(folder, manifest)
    try:
        pipeline = pickling.loads((folder / PIPELINE_FILE).read_bytes())
    except ArtefactError as exc:
        raise ArtefactError(f"artefact {folder}: {exc}") from None
    except Exception as exc:  # a pickle that hashes right but does not unpickle
        raise ArtefactError(
            f"artefact {folder}: {PIPELINE_FILE} cannot be read ({type(exc).__name__}: {exc}); "
            "retrain the model"
        ) from None
    if not isinstance(pipeline, FittedPipeline):
        raise ArtefactError(
            f"artefact {folder}: {PIPELINE_FILE} holds a {type(pipeline).__name__}, expected "
            "an mlprod FittedPipeline"
        )
    return pipeline


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    if not isinstance(manifest.get("files"), dict):
        raise ArtefactError(f"artefact {folder}: its manifest lists no files to check")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ArtefactError(f"artefact {folder}: file {name} is missing")
        if _sha256(path) != expected:
            raise ArtefactError(
                f"artefact {folder}: {name} was modified after the artefact was saved (its "
                f"content hash no longer matches the manifest); refusing to load it"
            )
    if _combined(manifest["files"]) != manifest["content_hash"]:
        raise ArtefactError(f"artefact {folder}: the manifest's content hash does not add up")


def _check_versions(folder: Path, manifest: dict[str, Any]) -> None:
    made, now = str(manifest.get("mlprod_version", "unknown")), _mlprod_version()
    if _major(made) is not None and _major(now) is not None and _major(made) != _major(now):
        raise ArtefactError(
            f"artefact {folder} was made by mlprod {made}, but this is mlprod {now}; a model "
            f"loads only in the major version that made it. Load it with mlprod "
            f"{_major(made)}.x or retrain the model with this one"
        )
    here = library_versions()
    libraries = manifest.get("libraries") or {}
    for library in PREDICTIVE_LIBRARIES:
        recorded, installed = libraries.get(library), here.get(library)
        if recorded and installed and _minor(recorded) != _minor(installed):
            raise ArtefactError(
                f"artefact {folder} was made with {library} {recorded}, but this environment "
                f"has {installed}; predictions could differ, so it is refused. Install "
                f"{library}=={recorded} or retrain the model here"
            )


def _mlprod_version() -> str:
    try:
        return metadata.version("mlprod")
    except metadata.PackageNotFoundError:
        return "unknown"


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _combined(files: dict[str, str]) -> str:
    text = "\n".join(f"{name}:{digest}" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()
