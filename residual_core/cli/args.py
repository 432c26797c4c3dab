"""What every command's arguments share: numbers with a range, a non-empty text, an output folder that can be
written, and a parser whose refusal is one line (no usage block). Every check here runs before a model or a
cache is loaded, so a bad argument costs nothing."""

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with a one-line refusal naming the command: 'error: maps: argument --pc: …; see --help'."""

    def error(self, message: str):
        print(f"error: {self.prog.removeprefix('python -m ')}: {message}; see --help", file=sys.stderr)
        raise SystemExit(2)


def ranged(low: int, high: int):
    """An argparse type: a whole number in [low, high], refused in one line otherwise."""

    def whole(text: str) -> int:
        value = None
        if text.strip().lstrip("-").isascii() and text.strip().lstrip("-").isdigit() and len(text) <= 12:
            value = int(text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from {low:,} to {high:,}")
        return value

    whole.__name__ = "number"
    return whole


def limit(text: str) -> int | None:
    """--limit: a positive number of images, or 'all'."""
    if text.strip().lower() == "all":
        return None
    return ranged(1, 100_000_000)(text)


def words(text: str) -> str:
    """A text argument that must say something (a concept, a query)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a few words, e.g. \"a red object\"")
    return text


SEED = ranged(0, 2**32 - 1)
BATCH = ranged(1, 65_536)


def writable_folder(path: str) -> Path:
    """The output folder, made if absent and checked by writing a probe file there, or ValueError in one line."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "writing there is not permitted",
                  errno.ENOTDIR: "a file stands where a folder should be", errno.ENOSPC: "the disk is full",
                  errno.EEXIST: "a file stands where the folder should be"}.get(err.errno, err.strerror or str(err))
        raise ValueError(f"--out {folder} cannot be written ({reason}); name a folder you can write to") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {folder} cannot be written; name a folder you can write to")
    return folder


def model_options(p: argparse.ArgumentParser) -> None:
    """--model, --random-weights, --seed, --device: every command that loads a model."""
    from residual_core.build.defaults import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="ARCH:PRETRAINED, ARCH:/path/ckpt or a short name")
    p.add_argument("--random-weights", action="store_true", help="seeded random weights (exactness checks)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def cache_dir_option(p: argparse.ArgumentParser) -> None:
    from residual_core.build.defaults import default_cache_dir

    p.add_argument("--cache-dir", default=default_cache_dir(), help="where caches live (also settable as RESIDUAL_CACHE)")


def batch_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=BATCH, default=64, help="images encoded at a time")
