"""Small helpers every family shares: where shipped assets live, and a checkpoint's identity."""

import contextlib
import functools
import hashlib
import os
import pickle
import warnings
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[3] / "assets"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""


def load_failure(err: BaseException) -> str:
    """Why a checkpoint did not load, in a phrase. torch's weights-only refusal advises turning the check off,
    which must never reach a user holding an untrusted file, so it is named here instead."""
    if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err):
        return "it holds pickled objects other than tensors, and checkpoints are only ever loaded weights-only"
    return f"{type(err).__name__}: {first_line(err)}"


@contextlib.contextmanager
def quiet_checkpoint_reads():
    """torch warns about any pickle protocol above 2 even when the weights-only load succeeds or is refused;
    the one-line outcome says what matters, so the warning is held back while a checkpoint is read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        yield


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
