"""What needs no ground truth, for any dataset: how far the explanation methods agree on each head, and how pure
each PC pole's images are by the dataset's class.

Per head, each method names a set of bank texts: nearest texts per PC (both poles' first text of the top ``n`` PCs),
TextSpan (its first 2n texts) and the weights' directions (the first pursuit text of each sign of the top ``n``
directions). Two methods agree on a head by the Jaccard overlap of their sets; the data and the weights agree by
the weighted spectral cosine of the head's data PCs and its write directions (weights_reading.agreement). On the
demo world, where labels can be checked, docs/scorecard.md measures how far agreement predicts a right label.
"""

from dataclasses import dataclass

import numpy as np

from residual_core.read.cache import Cache
from residual_core.explain.scorecard import N_PER_HEAD, PURITY_K


@dataclass(frozen=True)
class HeadAgreement:
    layer: int
    head: int
    nearest: tuple[int, ...]  # bank rows named by nearest texts per PC, in order, each once
    textspan: tuple[int, ...]  # … by TextSpan
    weights: tuple[int, ...] | None  # … by the weights' directions (None: weights not read)
    data_weights: float  # spectral cosine of data PCs and write directions (nan: weights not read)

    def jaccard(self, first: str, second: str) -> float:
        """The overlap of two methods' texts ('nearest', 'textspan', 'weights'); nan where one is missing."""
        a, b = getattr(self, first), getattr(self, second)
        if a is None or b is None or not (set(a) | set(b)):
            return float("nan")
        return len(set(a) & set(b)) / len(set(a) | set(b))

    def shared(self) -> tuple[int, ...]:
        """The texts at least two methods name, in the first order they appear."""
        named = [t for t in (self.nearest, self.textspan, self.weights) if t is not None]
        return tuple(dict.fromkeys(r for r in sum(named, ()) if sum(r in t for t in named) >= 2))


def head_agreement(cache: Cache, readings=None, n: int = N_PER_HEAD, spans=None) -> tuple[HeadAgreement, ...]:
    """Every head's agreement between methods; ``readings``: weights_reading.read_weights of the cache's model
    against its bank, or None where the weights are not on this machine; ``spans``: describe.textspan of the cache
    with at least 2n texts per head, where the caller has it."""
    from residual_core.explain.describe import textspan
    from residual_core.explain.weights_reading import agreement

    k = min(n, cache.n_pcs)
    spans = textspan(cache, 2 * n) if spans is None else spans
    out = []
    for u, span in enumerate(spans):
        nearest = [int(idx[u, j, 0]) for j in range(k) for idx in (cache.text_pos_idx, cache.text_neg_idx)]
        weights, cosine = None, float("nan")
        if readings is not None:
            read = readings[u]
            weights = tuple(dict.fromkeys(side[0] for pair in read.texts[:n] for side in pair if side))
            cosine = agreement(read.directions, read.singular, cache.head_components[u], cache.head_eigenvalues[u])
        out.append(HeadAgreement(span.layer, span.head, tuple(dict.fromkeys(nearest)), tuple(span.texts[:2 * n]),
                                 weights, cosine))
    return tuple(out)


@dataclass(frozen=True)
class PolePurity:
    layer: int
    head: int
    pc: int  # 0-based
    sign: str  # "+" or "−"
    purity: float  # the share of the pole's top k images in its most common class
    modal: str  # that class


def pole_purity(cache: Cache, n: int = N_PER_HEAD, k: int = PURITY_K) -> tuple[PolePurity, ...]:
    """Both poles of each head's top ``n`` PCs: how many of their first ``k`` images (the Head explorer shows 8)
    share a class."""
    labels = np.asarray(cache.labels)
    out = []
    for u in range(cache.units.n_heads_total):
        layer, head = cache.units.head_at(u)
        for j in range(min(n, cache.n_pcs)):
            for sign, rows in (("+", cache.pole_top[u, j][:k]), ("−", cache.pole_bottom[u, j][:k])):
                counts = np.bincount(labels[np.asarray(rows)], minlength=len(cache.classnames))
                modal = int(np.argmax(counts))
                out.append(PolePurity(layer, head, j, sign, float(counts[modal] / max(len(rows), 1)),
                                      cache.classnames[modal]))
    return tuple(out)


MEASURES = {  # the page's columns and the scorecard's rows: name -> a head's value
    "nearest ↔ TextSpan": lambda h: h.jaccard("nearest", "textspan"),
    "nearest ↔ weights": lambda h: h.jaccard("nearest", "weights"),
    "TextSpan ↔ weights": lambda h: h.jaccard("textspan", "weights"),
    "data ↔ weights": lambda h: h.data_weights,
}


@dataclass(frozen=True)
class Predicts:
    rho: float  # Spearman's ρ over heads between the measure and the head's label accuracy
    p_value: float
    accuracy_agreeing: float  # label accuracy of the heads at or above the measure's median
    accuracy_disagreeing: float  # … below it
    heads: int


def agreement_predicts(heads: tuple[HeadAgreement, ...], scores) -> dict[str, Predicts]:
    """On ground truth: does agreement between methods tell which heads' labels to trust? ``scores``: scored units
    (residual_core.explain.scorecard.UnitScore) of any methods; a head's label accuracy is the share of its units labelled
    right. Measures with no value (weights not read) are left out."""
    from scipy.stats import spearmanr

    right: dict[tuple[int, int], list[bool]] = {}
    for s in scores:
        right.setdefault((s.unit.layer, s.unit.head), []).append(s.label_right)
    kept = [h for h in heads if (h.layer, h.head) in right]
    accuracy = np.array([np.mean(right[(h.layer, h.head)]) for h in kept])  # [n_heads]
    out = {}
    for name, measure in MEASURES.items():
        values = np.array([measure(h) for h in kept], np.float64)  # [n_heads]
        if len(values) < 3 or np.isnan(values).any() or np.ptp(values) == 0:
            continue
        rho, p = spearmanr(values, accuracy)
        agreeing = values >= np.median(values)
        out[name] = Predicts(float(rho), float(p), float(accuracy[agreeing].mean()),
                             float(accuracy[~agreeing].mean()) if (~agreeing).any() else float("nan"), len(kept))
    return out


def agreement_report(cache: Cache, readings=None, weights_missing: str = "") -> dict:
    """Off the demo world, what needs no ground truth, as plain data: every head's agreement between methods (and
    the texts two methods name) and each pole's purity by class, with their means."""
    heads = head_agreement(cache, readings)
    rows = [{"head": f"L{h.layer}H{h.head}"} | {k: _rounded(m(h)) for k, m in MEASURES.items()}
            | {"shared_texts": [cache.texts[t] for t in h.shared()]} for h in heads]
    poles = sorted(pole_purity(cache), key=lambda p: -p.purity)
    means = {k: _rounded(float(np.nanmean([m(h) for h in heads]))) if any(m(h) == m(h) for h in heads) else None
             for k, m in MEASURES.items()}
    return {"heads": rows, "mean_agreement": means, "weights_missing": weights_missing,
            "pole_purity_mean": _rounded(float(np.mean([p.purity for p in poles]))) if poles else None,
            "purest_poles": [{"pole": f"L{p.layer}H{p.head} PC{p.pc + 1} {p.sign}", "purity": _rounded(p.purity),
                              "class": p.modal} for p in poles[:10]]}


def _rounded(value: float):
    return None if value != value else round(value, 4)
