"""What a build uses when nothing is said: the model, the dataset, the cache folder. A leaf (no torch), so the
command line can offer these as defaults before it knows which command needs the model libraries."""

import os
from pathlib import Path

DEFAULT_MODEL = "demo"
# shape, not colour: on colour no single head moves accuracy, on shape switching one off visibly does
DEFAULT_DATASET = "demo-world/shape"
# images per cache when nothing is said, on the command line and in the dashboard alike, so that every command and
# page opens the same cache (a split with fewer images is taken whole: the same cache as --limit all)
DEFAULT_IMAGES = 2_000
DEFAULT_CACHE = str(Path.home() / ".cache" / "residual" / "caches")


def default_cache_dir() -> str:
    """RESIDUAL_CACHE if set (read at call time), else ~/.cache/residual/caches."""
    return os.environ.get("RESIDUAL_CACHE", DEFAULT_CACHE)
