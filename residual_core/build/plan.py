"""What a build is: the spec a user gives, and the plan (model, images, key, folder) it resolves to.

A leaf module: shards.py, finalize.py and pipeline.py all read these types, and it imports none of them.
"""

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from residual_core.build.defaults import DEFAULT_CACHE, DEFAULT_DATASET, DEFAULT_MODEL, default_cache_dir  # noqa: F401
from residual_core.data.sources import ImageSource
from residual_core.engine.models import LoadedClip, ModelSpec, load_clip

DTYPES = ("float16", "float32")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PrecomputeSpec:
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    split: str = "test"
    limit: int | None = None
    seed: int = 0  # subset seed (and random-weight seed)
    batch_size: int = 64
    device: str = "cpu"
    cache_dir: str = field(default_factory=default_cache_dir)
    random_weights: bool = False
    text_bank: str | None = None  # None: ``default_bank(dataset)``
    basis_from: str | None = None  # another cache folder whose head PCA basis is reused
    thumb_size: int = 32
    n_top: int = 16
    n_near: int = 10
    keep_shards: bool = False
    dtype: str = "float16"  # storage of head coefficients, emb and MLPs: float16 or float32
    basis_only: bool = False  # stream the moments and keep only the per-head basis (no per-image arrays)
    workers: int = 0  # data-loader processes decoding images (0: in the encoding process); not in the key

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.workers < 0 or self.batch_size < 1:
            raise ValueError("--workers must be ≥ 0 and --batch-size ≥ 1")
        if self.basis_only and self.basis_from:
            raise ValueError("--basis-only fits a basis; it cannot also reuse one (--basis-from)")


DIGIT_DATASETS = ("mnist-offline", "mnist", "svhn")  # digits: the demo bank names numbers and letters


def default_bank(dataset: str) -> str:
    """The text bank a build embeds when none is given: the demo world's words (shapes, colours, digits, letters)
    for the demo world and digit datasets, words about photographs (assets/photo_bank.txt) for everything else."""
    from residual_core.data.world import is_world_dataset
    from residual_core.engine.textbank import BANK_PATH, PHOTO_BANK_PATH

    return str(BANK_PATH if is_world_dataset(dataset) or dataset in DIGIT_DATASETS else PHOTO_BANK_PATH)


def bank_of(spec: "PrecomputeSpec") -> str:
    return spec.text_bank or default_bank(spec.dataset)


CLASS_TEMPLATES = 2  # the dataset's first prompt templates that join the bank, each with every class name


def class_prompts(dataset: str, classnames, templates, bank: list[str]) -> list[str]:
    """The dataset's own classes in words, through its first prompt templates, that the bank lacks: they join the
    bank so that a text-space label can name every class (no shipped bank text says "a plain background"). On the
    demo world every factor's classes join (a unit of any cache of it may encode any factor)."""
    from residual_core.data import world

    if world.is_world_dataset(dataset):
        pairs = [(world.CLASSNAMES[f], world.TEMPLATES[f]) for f in world.FACTORS]
    else:
        pairs = [(classnames, templates)]
    known = set(bank)
    prompts = [t.format(c) for names, temps in pairs for t in list(temps)[:CLASS_TEMPLATES] for c in names]
    return [p for p in dict.fromkeys(prompts) if p not in known]


@dataclass(frozen=True)
class BuildPlan:
    """What a cache for one spec is made of, and where it lives: computed from the spec, the weights' identity
    and the dataset's labels, without building the model (so a lookup is cheap); ``loaded`` builds it on first use.
    """

    model: ModelSpec
    device: str
    source: ImageSource
    positions: np.ndarray  # [n_images] rows of the split to encode
    inputs: dict  # every input that determines the content; ``inputs["key"]`` is its hash
    folder: Path

    @property
    def key(self) -> str:
        return self.inputs["key"]

    @functools.cached_property
    def loaded(self) -> LoadedClip:
        loaded = load_clip(self.model, device=self.device)
        if loaded.weights_id != self.inputs["weights"]:  # the checkpoint changed between planning and loading
            raise ValueError(f"{self.model.name} changed on disk while the build was planned; run it again")
        return loaded


@dataclass(frozen=True)
class CacheLookup:
    """Whether the cache of a spec is built; ``problem`` says why a folder there was not usable."""

    folder: Path
    ready: bool
    problem: str | None = None


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a distributed build (torchrun), or the only one."""

    rank: int = 0
    world: int = 1

    def owns(self, shard_index: int) -> bool:
        return shard_index % self.world == self.rank
