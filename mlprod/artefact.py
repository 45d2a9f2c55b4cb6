"""The one versioned model artefact: saved once, loaded everywhere, refused when tampered with.

A directory with ``pipeline.pkl`` (the fitted pipeline), ``manifest.json`` (content hashes of
every file, the library versions it was made with, lineage) and the evaluation files. Loading
checks the hashes and the versions of the libraries that shape predictions, and refuses a
mismatch with a message that says what to do, rather than scoring differently in silence.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import shutil
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mlprod.errors import MlprodError
from mlprod.train.pipeline import FittedPipeline

PIPELINE_FILE = "pipeline.pkl"
MANIFEST_FILE = "manifest.json"
# Libraries whose version changes can change predictions: major.minor must match to load.
PREDICTIVE_LIBRARIES = ("lightgbm", "scikit-learn", "numpy")
RECORDED_LIBRARIES = (*PREDICTIVE_LIBRARIES, "mlprod", "pyarrow", "duckdb", "pandas", "sqlglot")


class ArtefactError(MlprodError):
    """A model artefact is missing, incomplete, modified, or made with other libraries."""


def library_versions() -> dict[str, str]:
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
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with (staging / PIPELINE_FILE).open("wb") as handle:
        pickle.dump(pipeline, handle, protocol=5)
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, staging / name)
    files = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
    manifest = {
        "name": pipeline.project,
        "model": pipeline.model_name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mlprod_version": library_versions().get("mlprod", "unknown"),
        "libraries": library_versions(),
        "files": files,
        "content_hash": _combined(files),
        "threshold": pipeline.threshold,
        "features": pipeline.features,
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


def load_artefact(directory: str | os.PathLike[str]) -> FittedPipeline:
    """Load and verify an artefact: content hashes first, then library versions."""
    folder = Path(directory)
    manifest = read_manifest(folder)
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
    here = library_versions()
    for library in PREDICTIVE_LIBRARIES:
        made, now = manifest["libraries"].get(library), here.get(library)
        if made and now and _minor(made) != _minor(now):
            raise ArtefactError(
                f"artefact {folder} was made with {library} {made}, but this environment has "
                f"{now}; predictions could differ, so it is refused. Install {library}=={made} "
                "or retrain the model here"
            )
    with (folder / PIPELINE_FILE).open("rb") as handle:
        pipeline: FittedPipeline = pickle.load(handle)
    return pipeline


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
