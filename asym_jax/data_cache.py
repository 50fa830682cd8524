"""On-disk cache of prepared datasets: an .npz of arrays plus a JSON manifest with its sha256.

An entry is named `<dataset>-<digest>.npz` and `<dataset>-<digest>.json`, where the digest hashes
the key (dataset spec, seed, resize mode, source location). Both files are written to a temporary
name and renamed into place, the manifest last, so a reader sees either a complete entry or none.
A reader recomputes the sha256 of the .npz and rejects the entry when it differs from the
manifest, so a truncated or damaged file is prepared again instead of being used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import zipfile

import numpy as np
from absl import logging

CACHE_ENV = "ASYM_JAX_CACHE"


def default_cache_dir() -> pathlib.Path:
    """Return `$ASYM_JAX_CACHE`, or `~/.cache/asym_jax` when it is unset."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or "~/.cache/asym_jax").expanduser()


def entry_paths(cache_dir: pathlib.Path, name: str, key: dict) -> tuple[pathlib.Path, ...]:
    """Return the (.npz, .json) paths of the cache entry for `key`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{name}-{digest}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def file_sha256(path: pathlib.Path) -> str:
    """Return the hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read(cache_dir: pathlib.Path, name: str, key: dict) -> dict[str, np.ndarray] | None:
    """Return the cached arrays of `key`, or None when the entry is absent or unusable.

    An unusable entry (unreadable manifest, different key, checksum mismatch, bad archive) is
    logged as a warning, and the caller prepares the dataset again.
    """
    npz_path, manifest_path = entry_paths(cache_dir, name, key)
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") != key:
            raise ValueError("the manifest key differs from the requested key")
        if file_sha256(npz_path) != manifest.get("sha256"):
            raise ValueError("sha256 mismatch")
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logging.warning(
            "Cache entry %s is invalid (%s), so %s is prepared again.", npz_path, error, name
        )
        return None
    logging.info("Loaded %s from cache %s.", name, npz_path)
    return arrays


def _write_atomic(path: pathlib.Path, write) -> None:
    """Write through `write(file)` into a temporary file, then rename it onto `path`."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        # mkstemp creates the file as 0600. An ordinary new file gets 0666 minus the umask.
        os.chmod(temp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def write(cache_dir: pathlib.Path, name: str, key: dict, arrays: dict[str, np.ndarray]) -> None:
    """Store `arrays` as the cache entry of `key`: the .npz first, then its manifest.

    Concurrent writers of the same entry each rename complete files into place. If their .npz
    files differ byte for byte, a reader may find a manifest that does not match the .npz, and
    then it prepares the dataset again.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    npz_path, manifest_path = entry_paths(cache_dir, name, key)
    _write_atomic(npz_path, lambda f: np.savez(f, **arrays))
    manifest = {
        "key": key,
        "sha256": file_sha256(npz_path),
        "npz": npz_path.name,
        "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()},
    }
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _write_atomic(manifest_path, lambda f: f.write(text))
    logging.info("Cached %s in %s.", name, npz_path)
