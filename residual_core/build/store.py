"""Disk cache primitives: content keys, atomic writes, manifests verified on read.

Nothing here pickles: arrays are ``.npy`` (opened memory-mapped) and metadata is JSON. Every file is
written to a unique temporary name in the same folder and renamed into place (the temporary file is
removed if the write fails), and the manifest is written last, so a reader never sees a half-written
cache and an interrupted run leaves only complete shards.

Integrity: the manifest records each file's size and xxh3-128 digest. xxh3 is not a cryptographic
hash; it guards against damage (bit rot, a partial copy, a stray write), not against someone who can
also rewrite the manifest. It was chosen for speed (the bench's ``digest_seconds_per_gb``, docs/measurements.md).
Sizes are checked on every read; digests once per process per file identity (device, inode, size,
mtime, ctime: any write changes ctime), so a long-running server re-hashes a file only if it changed.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from stat import S_ISREG
from typing import Any, Iterator

import numpy as np
import xxhash
from numpy.lib.array_utils import byte_bounds

from residual_core.data.untrusted import json_value

SCHEMA_VERSION = 4
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a real one is a few kB (its list of skipped images stops at 50 entries)
DIGEST = "xxh3_128"
_CHUNK = 1 << 22
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR,
                 errno.EEXIST}


class CacheError(RuntimeError):
    """A cache on disk cannot be used: missing, from other inputs or versions, or corrupted."""


class CacheWriteError(CacheError):
    """A cache cannot be written: disk full, read-only or not permitted. The message names the folder."""


def cache_key(inputs: dict[str, Any]) -> str:
    """Short content key of every input that determines a cache (canonical JSON, sha256)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))  # no default=: unserialisable is a bug
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return _digest_of(handle)


def write_error(folder: Path, err: OSError) -> CacheWriteError:
    """One line naming the folder, what went wrong and what to do."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EFBIG: "a file grew past the file-system limit",
            errno.ENOTDIR: "a file stands where a folder should be", errno.EEXIST: "a file stands where a folder should be"}
    reason = what.get(err.errno, "writing is not permitted")
    return CacheWriteError(f"cannot write the cache in {folder}: {reason} ({err.strerror}); free space there or "
                           "point --cache-dir / RESIDUAL_CACHE at a writable folder with room, then run it again")


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Turn disk-full / read-only / permission errors inside the block into a CacheWriteError."""
    try:
        yield
    except CacheError:
        raise
    except OSError as err:
        if err.errno in _WRITE_ERRNOS:
            raise write_error(folder, err) from err
        if err.errno is None and (_SHORT_WRITE.search(str(err)) or _no_room(folder)):
            # numpy reports a short write without an errno ("786432 requested and 765824 written"); by the time
            # it is caught its temporary file is gone, so the space it could not have is free again
            raise write_error(folder, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from err
        raise


def _no_room(folder: Path) -> bool:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free < (1 << 20)


def _temp_in(path: Path, suffix: str) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)


def _write_atomically(path: Path, write) -> None:
    fd, tmp = _temp_in(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _write_atomically(path, lambda handle: handle.write(data))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    _write_atomically(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False))


def open_npy_writer(path: Path, dtype: str, shape: tuple[int, ...]) -> tuple[np.memmap, Path]:
    """A memory-mapped .npy at a unique temporary name; ``commit_npy`` renames it, ``discard`` removes it."""
    fd, tmp = _temp_in(path, ".partial")
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        _reserve(Path(tmp))
        return array, Path(tmp)
    except BaseException:
        discard(Path(tmp))
        raise


def _reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: open_memmap makes a sparse file, and a page written into it
    on a full disk kills the process with SIGBUS (seen on a 12 MB tmpfs) instead of raising ENOSPC here."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: as before
                raise


def commit_npy(array: np.memmap, tmp: Path, path: Path) -> None:
    array.flush()
    del array
    os.replace(tmp, path)


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def refuse_link(folder: Path) -> None:
    """CacheError if a cache folder is a symbolic link: building through one would overwrite whatever it points
    at (another, valid cache), and reading through one would read a cache under another's name."""
    if Path(folder).is_symlink():
        raise CacheError(f"the cache folder {folder} is a symbolic link; a cache folder must be a real folder: "
                         "remove the link and run it again")


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CacheError(f"cache file {path} cannot be read as an array ({err}); delete its folder and run "
                         "precompute again") from err


def release_pages(array: np.ndarray) -> None:
    """Unmap the pages a memory-mapped ``array`` (or a view of one) spans from this process. The kernel's page
    cache keeps them, so reading them again costs a minor fault, not a disk read; a streamed pass over a cache
    larger than RAM then leaves the process's RSS where it was. In-RAM arrays are left alone."""
    mapping = array
    while mapping is not None and not isinstance(mapping, mmap.mmap):
        mapping = getattr(mapping, "base", None)
    if mapping is None or array.size == 0:
        return
    start = np.frombuffer(mapping, np.uint8).__array_interface__["data"][0]
    low, high = byte_bounds(array)
    first = (low - start) // mmap.PAGESIZE * mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, first, min(high - start, len(mapping)) - first)


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Size and digest of each file, as the manifest records them."""
    return {name: {"size": (folder / name).stat().st_size, DIGEST: file_digest(folder / name)} for name in names}


_VERIFIED: dict[tuple[str, str], tuple[int, ...]] = {}
_VERIFIED_LOCK = threading.Lock()


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _digest_of(handle) -> str:
    digest = xxhash.xxh3_128()
    handle.seek(0)
    for block in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()


def open_verified(path: Path, size: int, digest: str):
    """``path`` opened once, its size and digest checked on that open file (hashed once per file identity), and
    the open binary handle with its identity. Whatever is read from the handle is what was verified: a writer
    that swaps the name between the check and the read swaps a file this handle does not see."""
    try:
        handle = open(path, "rb")
    except OSError:
        raise CacheError(f"cache file {path} is missing or unreadable; it will be rebuilt by precompute") from None
    try:
        stat = os.fstat(handle.fileno())
        if not S_ISREG(stat.st_mode) or stat.st_size != size:
            raise CacheError(f"cache file {path} is truncated or resized ({stat.st_size} bytes, manifest says "
                             f"{size}); it will be rebuilt by precompute")
        memo, identity = (str(path.resolve()), digest), _identity(stat)
        with _VERIFIED_LOCK:
            known = _VERIFIED.get(memo) == identity
        if not known:
            if _digest_of(handle) != digest:
                raise CacheError(f"cache file {path} is damaged: its content does not match the {DIGEST} digest in "
                                 "the manifest; it will be rebuilt by precompute (or delete the folder)")
            if _identity(os.fstat(handle.fileno())) != identity:
                raise CacheError(f"cache file {path} changed while it was being verified; open it again")
            with _VERIFIED_LOCK:
                _VERIFIED[memo] = identity
        return handle, identity
    except BaseException:
        handle.close()
        raise


def verify_file(path: Path, size: int, digest: str) -> None:
    """Raise CacheError unless ``path`` has this size and digest (hashed once per file identity)."""
    handle, _ = open_verified(path, size, digest)
    handle.close()


def identity_of(path: Path) -> tuple[int, ...] | None:
    """The file identity (device, inode, size, mtime, ctime) now on disk at ``path``, None if there is none."""
    try:
        return _identity(path.stat())
    except OSError:
        return None


def npy_from_handle(handle, path: Path) -> np.ndarray:
    """The ``.npy`` array of an open (verified) file, memory-mapped from that same file, never by name again.
    Object arrays are refused: no pickle."""
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if dtype.hasobject:
            raise ValueError("it holds Python objects")
        if 0 in shape:
            return np.empty(shape, dtype)
        return np.memmap(handle, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                         order="F" if fortran else "C")
    except (ValueError, OSError, EOFError) as err:
        raise CacheError(f"cache file {path} cannot be read as an array ({err}); delete its folder and run "
                         "precompute again") from err


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def checked_files(path: Path, files: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(files, dict) or not files:
        raise CacheError(f"manifest {path} lists no files; it will be rebuilt by precompute")
    for name, entry in files.items():
        ok_entry = (isinstance(entry, dict) and type(entry.get("size")) is int and entry["size"] >= 0
                    and isinstance(entry.get(DIGEST), str) and len(entry[DIGEST]) == 32)
        if not (isinstance(name, str) and _SAFE_NAME.match(name) and ok_entry):
            raise CacheError(f"manifest {path} has a malformed file entry {name!r}; it will be rebuilt by precompute")
    return files


def read_manifest(folder: Path, key: str | None = None, verify: bool = True) -> dict[str, Any]:
    """Read and verify a manifest: JSON types, schema version, key, and each listed file's size and digest."""
    refuse_link(folder)
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CacheError(f"no finished cache at {folder} (no {MANIFEST}); run precompute to build it")
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_MANIFEST_BYTES + 1)  # never more: a huge file elsewhere must not stall a listing
        manifest = json_value(text, f"manifest {path}", MAX_MANIFEST_BYTES)
    except (OSError, ValueError) as err:
        raise CacheError(f"manifest {path} is unreadable ({err}); it will be rebuilt by precompute") from err
    if not isinstance(manifest, dict):
        raise CacheError(f"manifest {path} is a JSON {type(manifest).__name__}, not an object; it will be rebuilt")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(f"cache {folder} has schema {manifest.get('schema_version')!r}, this version reads "
                         f"{SCHEMA_VERSION}; it will be rebuilt by precompute")
    if key is not None and manifest.get("key") != key:
        raise CacheError(f"cache {folder} was built from other inputs (key {manifest.get('key')!r} != {key})")
    files = checked_files(path, manifest.get("files"))
    for name in ("spec", "inputs", "arch"):
        if not isinstance(manifest.get(name), dict):
            raise CacheError(f"manifest {path} has no valid {name!r} section; it will be rebuilt by precompute")
    if verify:
        for name, entry in files.items():
            verify_file(Path(folder) / name, entry["size"], entry[DIGEST])
    return manifest


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder at a time, across processes (released when the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_orphans(folder: Path) -> None:
    """Delete temporary files and shard folders that a killed builder left (call only under build_lock)."""
    for pattern in (".*.tmp", ".*.partial", "shards/.*.tmp", "shards/.tmp-*", "shards/*/.*.tmp"):
        for path in folder.glob(pattern):
            remove_tree(path) if path.is_dir() else discard(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def as_f32(array: np.ndarray) -> np.ndarray:
    """fp16 (memory-mapped) -> fp32 copy; torch's vectorised conversion is ~15x faster than numpy's."""
    if array.dtype != np.float16:
        return np.asarray(array, dtype=np.float32)
    import torch  # here: listing commands import the store without torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only input: we only read it
        return torch.from_numpy(np.asarray(array)).float().numpy()


def copy_f32(rows: np.ndarray, pick=None) -> np.ndarray:
    """A float32 copy of ``rows[pick]`` (``pick``: any NumPy index; None: all of it), then the memory-mapped
    pages of ``rows`` unmapped.

    The kernel maps the pages around each page read (large folios: up to megabytes), so reading one head's
    rows of a chunk maps far more of the file than the rows; releasing after each head bounds what a pass over
    every head leaves mapped by one head's span of the file, whatever the number of heads or images."""
    picked = rows if pick is None else rows[pick]  # a fancy index is already a copy: ``rows`` is what is mapped
    # gather in the stored dtype first, then convert contiguous memory: converting a strided fp16 view
    # directly took twice as long (24 vs 13 ms for a head of a 50 k sample of 1 M images)
    gathered = np.array(picked, copy=True)
    release_pages(rows)
    return gathered if gathered.dtype == np.float32 else as_f32(gathered)
