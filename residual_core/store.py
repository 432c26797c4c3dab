"""Disk cache primitives: content keys, atomic writes, manifests verified on read.

Nothing here pickles: arrays are ``.npy`` (opened memory-mapped) and metadata is JSON. Every file is
written to a temporary name in the same folder and renamed into place, and the manifest is written
last, so a reader never sees a half-written cache and an interrupted run leaves only complete shards.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 3
MANIFEST = "manifest.json"


class CacheError(RuntimeError):
    """A cache on disk cannot be used: missing, from other inputs or versions, or corrupted."""


def cache_key(inputs: dict[str, Any]) -> str:
    """Short content key of every input that determines a cache (canonical JSON, sha256)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))  # no default=: unserialisable is a bug
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def open_npy_writer(path: Path, dtype: str, shape: tuple[int, ...]) -> tuple[np.memmap, Path]:
    """A memory-mapped .npy at a temporary name; call ``commit_npy`` when filled."""
    tmp = path.with_name(f".{path.name}.partial")
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape), tmp


def commit_npy(array: np.memmap, tmp: Path, path: Path) -> None:
    array.flush()
    del array
    os.replace(tmp, path)


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def describe_files(folder: Path, names: list[str]) -> dict[str, int]:
    return {name: (folder / name).stat().st_size for name in names}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(folder: Path, key: str | None = None) -> dict[str, Any]:
    """Read and verify a manifest: schema version, key and the size of every listed file."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CacheError(f"no finished cache at {folder} (no {MANIFEST}); run precompute to build it")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheError(f"manifest {path} is corrupted ({err}); delete the folder and run precompute again") from err
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(f"cache {folder} has schema {manifest.get('schema_version')}, this version reads "
                         f"{SCHEMA_VERSION}; it will be rebuilt by precompute")
    if key is not None and manifest.get("key") != key:
        raise CacheError(f"cache {folder} was built from other inputs (key {manifest.get('key')} != {key})")
    for name, size in manifest.get("files", {}).items():
        file = Path(folder) / name
        if not file.is_file() or file.stat().st_size != size:
            raise CacheError(f"cache file {file} is missing or truncated (expected {size} bytes); "
                             "delete the folder and run precompute again")
    return manifest


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
