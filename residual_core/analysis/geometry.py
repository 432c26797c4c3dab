"""Spectral geometry of units (SPEC §5–§6): linear and TwoNN intrinsic dimension, spectral cosine."""

import numpy as np
import torch

from residual_core.read.cache import Cache

from residual_core.build.store import copy_f32
from residual_core.engine.pca import n_components_for, participation_ratio


def two_nn_dimension(points: np.ndarray, fraction: float = 0.9) -> float:
    """TwoNN intrinsic dimension of points [n, d] (Facco et al.; fit through the origin on 90 % of points)."""
    x = torch.from_numpy(np.asarray(points, dtype=np.float64))
    dist = torch.cdist(x, x)  # [n, n]
    dist.fill_diagonal_(float("inf"))
    nearest = dist.topk(2, dim=1, largest=False).values  # [n, 2]: r1, r2
    r1, r2 = nearest[:, 0], nearest[:, 1]
    keep = (r1 > 0) & (r2 > r1)
    mu = torch.sort(r2[keep] / r1[keep]).values
    n = len(mu)
    if n < 3:
        raise ValueError("TwoNN needs at least 3 points with distinct neighbour distances")
    cdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    m = int(fraction * n)
    xs, ys = torch.log(mu[:m]), -torch.log(1 - cdf[:m])
    return float((xs * ys).sum() / (xs * xs).sum())


def match_pcs(x: np.ndarray, wx: np.ndarray, y: np.ndarray, wy: np.ndarray) -> list[tuple[int, int, float, float]]:
    """Greedy matching of two bases' PCs (rows orthonormal) by |cos| weighted by w_x,i·w_y,j (weights ∝ eigenvalues).

    Returns (i, j, cos, weighted score) per matched pair, best first; min(k_x, k_y) pairs. The cosine keeps
    its sign (a PC's sign is arbitrary: negative means the + pole of one is the − pole of the other).
    """
    k = min(len(x), len(y))
    norm = np.linalg.norm(wx[:k] * wy[:k])
    cos = x @ y.T  # [k_x, k_y]
    scores = np.abs(cos) * np.outer(wx, wy) / max(norm, 1e-30)
    pairs = []
    for _ in range(k):
        i, j = np.unravel_index(np.argmax(scores), scores.shape)
        pairs.append((int(i), int(j), float(cos[i, j]), float(scores[i, j])))
        scores[i, :] = -np.inf
        scores[:, j] = -np.inf
    return pairs


def spectral_cosine(x: np.ndarray, wx: np.ndarray, y: np.ndarray, wy: np.ndarray) -> float:
    """Weighted normalised spectral cosine of two bases: 1 for identical bases, 0 for orthogonal subspaces."""
    return float(np.linalg.norm([score for *_, score in match_pcs(x, wx, y, wy)]))


def head_geometry(cache: Cache, n_sample: int = 2000, seed: int = 42) -> dict[str, np.ndarray]:
    """Per head [n_layers, n_heads]: participation ratio, PCs to 90 % and 99 %, TwoNN dimension.

    TwoNN uses the head's PCA coordinates (an isometry of its centred contributions) of at most
    ``n_sample`` images drawn with ``seed``.
    """
    shape = (cache.n_layers, cache.n_heads)
    evals = torch.from_numpy(np.asarray(cache.head_eigenvalues, dtype=np.float64))
    rows = np.sort(np.random.default_rng(seed).permutation(cache.n_images)[:n_sample])
    # only the sampled columns are read and converted: a whole head is 264 MB of float32 at 1 M images
    two_nn = [two_nn_dimension(copy_f32(cache.head_scores[u], (slice(None), rows)).T)
              for u in range(shape[0] * shape[1])]
    return {"participation_ratio": participation_ratio(evals).numpy().reshape(shape),
            "k90": n_components_for(evals, 0.9).clamp_max(evals.shape[-1]).numpy().reshape(shape),
            "k99": n_components_for(evals, 0.99).clamp_max(evals.shape[-1]).numpy().reshape(shape),
            "two_nn": np.array(two_nn).reshape(shape)}


def _pruned(cache: Cache, unit: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
    evals = np.asarray(cache.head_eigenvalues[unit], np.float64)
    k = int(n_components_for(torch.from_numpy(evals), tau).clamp_max(len(evals)))
    return cache.head_components[unit][:k], evals[:k]


def head_spectral_cosine(a: Cache, b: Cache, tau: float = 0.9) -> np.ndarray:
    """Spectral cosine of each head's basis in two caches (same architecture), bases pruned to τ EVR."""
    if (a.n_layers, a.n_heads) != (b.n_layers, b.n_heads):
        raise ValueError("the two caches come from models of different shapes")
    out = [spectral_cosine(*_pruned(a, u, tau), *_pruned(b, u, tau)) for u in range(a.n_layers * a.n_heads)]
    return np.array(out).reshape(a.n_layers, a.n_heads)


def head_matched_pcs(a: Cache, b: Cache, unit: int, tau: float = 0.9) -> list[tuple[int, int, float, float]]:
    """One head's PCs in cache a matched to its PCs in cache b (see match_pcs), bases pruned to τ EVR."""
    return match_pcs(*_pruned(a, unit, tau), *_pruned(b, unit, tau))


MAP_METHODS = {"PCA": "PC1 vs PC2 (instant)",
               "t-SNE": "t-SNE of the coefficients (seconds to half a minute: up to 3,000 images, slower on a busy "
                        "server)",
               "UMAP": "UMAP of the coefficients (the first one in a process compiles: about a minute)"}
MAP_SAMPLE = 3_000  # non-linear maps work on at most this many images (a stated sample)
PCA_DRAW = 20_000  # the PCA map draws at most this many images (a stated sample beyond it)


def head_map_2d(cache: Cache, unit: int, method: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """(rows [m] of the images drawn, xy [m, 2], axis titles): a 2-D map of one head's contributions.

    PCA draws a seeded sample of at most PCA_DRAW images (a browser draws more slowly than it reads), t-SNE and
    UMAP one of at most MAP_SAMPLE (their cost grows faster than n).
    """
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map {method!r}; choose one of {', '.join(MAP_METHODS)}")
    limit = PCA_DRAW if method == "PCA" else MAP_SAMPLE
    rows = np.arange(cache.n_images)
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    points = copy_f32(cache.head_scores[unit], (slice(None), rows)).T  # [m, n_pcs]; only the drawn images are read
    if method == "PCA":
        return rows, points[:, :2].copy(), ("PC1 coefficient", "PC2 coefficient")
    if method == "t-SNE":
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(2.0, len(rows) / 4 - 1)),
                  max_iter=500).fit_transform(points)
        return rows, xy.astype(np.float32), ("t-SNE 1", "t-SNE 2")
    import umap

    xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1).fit_transform(points)
    return rows, xy.astype(np.float32), ("UMAP 1", "UMAP 2")
