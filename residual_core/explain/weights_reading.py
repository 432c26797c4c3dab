"""A data-free reading of every head: the directions its weights can write into the joint space, in words.

For head h of layer l, the value map W_V,h [d_head, d_model] takes the attention input to the head's value, and
the decomposition's own map A[l, h] [d_head, d_embed] (decompose.HeadMaps: out projection, layer scale, the final
LayerNorm's γ and the projection) carries a value to the joint space; the image's 1/σ only scales it. So
M_h = A[l, h]ᵀ W_V,h [d_embed, d_model], of rank at most d_head, and its left singular vectors are the directions
the head can write whatever the image, weighted by their singular values (SITH, arXiv 2603.24653, reads heads the
same way). Each top direction, both signs, is explained by non-negative orthogonal matching pursuit over a text
bank: pick the text most aligned with what is left, refit the non-negative weights of all picked (NNLS), repeat.
A head's data contribution, centred, lies in the span of these directions plus its bias-share and LayerNorm-mean
directions (b[l, h] and g), which is what ``span`` returns and the tests pin to 1e-5.
"""

from dataclasses import dataclass

import numpy as np
import torch

from residual_core.engine.units import head_label


@dataclass(frozen=True)
class HeadWeights:
    layer: int
    head: int
    singular: np.ndarray  # [r] singular values of M_h, largest first
    directions: np.ndarray  # [r, d_embed] left singular vectors (rows, orthonormal)
    texts: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per top direction: (+ texts, − texts) bank rows
    weights: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]  # their non-negative pursuit weights

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)


def write_maps(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [L, H, d_head, d_embed], W_V [L, H, d_head, d_model], b [L, H, d_embed], g [d_embed]) read from a model."""
    from residual_core.engine import families
    from residual_core.engine.decompose import HeadMaps

    tower = families.tower(model)
    maps = HeadMaps.from_tower(tower)
    n_heads, d_model = tower.blocks[0].n_heads, tower.d_model
    w_v = torch.stack([b.w_v.detach().float().reshape(n_heads, d_model // n_heads, d_model) for b in tower.blocks])
    return maps.A.float(), w_v, maps.b.float(), maps.g.float()


def head_svd(a: torch.Tensor, w_v: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """a [d_head, d_embed], w_v [d_head, d_model] -> (singular [r], directions [r, d_embed]) of M = aᵀ w_v, through
    the d_head × d_head core of the two factors' QR (no d_embed × d_model product is formed)."""
    q1, r1 = torch.linalg.qr(a.double().T)  # [d_embed, d_head], [d_head, d_head]
    q2, r2 = torch.linalg.qr(w_v.double().T)  # [d_model, d_head], [d_head, d_head]
    u, s, _ = torch.linalg.svd(r1 @ r2.T)  # core [d_head, d_head]
    return s.numpy(), (q1 @ u).T.numpy()


def pursuit(target: np.ndarray, bank: np.ndarray, k: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Non-negative orthogonal matching pursuit: target [d] ≈ Σ w_i bank[i], w ≥ 0, at most k texts (bank [M, d])."""
    from scipy.optimize import nnls

    picked: list[int] = []
    weights = np.zeros(0)
    residual = target.astype(np.float64)
    for _ in range(k):
        scores = bank @ residual  # [M]
        scores[picked] = -np.inf
        j = int(np.argmax(scores))
        if scores[j] <= 1e-12:
            break  # no text adds along the target any more
        picked.append(j)
        weights, _ = nnls(bank[picked].T, target)
        residual = target - bank[picked].T @ weights
    return tuple(picked), tuple(float(w) for w in weights)


def read_weights(model, bank: np.ndarray, n_directions: int = 3, n_texts: int = 3) -> tuple[HeadWeights, ...]:
    """Every head's top ``n_directions`` write directions, each sign explained by ``n_texts`` bank texts.
    bank [M, d_embed]: L2-normalised text embeddings of the same model."""
    a, w_v, _, _ = write_maps(model)
    bank = np.asarray(bank, np.float64)
    out = []
    for layer in range(a.shape[0]):
        for head in range(a.shape[1]):
            singular, directions = head_svd(a[layer, head], w_v[layer, head])
            texts, weights = [], []
            for direction in directions[:n_directions]:
                plus, minus = pursuit(direction, bank, n_texts), pursuit(-direction, bank, n_texts)
                texts.append((plus[0], minus[0]))
                weights.append((plus[1], minus[1]))
            out.append(HeadWeights(layer, head, singular, directions, tuple(texts), tuple(weights)))
    return tuple(out)


def span(model, layer: int, head: int) -> np.ndarray:
    """[r + 2, d_embed] an orthonormal basis of every direction the head's centred contribution can take: its write
    directions, its bias share b[l, h] and the LayerNorm mean direction g (both scaled per image by 1/σ and μ/σ)."""
    a, w_v, b, g = write_maps(model)
    _, directions = head_svd(a[layer, head], w_v[layer, head])
    stacked = np.vstack([directions, b[layer, head].double().numpy(), g.double().numpy()])  # [r + 2, d_embed]
    # an SVD, not a QR with its small pivots dropped: a zero bias (random weights) would leave QR an arbitrary
    # column, and dropping it would take part of g with it
    _, singular, rows = np.linalg.svd(stacked, full_matrices=False)
    return rows[singular > 1e-10 * singular.max()]


def agreement(directions: np.ndarray, singular: np.ndarray, components: np.ndarray, eigenvalues: np.ndarray,
              tau: float = 0.9) -> float:
    """The weighted spectral cosine (geometry.spectral_cosine, as Compare uses) between a head's data PCs and its
    write directions, each pruned to ``tau`` of its spectrum: 1 when the data uses the directions the weights
    favour, 0 when they are orthogonal."""
    from residual_core.analysis.geometry import spectral_cosine

    def pruned(values: np.ndarray) -> int:
        share = np.cumsum(values) / max(float(values.sum()), 1e-300)
        return int(np.searchsorted(share, tau) + 1)

    lam = np.clip(np.asarray(eigenvalues, np.float64), 0, None)
    power = np.asarray(singular, np.float64) ** 2
    kd, kw = pruned(lam), pruned(power)
    return spectral_cosine(np.asarray(components, np.float64)[:kd], lam[:kd], directions[:kw], power[:kw])
