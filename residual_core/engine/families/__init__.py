"""Model families: one small class per model library (see base.Family); the registry dispatches to them.

Adding a family: subclass ``base.Family`` in a module here (parse its spec strings, load, give a cheap
``weights_id``, and read its vision tower into a ``base.Tower``), then add an instance to ``FAMILIES``.
The decomposition, the caches and the dashboard need nothing else.
"""

from torch import nn

from residual_core.engine.families.base import Block, Family, ModelLoadError, Tower, UnsupportedModelError
from residual_core.engine.families.hf_clip import HfClip
from residual_core.engine.families.openclip import OpenClip

FAMILIES: tuple[Family, ...] = (HfClip(), OpenClip())  # the first whose prefix matches; open_clip takes the rest

__all__ = ["Block", "FAMILIES", "Family", "ModelLoadError", "Tower", "UnsupportedModelError", "by_name",
           "for_model", "for_text", "tower"]


def for_text(text: str) -> Family:
    """The family that owns a spec string (by prefix; open_clip owns everything else)."""
    for family in FAMILIES:
        if any(p and text.startswith(p) for p in family.prefixes):
            return family
    return by_name("open_clip")


def by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"no model family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def for_model(model: nn.Module) -> Family:
    for family in FAMILIES:
        if family.owns(model):
            return family
    raise UnsupportedModelError(f"{type(model).__name__} belongs to no known model family "
                                f"({', '.join(f.name for f in FAMILIES)}); see README 'Adding a model family'")


def tower(model: nn.Module) -> Tower:
    """The decomposable vision tower of a loaded model, or UnsupportedModelError naming what is not."""
    return for_model(model).tower(model)
