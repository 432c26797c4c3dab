"""Waterbirds (Sagawa et al., ICLR 2020) from its own folder: ``waterbirds:/path/to/waterbird_complete95_forest2water2``.

The folder holds the bird photos under species folders and ``metadata.csv`` with ``img_filename``, ``y`` (0 landbird,
1 waterbird), ``split`` (0 train, 1 val, 2 test) and ``place`` (0 land, 1 water). The task is ``y``; its groups (``y``
× ``place``, ``read.groups``) are the place. Nothing is downloaded: a user who has the folder points at it. The
metadata's sha256 is the dataset's version, so a cache built from other metadata is never reused.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from residual_core.data.sources import DatasetUnavailableError, ImageSource
from residual_core.data.untrusted import csv_rows

PREFIX = "waterbirds:"
CLASSNAMES = ("landbird", "waterbird")
TEMPLATES = ("a photo of a {}.",)  # TextSpan's Waterbirds prompt
SPLIT_CODES = {"train": "0", "val": "1", "test": "2"}
COLUMNS = ("img_filename", "y", "split", "place")


def is_waterbirds(name: str) -> bool:
    return str(name).startswith(PREFIX)


def metadata_path(name: str) -> Path:
    return Path(name[len(PREFIX):]).expanduser() / "metadata.csv"


def load_waterbirds(name: str, split: str) -> ImageSource:
    """The split's images (``all``: every row) labelled by ``y``; DatasetUnavailableError or ValueError in one line."""
    root = Path(name[len(PREFIX):]).expanduser()
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DatasetUnavailableError(f"no metadata.csv in {root}: point waterbirds: at the Waterbirds folder "
                                      "(waterbird_complete95_forest2water2, with metadata.csv and the species folders)")
    rows, digest = csv_rows(meta, "Waterbirds metadata")
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"Waterbirds metadata {meta} lacks {', '.join(missing or COLUMNS)}")
    chosen = [r for r in rows if split == "all" or r["split"] == SPLIT_CODES.get(split)]
    for row in chosen:
        if row["y"] not in ("0", "1") or row["split"] not in ("0", "1", "2") or row["place"] not in ("0", "1"):
            raise ValueError(f"Waterbirds metadata {meta}: the row for {row['img_filename']!r} has y, split or place "
                             "outside 0/1/2")
        if Path(row["img_filename"]).is_absolute() or ".." in Path(row["img_filename"]).parts:
            raise ValueError(f"Waterbirds metadata {meta} names {row['img_filename']!r}, outside its folder")
    if not chosen:
        raise DatasetUnavailableError(f"Waterbirds metadata {meta} has no {split} rows")
    labels = np.array([int(r["y"]) for r in chosen], dtype=np.int64)
    ids = tuple(r["img_filename"].replace("\\", "/") for r in chosen)
    return ImageSource(name, split, CLASSNAMES, TEMPLATES, labels, ids, lambda i: _open(root, ids[i]),
                       version=digest[:16])


def _open(root: Path, relative: str) -> Image.Image:
    """The photo at ``root/relative``, only if it is a regular file inside ``root`` once links are resolved (a link
    out of the folder, a FIFO or a device is refused: the build skips the image and counts it)."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise ValueError("not a regular file inside the Waterbirds folder")
    return Image.open(target)
