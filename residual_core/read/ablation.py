"""Ablation and reweighting by arithmetic on cached arrays: no model call, ever.

Logits are linear in the embedding and argmax ignores each image's norm, so a mask acts on the
baseline logits ``output · W`` by subtracting the logit contribution of what it removes:
  head, mean mode   c_u → mean of c_u over the cached images       Δ = −(s − s̄)ᵀ·(Φ_u W)
  head, zero mode   c_u → 0                                        Δ = −sᵀ·(Φ_u W) − μ_u W
  PC k, mean mode   centred coefficient → its mean                 Δ = −(s_k − s̄_k)·φ_k W
  PC k, zero mode   whole projection c·φ_k → 0                     Δ = −(s_k + μ_u·φ_k)·φ_k W
  λ on PC k         centred coefficient × λ                        Δ = (λ − 1)(s_k − s̄_k)·φ_k W
  MLP / emb         zero: −c·W; mean: −(c − mean c)·W
An empty mask subtracts nothing, so it reproduces the unablated model exactly.
"""

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from residual_core.read.cache import Cache

from residual_core.build.store import copy_f32
from residual_core.engine.units import head_label, mlp_label, pc_label

MODES = ("mean", "zero")


@dataclass(frozen=True)
class AblationMask:
    """What to switch off or rescale. Hashable, so it can key a Streamlit cache."""

    heads: frozenset = frozenset()  # {(layer, head)} removed entirely
    pcs: frozenset = frozenset()  # {(layer, head, pc)} removed
    scales: tuple = ()  # ((layer, head, pc, λ), …) sorted; λ multiplies the centred coefficient
    mlps: frozenset = frozenset()  # {layer}
    embed: bool = False
    mode: str = "mean"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"ablation mode must be one of {MODES}, got {self.mode!r}")

    @property
    def is_empty(self) -> bool:
        return not (self.heads or self.pcs or self.mlps or self.embed or any(s[3] != 1.0 for s in self.scales))

    def check_fits(self, n_layers: int, n_heads: int, n_pcs: int) -> None:
        """ValueError unless every head, PC and MLP the mask names exists in a model of this shape."""
        bad = [head_label(l, h) for l, h in self.heads if l >= n_layers or h >= n_heads]
        bad += [pc_label(l, h, k) for l, h, k in self.pcs | {s[:3] for s in self.scales}
                if l >= n_layers or h >= n_heads or k >= n_pcs]
        bad += [mlp_label(l) for l in self.mlps if l >= n_layers]
        if bad:
            raise ValueError(f"the ablation mask names {', '.join(sorted(bad)[:5])}, not in this "
                             f"{n_layers}-layer × {n_heads}-head model with {n_pcs} PCs per head")

    def scale_of(self, layer: int, head: int, pc: int) -> float:
        for item in self.scales:
            if item[:3] == (layer, head, pc):
                return float(item[3])
        return 1.0

    def with_scale(self, layer: int, head: int, pc: int, value: float) -> "AblationMask":
        rest = [s for s in self.scales if s[:3] != (layer, head, pc)]
        if value != 1.0:
            rest.append((layer, head, pc, float(value)))
        return replace(self, scales=tuple(sorted(rest)))

    def to_dict(self) -> dict:
        return {"heads": sorted(map(list, self.heads)), "pcs": sorted(map(list, self.pcs)),
                "scales": [list(s) for s in self.scales], "mlps": sorted(self.mlps), "embed": self.embed,
                "mode": self.mode}

    @classmethod
    def from_dict(cls, data: dict) -> "AblationMask":
        """Inverse of ``to_dict``; raises ValueError naming the first malformed field (input may be hostile)."""
        if not isinstance(data, dict):
            raise ValueError(f"an ablation mask is a JSON object, got {type(data).__name__}")
        embed, mode = data.get("embed", False), data.get("mode", "mean")
        if not isinstance(embed, bool) or mode not in MODES:
            raise ValueError("an ablation mask's 'embed' must be true/false and 'mode' one of mean/zero")
        scales = tuple(sorted((a, b, c, float(d)) for a, b, c, d in _tuples(data, "scales", 4, last_float=True)))
        return cls(heads=frozenset(_tuples(data, "heads", 2)), pcs=frozenset(_tuples(data, "pcs", 3)), scales=scales,
                   mlps=frozenset(t[0] for t in _tuples(data, "mlps", 1)), embed=embed, mode=mode)


def mask_in_words(mask: AblationMask, most: int = 6) -> str:
    """What a mask switches off or rescales, in one line: 'heads L3H6, L2H0 · MLPs L3MLP · the embedding · 2 PCs'."""
    parts = []
    for what, names in (("heads", [head_label(*lh) for lh in sorted(mask.heads)]),
                        ("MLPs", [mlp_label(l) for l in sorted(mask.mlps)]),
                        ("PCs", [pc_label(*p) for p in sorted(mask.pcs)])):
        if names:
            more = f" and {len(names) - most} more" if len(names) > most else ""
            parts.append(f"{what} " + ", ".join(names[:most]) + more)
    if mask.embed:
        parts.append("the embedding")
    rescaled = [s for s in mask.scales if s[3] != 1.0]
    if rescaled:
        parts.append(f"{len(rescaled)} PC{'s' if len(rescaled) > 1 else ''} rescaled by λ")
    return " · ".join(parts) or "nothing"


MAX_MASK_ITEMS = 100_000


def _tuples(data: dict, name: str, width: int, last_float: bool = False) -> list[tuple]:
    """``data[name]`` as a list of ``width``-tuples of non-negative ints (the last a finite float if asked)."""
    items = data.get(name, [])
    if not isinstance(items, list) or len(items) > MAX_MASK_ITEMS:
        raise ValueError(f"an ablation mask's {name!r} must be a list")
    out = []
    for item in items:
        item = [item] if width == 1 and not isinstance(item, list) else item
        if not isinstance(item, list) or len(item) != width:
            raise ValueError(f"an ablation mask's {name!r} holds {item!r}, not {width} numbers")
        ints = item[:-1] if last_float else item
        ok = all(type(v) is int and 0 <= v < 1_000_000 for v in ints)
        if last_float:
            value = item[-1]
            ok = ok and type(value) in (int, float) and abs(value) < 1e6 and value == value
        if not ok:
            raise ValueError(f"an ablation mask's {name!r} holds {item!r}, not non-negative integers")
        out.append(tuple(item))
    return out


@dataclass(frozen=True)
class AblationSummary:
    """What an ablation does to the cached images' predictions (any cache size: logits are not kept)."""

    predictions: np.ndarray  # [n_images]
    accuracy: float
    per_class_accuracy: np.ndarray  # [n_classes] (nan for a class with no image)
    baseline_accuracy: float

    @property
    def delta(self) -> float:
        return self.accuracy - self.baseline_accuracy


@dataclass(frozen=True)
class AblationResult(AblationSummary):
    logits: np.ndarray  # [n_images, n_classes] unnormalised (argmax-equivalent to CLIP's)


@dataclass(frozen=True)
class Readout:
    """Cached arrays seen through a linear readout R (classifier W for logits, identity for embeddings)."""

    base: np.ndarray  # [n, X]
    pc: np.ndarray  # [n_heads_total, n_pcs, X]
    mean: np.ndarray  # [n_heads_total, X]
    matrix: np.ndarray | None  # R [d_embed, X]; None = identity


def readout(cache: Cache, logits: bool) -> Readout:
    if logits:
        return Readout(cache.base_logits, cache.pc_logits, cache.mean_logits, cache.classifier)
    return Readout(cache.output, cache.head_components, cache.head_mean, None)


def as_tensor(array) -> torch.Tensor:
    # Matrix products run in torch: numpy's BLAS threads right after torch's OpenMP ones spin against
    # each other on small machines (measured: a 0.2 ms product took 8 ms). Inputs are read-only cache arrays
    # that are never written through the tensor, so torch's non-writable warning does not apply.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


def pc_coefficients(cache: Cache, unit: int, mode: str, pcs: np.ndarray | None = None) -> torch.Tensor:
    """Coefficients removed when PCs of a head are ablated: [len(pcs), n_images] (float32 tensor).

    Mean mode centres on ``cache.score_mean`` (a probe's cache carries the dataset's there)."""
    scores = as_tensor(copy_f32(cache.head_scores[unit], pcs))  # [m, n]
    pcs = np.arange(cache.n_pcs) if pcs is None else pcs
    if mode == "mean":
        return scores - as_tensor(cache.score_mean[unit, pcs])[:, None]
    return scores + as_tensor(cache.mean_proj[unit, pcs].astype(np.float32))[:, None]


def apply_mask(cache: Cache, mask: AblationMask, out: Readout, stats: Cache | None = None) -> np.ndarray:
    """The readout of ``cache``'s images under ``mask``: [n_images, X]. Mean replacements are ``stats``'s
    means (default: the whole cache's, also for ``rows`` of it); probed images pass the dataset's cache there."""
    stats = cache.whole if stats is None else stats
    mask.check_fits(cache.n_layers, cache.n_heads, cache.n_pcs)
    result = torch.tensor(np.asarray(out.base, dtype=np.float32))
    index = cache.units.head_index
    for layer, head in mask.heads:
        u = index(layer, head)
        if mask.mode == "zero":  # the whole contribution: mean + every coefficient
            coef = as_tensor(copy_f32(cache.head_scores[u]))  # [n_pcs, n]
            result -= as_tensor(out.mean[u])
        else:
            coef = pc_coefficients(cache, u, "mean")
        result -= coef.T @ as_tensor(out.pc[u])
    per_head: dict[int, dict[int, float]] = {}
    for layer, head, pc in mask.pcs:
        per_head.setdefault(index(layer, head), {})[pc] = 0.0
    for layer, head, pc, value in mask.scales:
        per_head.setdefault(index(layer, head), {}).setdefault(pc, value)
    for u, factors in per_head.items():
        if cache.units.head_at(u) in mask.heads:
            continue
        for kind, pcs in (("zero", [k for k, f in factors.items() if f == 0.0 and mask.mode == "zero"]),
                          ("mean", [k for k, f in factors.items() if not (f == 0.0 and mask.mode == "zero")])):
            if pcs:
                pcs_arr = np.array(sorted(pcs))
                coef = pc_coefficients(cache, u, kind, pcs_arr)  # [m, n]
                change = torch.tensor([factors[k] - 1.0 for k in pcs_arr], dtype=torch.float32)
                result += coef.T @ (change[:, None] * as_tensor(out.pc[u, pcs_arr]))
    others = [("mlp", layer) for layer in mask.mlps] + ([("emb", -1)] if mask.embed else [])
    for kind, layer in others:
        contrib = as_tensor(copy_f32(cache.mlps[:, layer] if kind == "mlp" else cache.embed))  # [n, d_embed]
        removed = contrib if mask.mode == "zero" else contrib - as_tensor(stats.unit_mean(layer if kind == "mlp" else None))
        result -= removed if out.matrix is None else removed @ as_tensor(out.matrix)
    return result.numpy()


def per_class_accuracy(cache: Cache, predictions: np.ndarray) -> np.ndarray:
    """[n_classes] share of each class's images predicted right (nan for a class with no image)."""
    n_classes = cache.classifier.shape[1]
    counts = np.bincount(cache.labels, minlength=n_classes)
    hits = np.bincount(cache.labels, weights=predictions == cache.labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def confusion(cache: Cache, predictions: np.ndarray) -> np.ndarray:
    """[n_classes (true), n_classes (predicted)] image counts."""
    n_classes = cache.classifier.shape[1]
    return np.bincount(cache.labels * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, -1)


def _summary(cache: Cache, predictions: np.ndarray) -> AblationSummary:
    return AblationSummary(predictions=predictions, accuracy=float((predictions == cache.labels).mean()),
                           per_class_accuracy=per_class_accuracy(cache, predictions),
                           baseline_accuracy=cache.baseline_accuracy())


def result_from_logits(cache: Cache, logits: np.ndarray, predictions: np.ndarray | None = None) -> AblationResult:
    """``predictions`` [n]: ``logits.argmax(1)`` where the caller already knows it."""
    if predictions is None:
        predictions = logits.argmax(1)  # numpy's runs at memory bandwidth; torch's took 5× longer (50 k × 1,000)
    return AblationResult(logits=logits, **vars(_summary(cache, predictions)))


def _streamed(cache: Cache, logits_of, progress=None) -> AblationSummary:
    """Predictions from ``logits_of(chunk) -> [n_chunk, n_classes]``, one chunk of images at a time."""
    parts = []
    for i, part in enumerate(cache.chunks()):
        parts.append(np.asarray(logits_of(part)).argmax(1))
        if progress is not None:
            progress(min((i + 1) * part.n_images, cache.n_images) / max(cache.n_images, 1))
    return _summary(cache, np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


def keep_heads(cache: Cache, heads, mode: str = "zero") -> AblationSummary:
    """Keep only ``heads`` (flat indices); every other unit, heads, MLPs and emb alike, is removed (zero) or
    replaced by its mean over the cached images (mean): the reference's ``Residual.ablate(keep_units, …)``.

    The same semantics as ``evaluate`` with every other unit in the mask, computed by summing the kept heads
    (so a single kept head is not the small difference of two large sums), a chunk of images at a time.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    keep = np.zeros(cache.n_layers * cache.n_heads, dtype=bool)
    keep[np.asarray(heads, dtype=int)] = True
    constant = torch.zeros(cache.classifier.shape[1])  # [n_classes] what every image gets alike
    for u in np.flatnonzero(keep):
        constant += as_tensor(cache.mean_logits[u])
    if mode == "mean":
        rest = ~keep
        heads_mean = cache.mean_logits[rest].sum(0) + np.einsum("uk,ukc->c", cache.score_mean[rest],
                                                                 cache.pc_logits[rest])  # [n_classes]
        others = cache.unit_mean(None) + sum(cache.unit_mean(layer) for layer in range(cache.n_layers))  # [d_embed]
        constant += as_tensor(heads_mean.astype(np.float32)) + as_tensor(others) @ as_tensor(cache.classifier)

    def logits_of(part: Cache) -> torch.Tensor:
        logits = constant.expand(part.n_images, -1).clone()  # [n_chunk, n_classes]
        for u in np.flatnonzero(keep):
            logits += as_tensor(copy_f32(part.head_scores[u])).T @ as_tensor(cache.pc_logits[u])
        return logits.numpy()

    return _streamed(cache, logits_of)


def evaluate(cache: Cache, mask: AblationMask) -> AblationResult:
    """Accuracy, predictions, per-class accuracy and logits of the cached images under ``mask``, in RAM
    (``evaluate_streamed`` answers the same without the logits for a cache of any size)."""
    return result_from_logits(cache, apply_mask(cache, mask, readout(cache, logits=True)))


def evaluate_streamed(cache: Cache, mask: AblationMask, progress=None) -> AblationSummary:
    """``evaluate`` a chunk of images at a time: memory bounded by the chunk, not by the cache.
    ``progress(fraction)`` is called after each chunk."""
    mask.check_fits(cache.n_layers, cache.n_heads, cache.n_pcs)
    return _streamed(cache, lambda part: apply_mask(part, mask, readout(part, logits=True)), progress)


def evaluate_projected(cache: Cache, bases: dict[int, np.ndarray]) -> AblationSummary:
    """Each head u in ``bases`` replaced by its mean plus the projection of its centred coefficients on the span
    of ``bases[u]`` ([m, n_pcs], orthonormal rows in its PC coordinates); every other unit as it is. TextSpan's
    completeness check: Δlogits = (s − s̄)(QᵀQ − I)(Φ W), streamed a chunk at a time."""
    def logits_of(part: Cache) -> np.ndarray:
        logits = as_tensor(np.asarray(part.base_logits, dtype=np.float32)).clone()  # [n_chunk, n_classes]
        for u, basis in bases.items():
            centred = pc_coefficients(part, u, "mean").T  # [n_chunk, n_pcs]
            q = as_tensor(np.asarray(basis, dtype=np.float32).reshape(-1, cache.n_pcs))  # [m, n_pcs]
            logits += ((centred @ q.T) @ q - centred) @ as_tensor(cache.pc_logits[u])
        return logits.numpy()

    return _streamed(cache, logits_of)


def ablate_embeddings(cache: Cache, mask: AblationMask, stats: Cache | None = None) -> np.ndarray:
    """Image embeddings [n_images, d_embed] under ``mask`` (unnormalised, like encode_image).

    ``stats``: the cache whose means replace what mean mode removes (default: ``cache`` itself).
    """
    return apply_mask(cache, mask, readout(cache, logits=False), stats)
