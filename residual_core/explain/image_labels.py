"""Labels read from the images: what the whole model reads in a unit's top images.

A text-space label (the nearest text to a PC, TextSpan's texts, the weights' directions) reads one head's direction
alone, and a head's direction mixes factors. Here a unit (any per-image score: a PC pole, a TextSpan text, a weight
direction) is labelled from its images as the full model reads them, with the embeddings already in the cache:

  1. every image is read zero-shot in each *family* of mutually exclusive texts (the dataset's classes; on the demo
     world, each factor's class names through its templates): one predicted value per image and family;
  2. the unit's family is the one whose predicted values explain most of the unit's score (η², no ground truth);
  3. its label is the modal predicted value of that family over the unit's top k images; the evidence is how many
     of the k read as it.

A unit whose best family explains less than ``ABSTAIN_ETA`` of its score gets no label ("no clear label"): the
threshold was chosen on the shipped test world and is reported on a second world (docs/scorecard.md).
"""

from dataclasses import dataclass

import numpy as np

from residual_core.build.store import copy_f32
from residual_core.explain.scorecard import eta_squared
from residual_core.read.cache import Cache

K = 8  # top images a label is read from (the poles the dashboard shows)
ABSTAIN_ETA = 0.2


@dataclass(frozen=True)
class Family:
    """Mutually exclusive texts (a dataset's classes, one factor's values) and their joint-space directions."""

    name: str
    texts: tuple[str, ...]
    directions: np.ndarray  # [d_embed, n_texts] unit-norm columns (a zero-shot classifier)


@dataclass(frozen=True)
class ImageLabel:
    text: str  # "" when no family explains the unit's score (abstention)
    family: str
    eta: float  # share of the unit's score its family's predicted values explain
    agree: int  # of the top k, how many the full model reads as ``text``
    k: int

    @property
    def abstains(self) -> bool:
        return not self.text

    def evidence(self) -> str:
        if self.abstains:
            return (f"no clear label: what the model reads in its images explains at most {self.eta:.0%} of its score "
                    f"(by {self.family})")
        return (f"{self.agree} of its top {self.k} images read as “{self.text}” (full model; {self.family} explains "
                f"{self.eta:.0%} of the score)")


@dataclass(frozen=True)
class Reader:
    """Every image's zero-shot reading in every family, computed once per cache."""

    families: tuple[Family, ...]
    readings: tuple[np.ndarray, ...]  # per family [n_images] the predicted text's index

    def label(self, scores: np.ndarray, k: int = K, abstain_eta: float = ABSTAIN_ETA) -> ImageLabel:
        """The label of a unit with per-image ``scores`` [n] (larger: more of the unit)."""
        scores = np.asarray(scores, np.float64)
        etas = [eta_squared(scores, reading) for reading in self.readings]
        best = int(np.argmax(etas))
        family, reading = self.families[best], self.readings[best]
        top = np.argsort(-scores, kind="stable")[:k]
        counts = np.bincount(reading[top], minlength=len(family.texts))
        text = family.texts[int(np.argmax(counts))]
        return ImageLabel(text if etas[best] >= abstain_eta else "", family.name, etas[best], int(counts.max()), len(top))


def read_images(cache: Cache, families: tuple[Family, ...]) -> Reader:
    """Each image's predicted text in each family (the cache's unit-norm image embeddings, a chunk at a time)."""
    readings = [np.empty(cache.n_images, np.int64) for _ in families]
    step = 65_536
    for start in range(0, cache.n_images, step):
        images = copy_f32(cache.output, slice(start, start + step)).astype(np.float64)  # [chunk, d_embed]
        for reading, family in zip(readings, families):
            reading[start:start + len(images)] = (images @ family.directions).argmax(1)  # norms do not change it
    return Reader(tuple(families), tuple(readings))


def dataset_family(cache: Cache) -> Family:
    """The cache's own classes, read through its zero-shot classifier (no model needed)."""
    return Family("class", tuple(cache.classnames), np.asarray(cache.classifier, np.float64))


def world_families(loaded) -> tuple[Family, ...]:
    """The demo world's factors, each a family of its class names through its templates (the model's text tower)."""
    from residual_core.data import world
    from residual_core.engine.zeroshot import build_classifier

    return tuple(Family(factor, world.CLASSNAMES[factor],
                        build_classifier(loaded, world.CLASSNAMES[factor], world.TEMPLATES[factor]).numpy().astype(
                            np.float64)) for factor in world.FACTORS)


def families_for(cache: Cache, loaded=None) -> tuple[Family, ...]:
    """The families a cache's units are read in: on the demo world (with its model) every factor, else its classes."""
    from residual_core.data.world import is_world_dataset

    if loaded is not None and is_world_dataset(cache.manifest["spec"]["dataset"]):
        return world_families(loaded)
    return (dataset_family(cache),)
