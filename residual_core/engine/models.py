"""Model specs and loading, through the model families (families/): open_clip and Hugging Face CLIP.

A spec is one string:
  ``ARCH:PRETRAINED``   any open_clip tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
  ``ARCH:/path/ckpt``   a local open_clip checkpoint (.safetensors, .bin, .pt), loaded weights-only
  ``hf-hub:org/repo``   an open_clip model on the Hugging Face hub
  ``hf:org/repo``       a transformers CLIPModel by hub id; ``hf:/path`` a save_pretrained folder
  ``hf-random:NAME``    a shipped transformers CLIP config with seeded random weights
  ``NAME``              a registered short name (``python -m residual_core models``)
``random_weights=True`` builds the architecture with seeded random weights: the decomposition is exact
for any weights, so this is how exactness is tested offline.
"""

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from residual_core.engine import families
from residual_core.engine.families import ModelLoadError, Tower  # noqa: F401 - re-exported: callers catch it from here
from residual_core.engine.catalogue import SHORT_NAMES, ShortName  # noqa: F401 - re-exported
from residual_core.engine.families.files import ASSETS, file_sha256  # noqa: F401 - ASSETS re-exported
from residual_core.engine.families.hf_clip import HfSpec
from residual_core.engine.families.openclip import OpenClipSpec

sha256_file = file_sha256
ModelSpec = OpenClipSpec | HfSpec  # each family's frozen spec; ``.family`` names it, ``.name`` prints it


def parse_model_spec(text: str, random_weights: bool = False, seed: int = 0) -> ModelSpec:
    """Turn a spec string or short name into its family's spec (cheap: nothing is loaded)."""
    text = text.strip()
    if not text:
        raise ValueError("empty model spec; try 'demo', 'ViT-B-32:laion2b_s34b_b79k' or 'ARCH:/path/to/ckpt'")
    if text in SHORT_NAMES:
        text = SHORT_NAMES[text].spec
    return families.for_text(text).parse(text, random_weights, seed)


@dataclass(frozen=True)
class ArchInfo:
    """Architecture facts read from the loaded model's tower, never typed in by hand."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_embed: int
    n_tokens: int
    image_size: int

    @classmethod
    def from_tower(cls, tower: Tower) -> "ArchInfo":
        n_heads = tower.blocks[0].n_heads
        return cls(n_layers=len(tower.blocks), n_heads=n_heads, d_model=tower.d_model,
                   d_head=tower.d_model // n_heads, d_embed=tower.d_embed, n_tokens=tower.n_tokens,
                   image_size=tower.image_size)

    @classmethod
    def from_model(cls, model: nn.Module) -> "ArchInfo":
        return cls.from_tower(families.tower(model))

    @property
    def n_units(self) -> int:
        return 1 + self.n_layers + self.n_layers * self.n_heads


@dataclass(frozen=True)
class LoadedClip:
    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> [3, H, W]
    encode_texts: Callable[[list[str]], torch.Tensor] | None  # texts -> [n, d_embed] L2-normalised; None: images only
    spec: ModelSpec
    arch: ArchInfo
    weights_id: str  # tag, checkpoint sha256 or "random:<seed>": part of every cache key

    @property
    def has_text(self) -> bool:
        return self.encode_texts is not None

    @property
    def tower(self) -> Tower:
        return families.tower(self.model)

    def logit_scale(self) -> float:
        return families.by_name(self.spec.family).logit_scale(self.model)

    def input_pixels(self, batch: torch.Tensor) -> np.ndarray:
        """batch [n, 3, H, W] as preprocessed -> [n, H, W, 3] uint8: the normalisation undone, so what the model
        sees (its resolution, crop and colours) can be shown."""
        mean, std = families.by_name(self.spec.family).normalisation(self.preprocess)
        pixels = batch.float() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
        return (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def weights_id(spec: ModelSpec) -> str:
    """The identity of a spec's weights without building the model (it keys caches)."""
    return families.by_name(spec.family).weights_id(spec)


def library_version(spec: ModelSpec) -> str:
    return families.by_name(spec.family).version()


def load_clip(spec: ModelSpec | str, device: str = "cpu", text: bool = True) -> LoadedClip:
    """Load a model in eval mode, fp32, through its family's own library.

    ``text=False`` skips the text side (``encode_texts`` is then None): enough to decompose images, and it
    keeps models whose tokenizer lives on the Hugging Face hub usable offline for that.
    """
    if isinstance(spec, str):
        spec = parse_model_spec(spec)
    family = families.by_name(spec.family)
    model, preprocess, encode_texts = family.load(spec, device, text)
    if encode_texts is not None:
        check_text_side(spec.name, encode_texts)
    tower = family.tower(model)
    return LoadedClip(model, preprocess, encode_texts, spec, ArchInfo.from_tower(tower), family.weights_id(spec))


# distinct texts that share no word: any working text tower, random weights included, embeds them apart
PROBE_TEXTS = ("a photo of a dog", "the number seven", "a striped background", "red")


def check_text_side(name: str, encode_texts) -> None:
    """ModelLoadError when different texts get one embedding: a tokenizer that maps every word to one token (a
    transformers folder saved without its tokenizer files) would otherwise make every class, bank text and label the
    same, with zero-shot at chance and no error anywhere."""
    import torch

    with torch.no_grad():
        embeddings = encode_texts(list(PROBE_TEXTS)).float()  # [4, d_embed], unit norm
    cosines = embeddings @ embeddings.T
    if float(cosines.min()) > 1 - 1e-5:
        raise ModelLoadError(f"{name}: its text side gives one embedding for different texts (its tokenizer maps every "
                             "word to the same token); a transformers folder needs its tokenizer files: save them beside "
                             "the weights (CLIPProcessor.from_pretrained(hub id).save_pretrained(folder), or the "
                             "tokenizer alone), or load images only")
