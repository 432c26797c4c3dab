"""Head specialisation (SPEC §8): score heads on a val cache, evaluate the top-k heads on a test cache.

Scores, each [n_heads_total] (higher = more task-relevant):
  S      accuracy of the head's contribution alone, argmax_c ⟨c_u, t_c⟩
  U|T    mean over classes of Pearson_n(c_u·q_c, o·q_c), q_c an orthonormal basis of the class span
         (QR of the classifier), o = Σ heads c_u
  U      the same in the canonical basis of the joint space, against the full output Σ_all c_u
  random N(0, 1), one draw per seed
Top-k evaluation classifies Σ_{u∈top-k} c_u (zero ablation of the rest) or adds the test-set mean of
every other head (mean ablation). All arithmetic on cached coefficients: c_u = μ_u + s_uᵀΦ_u.
"""

import numpy as np
import torch

from residual_core.ablation import AblationMask, _t, evaluate
from residual_core.cache import Cache, as_f32

METHODS = ("S", "U|T", "U", "random")


def k_values(n_heads: int) -> list[int]:
    """k for 1 head, 1 % (at least 2), 5 %, 10 %, 25 %, 50 %, 75 % of the heads (truncated, SPEC §8)."""
    ks = [1, max(2, int(0.01 * n_heads))] + [max(1, int(p * n_heads)) for p in (0.05, 0.1, 0.25, 0.5, 0.75)]
    return sorted(set(ks))


def _pearson_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of matching columns of a, b [n, m] -> [m] (0 where a column is constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-30)
    return (a * b).sum(0) / denom


def _heads_total(cache: Cache) -> torch.Tensor:
    """o = Σ heads c_u = output − emb − Σ MLPs: [n, d_embed]."""
    return _t(cache.output) - _t(as_f32(cache.embed)) - _t(as_f32(cache.mlps)).sum(1)


def _head_in_basis(cache: Cache, unit: int, basis: torch.Tensor) -> torch.Tensor:
    """c_u · basis for every image: [n, m] from the cached coefficients; basis [d_embed, m]."""
    scores = _t(as_f32(cache.head_scores[unit]))  # [n_pcs, n]
    comps = _t(cache.head_components[unit])  # [n_pcs, d_embed]
    return _t(cache.head_mean[unit]) @ basis + scores.T @ (comps @ basis)


def head_scores(cache: Cache, method: str, seed: int = 0) -> np.ndarray:
    """One score per head (flat, layer-major) by S, U|T, U or random."""
    n_total = cache.n_layers * cache.n_heads
    if method == "S":
        return np.asarray(cache.head_alone_acc, dtype=np.float64)
    if method == "random":
        return np.random.default_rng(seed).standard_normal(n_total)
    if method == "U|T":
        basis, _ = torch.linalg.qr(_t(cache.classifier))  # [d_embed, n_classes], orthonormal columns
        target = _heads_total(cache) @ basis
    elif method == "U":
        basis = torch.eye(cache.head_components.shape[-1])
        target = _t(cache.output)
    else:
        raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
    return np.array([_pearson_columns(_head_in_basis(cache, u, basis), target).mean().item() for u in range(n_total)])


def topk_accuracy(cache: Cache, heads: np.ndarray, mode: str = "zero") -> float:
    """Accuracy of Σ_{u∈heads} c_u (zero) or of that plus every other head's mean (mean)."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    keep = np.zeros(cache.n_layers * cache.n_heads, dtype=bool)
    keep[np.asarray(heads, dtype=int)] = True
    logits = torch.zeros(cache.n_images, cache.classifier.shape[1])
    for u in np.flatnonzero(keep):
        logits += _t(cache.mean_logits[u]) + _t(as_f32(cache.head_scores[u])).T @ _t(cache.pc_logits[u])
    if mode == "mean":
        rest = ~keep
        logits += _t(cache.mean_logits[rest].sum(0) + np.einsum("uk,ukc->c", cache.score_mean[rest],
                                                                 cache.pc_logits[rest]))
    return float((logits.argmax(1).numpy() == cache.labels).mean())


def specialize(val: Cache, test: Cache, n_random: int = 10) -> dict:
    """Scores on ``val``, top-k accuracy curves on ``test`` for every method, plus the H and B baselines."""
    if (val.n_layers, val.n_heads) != (test.n_layers, test.n_heads):
        raise ValueError("val and test caches come from different architectures")
    n_total = val.n_layers * val.n_heads
    ks = k_values(n_total)
    report: dict = {"k": ks, "n_heads": n_total, "scores": {}, "curves": {}}
    for method in ("S", "U|T", "U"):
        scores = head_scores(val, method)
        order = np.argsort(-scores, kind="stable")
        report["scores"][method] = scores.round(6).tolist()
        report["curves"][method] = {mode: [topk_accuracy(test, order[:k], mode) for k in ks] for mode in ("zero", "mean")}
    random_curves = {mode: [] for mode in ("zero", "mean")}
    for seed in range(n_random):
        order = np.argsort(-head_scores(val, "random", seed), kind="stable")
        for mode in random_curves:
            random_curves[mode].append([topk_accuracy(test, order[:k], mode) for k in ks])
    report["curves"]["random"] = {mode: {"mean": np.mean(v, 0).tolist(), "std": np.std(v, 0).tolist()}
                                  for mode, v in random_curves.items()}
    everything = np.arange(n_total)
    others = AblationMask(mlps=frozenset(range(test.n_layers)), embed=True, mode="mean")
    report["baselines"] = {"H_zero": topk_accuracy(test, everything, "zero"),
                           "H_mean": evaluate(test, others).accuracy, "B": test.baseline_accuracy()}
    return report



def top_k(n_heads: int, fraction: float = 0.05) -> int:
    """Size of a top-``fraction`` head set: at least 2, so that overlaps are not all-or-nothing."""
    return max(2, int(fraction * n_heads))


def top_heads(cache: Cache, k: int, method: str = "S") -> list[int]:
    """The k best heads by ``method`` (flat, layer-major indices; ties broken by head order)."""
    return [int(u) for u in np.argsort(-head_scores(cache, method), kind="stable")[:k]]


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def jaccard_matrix(caches: list[Cache], fraction: float = 0.05, method: str = "S") -> tuple[np.ndarray, list]:
    """Jaccard overlap [n, n] of the caches' top-``fraction`` head sets (SPEC §8), and those sets."""
    if len({(c.n_layers, c.n_heads) for c in caches}) > 1:
        raise ValueError("Jaccard across datasets needs caches of one architecture")
    sets = [top_heads(c, top_k(c.n_layers * c.n_heads, fraction), method) for c in caches]
    return np.array([[jaccard(a, b) for b in sets] for a in sets]), sets
