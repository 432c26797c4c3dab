"""Head specialisation (SPEC §8) as the reference computes it: score heads on val, evaluate top-k on test.

Reference: Flegyas/ResiDual ``experiments/experiment3.py`` (scores ``supervised``, ``corr_task``,
``corr_full_out``, ``random_i``), ``src/residual/decomposition/unit_distance.py`` (``score_unit_correlation``)
and ``src/residual/residual.py`` (``Residual.ablate``). Scores, each [n_heads_total] (higher = more relevant):
  S      accuracy of the head's contribution alone, argmax_c ⟨c_u, t_c⟩                      (supervised)
  U|T    mean over q of Pearson_n(c_u·q, o·q), q an orthonormal basis of the class embeddings
         (QR of the classifier), o = Σ_heads c_u                                            (corr_task)
  U      the same with q a QR basis of the val set's full outputs Σ_all c_u                 (corr_full_out)
  random N(0, 1) from torch's generator seeded 0..9: the reference's own random head sets   (random_i)
Top-k evaluation keeps the k best heads and removes every other unit (zero) or replaces it, emb and MLPs
included, by its mean over the test images (mean): ``ablation.keep_heads``.

Conventions that differ from the reference, each switched by ``reference_compat`` (README table):
  * Pearson scale: the reference divides the covariance by n but the standard deviations by n − 1, so its
    scores are (n − 1)/n times Pearson's; the default is Pearson's exactly (same ranking).
  * ties: the reference takes ``torch.topk`` (tie order left to the kernel); the default breaks ties by
    head order (layer-major), the same on every device. S ties often (heads at chance share one accuracy).
  * U's basis and the all-heads mean baseline H_mean: the reference starts both from the sum of its stored units;
    the default starts from ``encode_image``'s output. They differ by the storage error (fp16 caches: U by up to
    2.5e-3, H_mean by about 0.05 points); compat sums the stored units (``stored_sum``).
"""

import numpy as np
import torch

from residual_core.read.ablation import AblationMask, as_tensor, evaluate_streamed, keep_heads
from residual_core.read.cache import Cache
from residual_core.build.store import as_f32, copy_f32
from residual_core.engine.progress import steps

METHODS = ("S", "U|T", "U", "random")
REFERENCE_NAMES = {"S": "supervised", "U|T": "corr_task", "U": "corr_full_out", "random": "random_<seed>"}


def k_values(n_heads: int) -> list[int]:
    """k for 1 head, 1 % (at least 2), 5 %, 10 %, 25 %, 50 %, 75 % of the heads (truncated, SPEC §8)."""
    ks = [1, max(2, int(0.01 * n_heads))] + [max(1, int(p * n_heads)) for p in (0.05, 0.1, 0.25, 0.5, 0.75)]
    return sorted(set(ks))


def _centred(cache: Cache, unit: int) -> torch.Tensor:
    """A head's coefficients centred on the dataset's mean coefficient: [n_pcs, n] (float64). Constants leave
    a Pearson correlation unchanged, and near-zero means keep the one-pass sums below exact."""
    return as_tensor(copy_f32(cache.head_scores[unit])).double() - as_tensor(cache.score_mean[unit]).double()[:, None]


def _unit_correlation(cache: Cache, basis: torch.Tensor, reference_compat: bool) -> np.ndarray:
    """Per head: mean over basis columns of Pearson_n(c_u·q, o·q), o = Σ_heads c_u, from sums accumulated a
    chunk of images at a time (memory O(chunk · k), independent of the number of images).

    With s_u [n_pcs, n] a head's centred coefficients and A_u = Φ_u Q [n_pcs, k] its PCs in the basis, the head
    in the basis is s_uᵀ A_u, so its sums follow from the moments of s_u: Σ_i s_u A_u, diag(A_uᵀ (s_u s_uᵀ) A_u)
    and diag(A_uᵀ (s_u t)). No [n, k] array per head is formed: the target t = Σ_u s_uᵀ A_u [n, k] is the only one.
    Where k < n_pcs (U|T with few classes) the squares are summed from s_uᵀ A_u itself, cheaper than the Gram."""
    n_total, n_pcs, k = cache.n_layers * cache.n_heads, cache.n_pcs, basis.shape[1]
    f64 = dict(dtype=torch.float64)
    readouts = torch.stack([as_tensor(cache.head_components[u]).double() @ basis for u in range(n_total)])  # [U, n_pcs, k]
    sum_t, sum_tt = torch.zeros(k, **f64), torch.zeros(k, **f64)
    sums = torch.zeros(n_total, n_pcs, **f64)  # Σ_i s_u
    narrow = k < n_pcs
    grams = torch.zeros(n_total, *((1, 1) if narrow else (n_pcs, n_pcs)), **f64)  # Σ_i s_u s_uᵀ, unless narrow
    squares = torch.zeros(n_total, k, **f64)  # Σ_i (s_uᵀ A_u)², where narrow
    cross = torch.zeros_like(readouts)  # Σ_i s_u tᵀ: [U, n_pcs, k]
    for part in cache.chunks():
        target = torch.zeros(part.n_images, k, **f64)  # [n_chunk, k]
        for u in range(n_total):
            target.addmm_(_centred(part, u).T, readouts[u])
        sum_t += target.sum(0)
        sum_tt += (target * target).sum(0)
        for u in range(n_total):
            scores = _centred(part, u)  # [n_pcs, n_chunk]
            sums[u] += scores.sum(1)
            cross[u] += scores @ target
            if narrow:
                squares[u] += (scores.T @ readouts[u]).square().sum(0)
            else:
                grams[u] += scores @ scores.T
    n = cache.n_images
    sum_u = torch.einsum("up,upk->uk", sums, readouts)  # [U, k]
    sum_uu = squares if narrow else (torch.bmm(grams, readouts) * readouts).sum(1)  # diag(Aᵀ G A) per head: [U, k]
    sum_ut = (cross * readouts).sum(1)
    cov = sum_ut - sum_u * sum_t / n  # [U, k] n × covariance
    var_u, var_t = sum_uu - sum_u * sum_u / n, sum_tt - sum_t * sum_t / n
    corr = cov / (var_u.clamp_min(0) * var_t.clamp_min(0)).sqrt().clamp_min(1e-300)  # [U, k]
    return corr.mean(1).numpy() * ((n - 1) / n if reference_compat else 1.0)


def head_scores(cache: Cache, method: str, seed: int = 0, reference_compat: bool = False) -> np.ndarray:
    """One score per head (flat, layer-major) by S, U|T, U or random, as the reference computes it."""
    n_total = cache.n_layers * cache.n_heads
    if method == "S":
        return np.asarray(cache.head_alone_acc, dtype=np.float64)
    if method == "random":
        return torch.randn(n_total, generator=torch.Generator().manual_seed(seed)).double().numpy()
    if method == "U|T":
        basis = torch.linalg.qr(as_tensor(cache.classifier).double()).Q  # [d_embed, n_classes], orthonormal columns
    elif method == "U":
        # Q of QR(outputsᵀ) [d_embed, min(d_embed, n)]: Householder QR builds Q from the first d_embed columns
        # alone, so those images give the very Q of all of them without reading the rest
        first = slice(0, cache.output.shape[1])
        outputs = stored_sum(cache, first) if reference_compat else as_f32(cache.output[first])  # [d_embed, d_embed]
        basis = torch.linalg.qr(as_tensor(outputs).double().T).Q
    else:
        raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
    return _unit_correlation(cache, basis, reference_compat)


def stored_sum(cache: Cache, rows: slice) -> np.ndarray:
    """[n_rows, d_embed] the sum of the stored units (emb, MLPs, each head's mean plus its PCA coefficients times
    its components), as the reference sums its saved units (experiment3's ``encoding.sum``): with fp16 storage
    it differs from ``encode_image`` by the storage error, which is what ``reference_compat`` reproduces."""
    total = copy_f32(cache.embed, rows) + copy_f32(cache.mlps, rows).sum(1)  # [n_rows, d_embed]
    for u in range(cache.units.n_heads_total):
        total += cache.head_mean[u] + copy_f32(cache.head_scores[u], (slice(None), rows)).T @ cache.head_components[u]
    return total


def ranking(scores: np.ndarray, reference_compat: bool = False) -> np.ndarray:
    """Head indices, best first: ties by head order, or torch.topk's order under reference_compat."""
    if reference_compat:
        return torch.topk(torch.from_numpy(np.asarray(scores, dtype=np.float32)), len(scores)).indices.numpy()
    return np.argsort(-np.asarray(scores), kind="stable")


def topk_accuracy(cache: Cache, heads: np.ndarray, mode: str = "zero") -> float:
    """Accuracy with only ``heads`` kept; the rest zeroed or replaced by their test-set means (every unit)."""
    return keep_heads(cache, heads, mode).accuracy


def specialize(val: Cache, test: Cache, n_random: int = 10, reference_compat: bool = False) -> dict:
    """Scores on ``val``, top-k accuracy curves on ``test`` for every method, plus the H and B baselines."""
    if (val.n_layers, val.n_heads) != (test.n_layers, test.n_heads):
        raise ValueError("val and test caches come from different architectures")
    n_total = val.n_layers * val.n_heads
    ks = k_values(n_total)
    report: dict = {"k": ks, "n_heads": n_total, "scores": {}, "curves": {}, "reference_compat": reference_compat,
                    "reference_names": REFERENCE_NAMES}
    bar = steps(3 + n_random + 1, "scoring heads and top-k curves", "method")
    for method in ("S", "U|T", "U"):
        scores = head_scores(val, method, reference_compat=reference_compat)
        order = ranking(scores, reference_compat)
        report["scores"][method] = scores.round(6).tolist()
        report["curves"][method] = {mode: [topk_accuracy(test, order[:k], mode) for k in ks] for mode in ("zero", "mean")}
        bar.update(1)
    random_curves = {mode: [] for mode in ("zero", "mean")}
    for seed in range(n_random):
        order = ranking(head_scores(val, "random", seed), reference_compat)
        for mode in random_curves:
            random_curves[mode].append([topk_accuracy(test, order[:k], mode) for k in ks])
        bar.update(1)
    report["curves"]["random"] = {mode: {"mean": np.mean(v, 0).tolist(), "std": np.std(v, 0).tolist()}
                                  for mode, v in random_curves.items()}
    everything = np.arange(n_total)
    others = AblationMask(mlps=frozenset(range(test.n_layers)), embed=True, mode="mean")
    # H_mean from encode_image minus each removed unit's share, or (compat) from the stored units, as the reference
    h_mean = topk_accuracy(test, everything, "mean") if reference_compat else evaluate_streamed(test, others).accuracy
    report["baselines"] = {"H_zero": topk_accuracy(test, everything, "zero"), "H_mean": h_mean,
                           "B": test.baseline_accuracy()}
    bar.update(1)
    bar.close()
    return report


def top_k(n_heads: int, fraction: float = 0.05) -> int:
    """Size of a top-``fraction`` head set: at least 2, so that overlaps are not all-or-nothing."""
    return max(2, int(fraction * n_heads))


def top_heads(cache: Cache, k: int, method: str = "S", reference_compat: bool = False) -> list[int]:
    """The k best heads by ``method`` (flat, layer-major indices)."""
    return [int(u) for u in ranking(head_scores(cache, method, reference_compat=reference_compat), reference_compat)[:k]]


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def jaccard_matrix(caches: list[Cache], fraction: float = 0.05, method: str = "S") -> tuple[np.ndarray, list]:
    """Jaccard overlap [n, n] of the caches' top-``fraction`` head sets (SPEC §8), and those sets."""
    if len({(c.n_layers, c.n_heads) for c in caches}) > 1:
        raise ValueError("Jaccard across datasets needs caches of one architecture")
    sets = [top_heads(c, top_k(c.n_layers * c.n_heads, fraction), method) for c in caches]
    return np.array([[jaccard(a, b) for b in sets] for a in sets]), sets
