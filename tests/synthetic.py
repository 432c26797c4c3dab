"""Build in-memory caches from chosen head contributions: planted structure for analysis tests."""

from pathlib import Path

import numpy as np

from residual_core.read.cache import Cache


def make_cache(heads: np.ndarray, labels: np.ndarray, classifier: np.ndarray,
               rest: np.ndarray | None = None) -> Cache:
    """heads [n, L, H, E] (exact contributions), labels [n], classifier [E, C]; rest [n, E] = emb (+ MLPs)."""
    n, n_layers, n_heads, d = heads.shape
    flat = heads.reshape(n, n_layers * n_heads, d).astype(np.float64)
    rest = np.zeros((n, d)) if rest is None else rest
    n_pcs = min(n - 1, d)
    means, comps, evals, scores = [], [], [], []
    for u in range(flat.shape[1]):
        mean = flat[:, u].mean(0)
        _, sing, vt = np.linalg.svd(flat[:, u] - mean, full_matrices=False)
        means.append(mean)
        comps.append(vt[:n_pcs])
        evals.append(sing[:n_pcs] ** 2 / (n - 1))
        scores.append((flat[:, u] - mean) @ vt[:n_pcs].T)
    means, comps = np.array(means, np.float32), np.array(comps, np.float32)
    scores = np.array(scores, np.float32).transpose(0, 2, 1)  # [U, n_pcs, n]
    output = (flat.sum(1) + rest).astype(np.float32)
    classifier = classifier.astype(np.float32)
    alone = np.array([((flat[:, u] @ classifier).argmax(1) == labels).mean() for u in range(flat.shape[1])])
    manifest = {"arch": {"n_layers": n_layers, "n_heads": n_heads},
                "classnames": [str(c) for c in range(classifier.shape[1])], "logit_scale": 100.0}
    return Cache.from_arrays(Path("."), manifest, {
        "head_scores": scores, "head_mean": means, "head_components": comps,
        "head_eigenvalues": np.array(evals, np.float32), "embed": rest.astype(np.float16), "output": output,
        "labels": labels, "classifier": classifier, "head_alone_acc": alone, "head_score_mean": scores.mean(2)})


def subset(cache: Cache, rows: np.ndarray) -> Cache:
    """The same cache (same basis) restricted to some images."""
    from dataclasses import replace

    scores = cache.head_scores[:, :, rows]
    return replace(cache, head_scores=scores, output=cache.output[rows], labels=cache.labels[rows],
                   embed=cache.embed[rows], mlps=cache.mlps[rows],
                   positions=cache.positions[rows], score_mean=scores.mean(2))


def planted(n: int = 400, n_layers: int = 3, n_heads: int = 4, d: int = 16, n_classes: int = 4,
            label_head: tuple[int, int] = (2, 1), seed: int = 0, noise: float = 0.5,
            label_noise: float | None = None) -> tuple[Cache, tuple[int, int]]:
    """Heads of noise, except ``label_head`` which adds 3·t_y (the label's class direction)."""
    rng = np.random.default_rng(seed)
    classifier = np.linalg.qr(rng.standard_normal((d, n_classes)))[0]
    labels = np.arange(n) % n_classes
    heads = rng.standard_normal((n, n_layers, n_heads, d)) * noise
    if label_noise is not None:
        heads[:, label_head[0], label_head[1]] *= label_noise / noise
    heads[:, label_head[0], label_head[1]] += 3.0 * classifier[:, labels].T
    return make_cache(heads, labels, classifier), label_head
