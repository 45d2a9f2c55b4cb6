"""Local copies of the artefacts kept on a remote artifact store (an MLflow server, S3, ...).

Scoring reads an artefact as a folder on disk. A version registered in a local store is read
where it is; one on a remote store is downloaded once into this cache and read from there by
every later command, server and worker of the machine. Entries are named by the artefact's
content hash: a version's artefact never changes, two versions (or two servers) with the same
artefact share one entry, and a registry reset that reuses a version number can never be
answered with another model's copy. A download goes to a scratch folder inside the cache and is
renamed into place whole, so an entry is complete or absent, also with several processes
downloading at once. Loading (:func:`mlprod.artefact.load_artefact`) checks the copy's files
against its manifest's hashes as it would the original.

The cache is ``$MLPROD_ARTEFACT_CACHE``, else ``$XDG_CACHE_HOME/mlprod/artefacts``, else
``~/.cache/mlprod/artefacts``; entries are a few megabytes and are never removed by mlprod.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from mlprod.artefact import read_manifest
from mlprod.errors import ArtefactError, RegistryError

CACHE_VARIABLE = "MLPROD_ARTEFACT_CACHE"
_MANIFEST = "manifest.json"


def cache_root() -> Path:
    """The folder that holds the downloaded artefacts, one folder per content hash."""
    if configured := os.environ.get(CACHE_VARIABLE):
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "mlprod" / "artefacts"


def is_local(artifact_uri: str) -> bool:
    """Whether an artifact URI is a folder of this machine (read in place, never copied)."""
    scheme = urlparse(artifact_uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a Windows drive letter is no scheme


def cached_artefact(
    expected_hash: str | None, download: Callable[[Path], Path], what: str, source: str
) -> Path:
    """The cached copy of an artefact: the entry for ``expected_hash`` when there is one,
    else what ``download`` (given a scratch folder, returning the artefact folder in it)
    fetches, checked to be the artefact with that hash and moved into the cache.

    ``what`` names the version and ``source`` the store, for the messages.
    """
    root = cache_root()
    if expected_hash and _holds(root / expected_hash, expected_hash):
        return root / expected_hash
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as exc:
        raise RegistryError(
            f"cannot keep the artefact of {what} in the cache folder {root} ({exc.strerror}); "
            f"set {CACHE_VARIABLE} to a folder this user can write"
        ) from None
    try:
        downloaded = download(scratch)
        try:
            found = str(read_manifest(downloaded)["content_hash"])
        except ArtefactError as exc:
            raise RegistryError(f"the artefact of {what} at {source} is unusable: {exc}") from None
        if expected_hash and found != expected_hash:
            raise RegistryError(
                f"the artefact of {what} at {source} is not the one registered: its content "
                f"hash is {found[:12]}..., the version's tag says {expected_hash[:12]}...; "
                "it was replaced on the artifact store after registration"
            )
        target = root / found
        if not _holds(target, found):
            shutil.rmtree(target, ignore_errors=True)  # a damaged entry: replaced whole
            try:
                os.replace(downloaded, target)
            except OSError:  # another process put the same artefact there meanwhile
                if not _holds(target, found):
                    raise
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _holds(entry: Path, content_hash: str) -> bool:
    """Whether a cache entry is the artefact with ``content_hash`` (by its manifest; its
    files are checked against the manifest when it is loaded)."""
    if not (entry / _MANIFEST).is_file():
        return False
    try:
        return bool(read_manifest(entry)["content_hash"] == content_hash)
    except ArtefactError:
        return False
