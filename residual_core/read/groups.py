"""Groups of a cache's images (class × attribute) and the accuracy of each: the worst-group number.

A group spec names where an image's attribute comes from:
  a factor name   the demo world's ground truth (``colour`` on ``demo-world/shape``: "circle × red", …)
  folders         the first sub-folder below the class folder: ``class/group/image.png``
  place           Waterbirds' place (land / water) on a ``waterbirds:`` dataset, from its metadata.csv
  csv:PATH        a CSV with an ``id`` column (the cache's image ids) and a ``group`` column, or a
                  Waterbirds ``metadata.csv`` (``img_filename`` and ``place``: land / water)
Groups are computed from the cache's own image ids and positions on every read, never stored beside it, so they
cannot go stale; a CSV's groups carry its sha256 so that anything remembered from them is keyed by its content.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from residual_core.data.untrusted import csv_rows
from residual_core.data.waterbirds import is_waterbirds, metadata_path
from residual_core.data.world import FACTORS, is_world_dataset, scenes_of, world_factor, world_split

PLACES = ("land", "water")  # Waterbirds' place column: 0 land, 1 water
MIN_GROUP = 1  # a group with fewer cached images than this is not scored (none is left out by default)


@dataclass(frozen=True)
class Groups:
    """Which group each cached image is in."""

    index: np.ndarray  # [n_images] int: the image's group (−1: none; such images count only in the mean)
    names: tuple[str, ...]  # [n_groups] "class × attribute"
    source: str  # where the groups came from, in words
    values: tuple[str, ...] = ()  # the attribute's values (the part after "×")
    digest: str = ""  # sha256 of the file they were read from ("" when computed)

    @property
    def counts(self) -> np.ndarray:
        """[n_groups] images per group."""
        return np.bincount(self.index[self.index >= 0], minlength=len(self.names))


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy over all images, per group, and of the worst group."""

    mean: float
    worst: float  # of the groups with at least MIN_GROUP images
    worst_group: str
    per_group: np.ndarray  # [n_groups] (nan for an empty group)
    counts: np.ndarray  # [n_groups]

    @property
    def gap(self) -> float:
        """How far the worst group is below the mean."""
        return self.mean - self.worst


def group_accuracy(right: np.ndarray, groups: Groups) -> GroupAccuracy:
    """``right`` [n_images] bool (prediction == label) → mean, per-group and worst-group accuracy."""
    inside = groups.index >= 0
    n_groups = len(groups.names)
    counts = np.bincount(groups.index[inside], minlength=n_groups)
    hits = np.bincount(groups.index[inside], weights=right[inside], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_group = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)  # [n_groups]
    scored = np.flatnonzero(counts >= max(MIN_GROUP, 1))
    worst = int(scored[np.argmin(per_group[scored])]) if len(scored) else -1
    return GroupAccuracy(mean=float(right.mean()) if len(right) else float("nan"),
                         worst=float(per_group[worst]) if worst >= 0 else float("nan"),
                         worst_group=groups.names[worst] if worst >= 0 else "—", per_group=per_group, counts=counts)


def _combine(labels: np.ndarray, classnames, attribute: np.ndarray, values, source: str,
             digest: str = "") -> Groups:
    """Groups from each image's class and attribute index (−1: no attribute); only groups with images are named."""
    n_values = max(len(values), 1)
    flat = np.where(attribute >= 0, labels * n_values + attribute, -1)  # [n]
    present = np.unique(flat[flat >= 0])
    index = np.where(flat >= 0, np.searchsorted(present, flat), -1)  # [n] group of each image
    names = tuple(f"{_name(classnames, i // n_values)} × {values[i % n_values]}" for i in present)
    return Groups(index=index, names=names, source=source, values=tuple(values), digest=digest)


def _name(classnames, label: int) -> str:
    return str(classnames[label]) if label < len(classnames) else f"class {label}"


def world_groups(dataset: str, split: str, positions: np.ndarray, labels: np.ndarray, factor: str) -> Groups:
    """The demo world's ground truth: ``factor`` of each cached scene as the attribute of its class."""
    if not is_world_dataset(dataset):
        raise ValueError(f"groups by {factor!r} need a demo-world dataset (this cache is {dataset}); "
                         "use folders or csv:PATH")
    own = world_factor(dataset)
    if factor not in FACTORS or factor == own:
        others = ", ".join(f for f in FACTORS if f != own)
        raise ValueError(f"unknown group factor {factor!r} for {dataset}; choose one of {others}")
    scenes = scenes_of(world_split(split, dataset))
    attribute = np.array([scenes[int(p)].factor(factor) for p in positions], dtype=np.int64)
    return _combine(labels, FACTORS[own], attribute, FACTORS[factor], f"the world's {own} × {factor}")


def folder_groups(image_ids, labels: np.ndarray, classnames) -> Groups:
    """``class/group/…/image``: the first sub-folder under the class folder is the group (none: no group)."""
    parts = [str(i).replace("\\", "/").split("/") for i in image_ids]
    found = [p[1] if len(p) >= 3 else None for p in parts]
    values = tuple(sorted({f for f in found if f is not None}))
    if not values:
        raise ValueError("groups from folders need class/group/image paths; this cache's images sit directly in "
                         "their class folders")
    where = {v: i for i, v in enumerate(values)}
    attribute = np.array([where[f] if f is not None else -1 for f in found], dtype=np.int64)
    return _combine(labels, classnames, attribute, values, "sub-folders of each class")


def csv_groups(path: str | Path, image_ids, labels: np.ndarray, classnames) -> Groups:
    """Groups from a CSV: ``id,group`` columns, or Waterbirds' ``img_filename`` with ``place`` (0 land, 1 water).
    Images the file does not list have no group; a file that names none of the cache's images is refused."""
    path = Path(path).expanduser()
    rows, digest = csv_rows(path, "group file")
    columns = set(rows[0]) if rows else set()
    if {"img_filename", "place"} <= columns:
        key, column, waterbirds = "img_filename", "place", True
    elif {"id", "group"} <= columns:
        key, column, waterbirds = "id", "group", False
    else:
        raise ValueError(f"group file {path} needs columns id,group (or Waterbirds' img_filename,place); it has "
                         f"{', '.join(sorted(columns)) or 'none'}")
    table = {}
    for row in rows:
        value = (row.get(column) or "").strip()
        if waterbirds:
            if value not in ("0", "1"):
                raise ValueError(f"group file {path}: place {value!r} for {row.get(key)!r} is not 0 (land) or 1 "
                                 "(water)")
            value = PLACES[int(value)]
        if not value:
            raise ValueError(f"group file {path}: the row for {row.get(key)!r} has an empty {column}")
        table[str(row.get(key) or "").replace("\\", "/")] = value
    found = [table.get(str(i).replace("\\", "/")) for i in image_ids]
    if not any(f is not None for f in found):
        example = next(iter(image_ids), "")
        raise ValueError(f"group file {path} names none of this cache's images (ids look like {example!r})")
    values = PLACES if waterbirds else tuple(sorted({f for f in found if f is not None}))
    where = {v: i for i, v in enumerate(values)}
    attribute = np.array([where[f] if f is not None else -1 for f in found], dtype=np.int64)
    return _combine(labels, classnames, attribute, values, f"{column} column of {path.name}", digest)


def cache_dataset(cache) -> tuple[str, str]:
    """(dataset, split) a cache was built from."""
    spec = cache.manifest.get("spec") or {}
    return str(spec.get("dataset", "")), str(spec.get("split", "test"))


def groups_for(cache, spec: str) -> Groups:
    """The cache's groups for a spec (a world factor, ``folders`` or ``csv:PATH``); ValueError says what was wrong."""
    spec = str(spec).strip()
    dataset, split = cache_dataset(cache)
    if spec == "folders":
        return folder_groups(cache.image_ids, cache.labels, cache.classnames)
    if spec.startswith("csv:"):
        return csv_groups(spec[4:], cache.image_ids, cache.labels, cache.classnames)
    if spec == "place" and is_waterbirds(dataset):
        return csv_groups(metadata_path(dataset), cache.image_ids, cache.labels, cache.classnames)
    if spec in FACTORS:
        return world_groups(dataset, split, cache.positions, cache.labels, spec)
    raise ValueError(f"unknown groups {spec!r}: give a demo-world factor ({', '.join(FACTORS)}), folders, "
                     "csv:PATH, or place (on waterbirds:)")


def group_specs(cache) -> tuple[str, ...]:
    """The group specs this cache offers without a file: the world's other factors, or folders when its ids
    have class/group/image paths."""
    dataset, _ = cache_dataset(cache)
    if is_world_dataset(dataset):
        own = world_factor(dataset)
        return tuple(f for f in FACTORS if f != own)
    if is_waterbirds(dataset):
        return ("place",)
    if any(str(i).replace("\\", "/").count("/") >= 2 for i in cache.image_ids[:1000]):
        return ("folders",)
    return ()
