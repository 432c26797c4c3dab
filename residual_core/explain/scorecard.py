"""How right is each explanation: scores against the demo world's ground truth.

Every demo-world scene is drawn from known factors (shape, colour, size, position, texture, count, digit), so every
cached image of the world has all seven labels, recomputed from the world's seed (``factor_labels``). A *unit* is
an explanation: a direction in one head's PC coordinates with a per-image score and a text label (a PC pole and its
nearest text; a TextSpan text; a weight direction and its pursuit text; a random direction or label for the
baselines). Per unit and factor f:
  η²_f        between-value variance of the score over its total variance (the share factor f explains);
  AP, AUROC   of the score for each value of each factor, one value against the rest;
  purity@k    the share of the top k images (the pole the dashboard shows, k = 8) sharing their modal value of the
              unit's factor (argmax η²);
  label       right when the text names that modal value (read with the world's own vocabulary, ``named_values``);
  label AP    over every image, the AP of the score for the value the whole label names (a second part included),
              its best; and the same above chance, (AP − p) / (1 − p) with p that value's share of the images;
  causal      the factor whose accuracy drops most when the unit's head is mean-ablated (per-factor caches of the
              same images) is the unit's factor.
"""

import re
from dataclasses import dataclass

import numpy as np

from residual_core.data.world import FACTORS, NUMBER_WORDS
from residual_core.read.cache import Cache
from residual_core.engine.units import head_label

PURITY_K = 8
N_PER_HEAD = 3  # units per head and method: PCs (each with both poles), TextSpan texts, weight directions (both signs)
AP_COVERAGE = 0.3  # a factor value is covered when some unit scores it at AP ≥ 0.3 (saev's protocol)

_SHAPES, _COLOURS, _NUMBERS = FACTORS["shape"], FACTORS["colour"], NUMBER_WORDS  # the world's own vocabulary
_COUNTED = (*_SHAPES, "shape", "object")  # what a number word may count: a named shape, or a shape or object
_ADJECTIVES = (*_COLOURS, "small", "large", "big", "tiny")


def named_values(text: str) -> dict[str, set[str]]:
    """The demo world's factor values a text names, in the world's own vocabulary: {factor: {value, …}}. 'at the top'
    names both top positions; a number word (or 'a') names a count when a shape, or the word 'shape' or 'object',
    follows it past any colour or size words ('two shapes' is the world's own class name for a count of two); a number
    names a digit after 'number'/'digit'."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    found: dict[str, set[str]] = {}

    def add(factor: str, *values: str) -> None:
        found.setdefault(factor, set()).update(values)

    for i, word in enumerate(words):
        stem = next((w for w in (word, word[:-2], word[:-1]) if w in _COUNTED), word)  # cross, crosses, stars
        if stem in _SHAPES:
            add("shape", stem)
        if stem in _COUNTED:
            before = i - 1
            while before >= 0 and words[before] in _ADJECTIVES:  # two red circles, a large shape
                before -= 1
            if before >= 0 and words[before] in FACTORS["count"]:
                add("count", words[before])
            elif before >= 0 and words[before] in ("a", "an"):
                add("count", "one")
        if word in _COLOURS:
            add("colour", word)
        if word in ("small", "large", "big", "tiny"):
            add("size", "large" if word in ("large", "big") else "small")
        if word in FACTORS["texture"]:
            add("texture", word)
        if i and words[i - 1] in ("number", "digit") and (word.isdigit() or word in _NUMBERS):
            add("digit", word if word.isdigit() else str(_NUMBERS.index(word)))
    joined = " ".join(words)
    for vertical in ("top", "bottom"):
        for horizontal in ("left", "right"):
            if f"{vertical} {horizontal}" in joined:
                add("position", f"{vertical} {horizontal}")
    if not found.get("position"):
        for word, values in (("top", ("top left", "top right")), ("bottom", ("bottom left", "bottom right")),
                             ("left", ("top left", "bottom left")), ("right", ("top right", "bottom right")),
                             ("centre", ("centre",)), ("center", ("centre",))):
            if word in words:
                add("position", *values)
    return found


def factor_labels(cache: Cache) -> dict[str, np.ndarray]:
    """{factor: [n_images] value index} for a demo-world cache, from the world's seed; ValueError for another one."""
    from residual_core.data import world

    dataset, split = cache.manifest["spec"]["dataset"], cache.manifest["spec"]["split"]
    if not world.is_world_dataset(dataset):
        raise ValueError(f"{dataset} has no ground truth: only the demo world's caches can be scored against it")
    scenes = world.scenes_of(world.world_split(split, dataset))
    chosen = [scenes[int(p)] for p in np.asarray(cache.positions)]
    return {f: np.array([s.factor(f) for s in chosen], np.int64) for f in world.FACTORS}


@dataclass(frozen=True)
class Unit:
    method: str
    layer: int
    head: int
    name: str  # e.g. "PC1 +", "text 2", "direction 1 −"
    text: str  # its label
    scores: np.ndarray  # [n_images] the unit's per-image score (larger: more of what the label says)
    also: str = ""  # a label's second part: what the score ranks first over every image (scored by label AP only)

    @property
    def label(self) -> str:
        return f"{head_label(self.layer, self.head)} {self.name}"


def eta_squared(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of the variance of ``scores`` [n] explained by the groups ``labels`` [n]."""
    centred = scores - scores.mean()
    total = float(centred @ centred)
    if total <= 0:
        return 0.0
    counts = np.bincount(labels)
    means = np.bincount(labels, weights=scores) / np.maximum(counts, 1)
    return float((counts * (means - scores.mean()) ** 2).sum() / total)


def reading_aps(order: np.ndarray, reading: np.ndarray, n_values: int) -> np.ndarray:
    """[n_values] the AP of a ranking for each value one against the rest: ``order`` [n] the images best first,
    ``reading`` [n] each image's value. One stable sort groups each value's positives in rank order, so no
    [n, n_values] table is built (a 1,000-class dataset of 50,000 images stays a few milliseconds a unit). A value no
    image shows gets nan."""
    ranked = reading[order]  # [n] the value of the image at each rank
    small = ranked.astype(np.int16) if n_values <= np.iinfo(np.int16).max else ranked  # int16 sorts by radix: ~7×
    by_value = np.argsort(small, kind="stable")  # [n] ranks grouped by value, ascending within a value
    counts = np.bincount(ranked, minlength=n_values)  # [n_values]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [n_values] where each value's group begins
    values = ranked[by_value]
    nth = np.arange(len(ranked)) - starts[values]  # [n] 0-based index of each positive within its value
    precision = (nth + 1) / (by_value + 1)  # precision at each positive's rank
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(values, weights=precision, minlength=n_values) / counts


def value_aps(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AP [n_values], AUROC [n_values]) of ``scores`` for each value one against the rest (nan for a value absent
    or present everywhere): AP as the mean precision at each positive (``reading_aps``), AUROC as the Mann-Whitney
    statistic (scikit-learn's definitions; the same numbers wherever scores do not tie)."""
    n = len(scores)
    n_values = int(labels.max()) + 1
    ap = reading_aps(np.argsort(-scores, kind="stable"), labels, n_values)
    positives = np.bincount(labels, minlength=n_values).astype(np.float64)  # [n_values]
    valid = (positives > 0) & (positives < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ranks = np.empty(n)
        ranks[np.argsort(scores, kind="stable")] = np.arange(1, n + 1)  # ascending ranks
        rank_sums = np.bincount(labels, weights=ranks, minlength=n_values)
        auroc = (rank_sums - positives * (positives + 1) / 2) / (positives * (n - positives))
    return np.where(valid, ap, np.nan), np.where(valid, auroc, np.nan)


@dataclass(frozen=True)
class UnitScore:
    unit: Unit
    eta: dict  # {factor: η²}
    factor: str  # argmax η²
    ap: dict  # {factor: [n_values] AP}
    auroc: dict
    modal: str  # the top images' modal value of ``factor``
    purity: float
    named: dict  # what the label names
    label_right: bool  # the label names the top images' modal value (any of them, where several tie)
    causal: str | None  # the factor the unit's head's ablation hurts most (None without per-factor caches)
    tied: bool = False  # several values share the top images' largest count
    label_ap: float = 0.0  # AP over every image of the unit's score for the value the label names (its best; 0: none)
    best_ap: float = 0.0  # the ceiling: the unit's best AP for any single value, read with the ground truth
    label_lift: float = 0.0  # the same above chance, (AP − p) / (1 − p) with p the value's share of the images
    best_lift: float = 0.0

    @property
    def labelled(self) -> bool:
        return bool(self.unit.text)


def score_unit(unit: Unit, labels: dict[str, np.ndarray], values: dict[str, tuple[str, ...]],
               causal: str | None = None, k: int = PURITY_K) -> UnitScore:
    eta = {f: eta_squared(unit.scores, y) for f, y in labels.items()}
    factor = max(eta, key=eta.get)
    aps = {f: value_aps(unit.scores, y) for f, y in labels.items()}
    top = np.argsort(-unit.scores, kind="stable")[:k]
    counts = np.bincount(labels[factor][top], minlength=len(values[factor]))
    modal = values[factor][int(np.argmax(counts))]
    tied_values = {values[factor][i] for i in np.flatnonzero(counts == counts.max())}
    named = named_values(unit.text)
    ap = {f: a for f, (a, _) in aps.items()}
    shares = {f: np.bincount(y, minlength=len(values[f])) / len(y) for f, y in labels.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        lifts = {f: (ap[f] - shares[f]) / (1 - shares[f]) for f in ap}  # nan where AP is (absent or constant value)
    ranked = named_values(f"{unit.text} ; {unit.also}") if unit.also else named  # what the whole label names

    def best_named(table: dict) -> float:
        return max((float(table[f][values[f].index(v)]) for f, vs in ranked.items() for v in vs
                    if not np.isnan(table[f][values[f].index(v)])), default=0.0)

    best_ap = float(np.nanmax(np.concatenate([a for a in ap.values()]), initial=0.0))
    best_lift = float(np.nanmax(np.concatenate([a for a in lifts.values()]), initial=0.0))
    return UnitScore(unit, eta, factor, ap, {f: b for f, (_, b) in aps.items()}, modal,
                     float(counts.max() / max(len(top), 1)), named, bool(tied_values & named.get(factor, set())),
                     causal, len(tied_values) > 1, best_named(ap), best_ap, max(best_named(lifts), 0.0), best_lift)
