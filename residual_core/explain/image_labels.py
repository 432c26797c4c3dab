"""Labels read from the images: what the whole model reads in a unit's top images.

A text-space label (the nearest text to a PC, TextSpan's texts, the weights' directions) reads one head's direction
alone, and a head's direction mixes factors. Here a unit (any per-image score: a PC pole, a TextSpan text, a weight
direction) is labelled from its images as the full model reads them, with the embeddings already in the cache:

  1. every image is read zero-shot in each *family* of mutually exclusive texts (the dataset's classes; on the demo
     world, each factor's class names through its templates): one predicted value per image and family;
  2. the unit's family is the one whose predicted values explain most of the unit's score (η², no ground truth);
  3. its label is the modal predicted value of that family over the unit's top k images; the evidence is how many
     of the k read as it;
  4. over every image, the value (in any family) the unit's score ranks best *above chance* (the AP of the score
     for that value's readings, lifted over the value's share of the images: (AP − p) / (1 − p)). Where it is
     another value than the label and clearly above chance (≥ ``MIN_LIFT``) the label carries it as a second part
     ("over every image it ranks … first"): what the top images share and what the whole ranking tracks can
     differ, and a label read from k images alone cannot say the second. The lift, not the raw AP, chooses it:
     a value half the images show has AP ≈ 0.5 under any score (docs/scorecard.md, "Label AP and chance").

A unit whose best family explains less than ``ABSTAIN_ETA`` of its score gets no label ("no clear label"): the
threshold was chosen on the shipped test world and is reported on a second world (docs/scorecard.md).
"""

from dataclasses import dataclass

import numpy as np

from residual_core.build.store import copy_f32
from residual_core.explain.scorecard import eta_squared, reading_aps
from residual_core.read.cache import Cache

K = 8  # top images a label is read from (the poles the dashboard shows)
ABSTAIN_ETA = 0.2
MIN_LIFT = 0.1  # the least AP above chance, (AP − p) / (1 − p), a second part is shown at


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
    ap: float = float("nan")  # over every image, the AP of the score for the images read as ``text``
    chance: float = float("nan")  # that AP under a random ranking: the share of images read as ``text``
    ranks: str = ""  # the second part: the value the score ranks best above chance, where it is another one
    ranks_ap: float = float("nan")
    ranks_chance: float = float("nan")

    @property
    def abstains(self) -> bool:
        return not self.text

    def short(self) -> str:
        """The label in a few words: its text and, where there is one, its second part."""
        return self.text + (f" · over all: {self.ranks}" if self.ranks and self.text else "")

    def evidence(self) -> str:
        if self.abstains:
            return (f"no clear label: what the model reads in its images explains at most {self.eta:.0%} of its score "
                    f"(by {self.family})")
        line = (f"{self.agree} of its top {self.k} images read as “{self.text}” (full model; {self.family} explains "
                f"{self.eta:.0%} of the score)")
        if self.ranks:
            return line + (f"; over every image it ranks “{self.ranks}” first (AP {self.ranks_ap:.2f}, chance "
                           f"{self.ranks_chance:.2f})")
        if self.ap == self.ap:
            return line + f"; over every image, AP {self.ap:.2f} for it (chance {self.chance:.2f})"
        return line


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
        order = np.argsort(-scores, kind="stable")  # [n] images, the unit's most first
        counts = np.bincount(reading[order[:k]], minlength=len(family.texts))
        value = int(np.argmax(counts))
        if etas[best] < abstain_eta:
            return ImageLabel("", family.name, etas[best], int(counts.max()), min(k, len(order)))
        aps = [reading_aps(order, r, len(f.texts)) for r, f in zip(self.readings, self.families)]  # [n_values] each
        shares = [np.bincount(r, minlength=len(f.texts)) / len(r) for r, f in zip(self.readings, self.families)]
        lifts = [lift(a, p) for a, p in zip(aps, shares)]
        top_family = int(np.argmax([m.max() for m in lifts]))
        top_value = int(np.argmax(lifts[top_family]))
        second = (top_family, top_value) != (best, value) and lifts[top_family][top_value] >= MIN_LIFT
        return ImageLabel(family.texts[value], family.name, etas[best], int(counts.max()), min(k, len(order)),
                          float(aps[best][value]), float(shares[best][value]),
                          self.families[top_family].texts[top_value] if second else "",
                          float(aps[top_family][top_value]) if second else float("nan"),
                          float(shares[top_family][top_value]) if second else float("nan"))


def lift(aps: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """AP above chance, (AP − p) / (1 − p), per value: 0 for a random ranking, 1 for a perfect one; −inf where it is
    undefined (a value no image or every image shows)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (aps - shares) / (1 - shares)
    return np.where((shares > 0) & (shares < 1), out, -np.inf)


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
