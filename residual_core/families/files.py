"""Small helpers every family shares: where shipped assets live, and a checkpoint's identity."""

import functools
import hashlib
import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process per file identity (device, inode, size, mtime, ctime).

    A checkpoint's hash keys every cache built from it; the memo keeps a cache lookup from re-reading
    gigabytes of weights, and a rewritten file has a new identity, so it is hashed again.
    """
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, *identity: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
