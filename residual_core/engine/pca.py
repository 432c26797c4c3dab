"""Per-head PCA from exactly mergeable moment statistics.

A head's contribution is affine in a small raw vector y = [z/σ, 1/σ, μ/σ] (d_head + 2 numbers):
c = y·M + w_head·β·P with M = [A; b; −w_head·γP] (see decompose.HeadMaps). So the head's mean and
covariance in the joint space follow from the mean and scatter of y, which shards accumulate and merge
exactly (Chan et al.'s parallel update), and the head spans at most d_head + 2 directions. Keeping
k = d_head + 2 components makes the PCA reconstruct every contribution exactly (SPEC keeps 64; the two
extra are the 1/σ-scaled bias and mean-share directions).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from residual_core.engine.decompose import HeadMaps


def raw_features(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """z [n, L, H, d_head], mean/std [n] -> y [n, L, H, d_head + 2]."""
    n, n_layers, n_heads, _ = z.shape
    inv = 1.0 / std
    extra = torch.stack([inv, mean * inv], -1)[:, None, None, :].expand(n, n_layers, n_heads, 2)
    return torch.cat([z * inv[:, None, None, None], extra], -1)


def head_affine(maps: HeadMaps) -> tuple[Tensor, Tensor]:
    """M [L, H, d_head + 2, d_embed] and the constant [d_embed] with c = y·M + const."""
    n_layers, n_heads, _, d_embed = maps.A.shape
    minus_g = (-maps.w_head * maps.g).expand(n_layers, n_heads, 1, d_embed)
    matrix = torch.cat([maps.A, maps.b[:, :, None, :], minus_g], 2)
    return matrix, maps.w_head * maps.bp


@dataclass(frozen=True)
class MomentStats:
    """Count, mean and scatter of y per head, in float64; ``merge`` is exact and associative."""

    count: int
    mean: Tensor  # [L, H, p]
    scatter: Tensor  # [L, H, p, p]  Σ (y − mean)(y − mean)ᵀ

    @classmethod
    def from_batch(cls, y: Tensor) -> "MomentStats":
        y = y.double()
        mean = y.mean(0)
        centred = y - mean
        return cls(y.shape[0], mean, torch.einsum("nlhp,nlhq->lhpq", centred, centred))  # [L, H, p, p]

    def to_cpu(self) -> "MomentStats":
        return MomentStats(self.count, self.mean.cpu(), self.scatter.cpu())

    def merge(self, other: "MomentStats") -> "MomentStats":
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        total = self.count + other.count
        delta = other.mean - self.mean  # [L, H, p]
        mean = self.mean + delta * (other.count / total)
        outer = torch.einsum("lhp,lhq->lhpq", delta, delta) * (self.count * other.count / total)
        return MomentStats(total, mean, self.scatter + other.scatter + outer)


@dataclass(frozen=True)
class HeadPCA:
    """PCA of every head's contributions (components are rows, orthonormal, eigenvalues descending)."""

    mean: Tensor  # [n_layers, n_heads, d_embed]
    components: Tensor  # [n_layers, n_heads, n_pcs, d_embed]
    eigenvalues: Tensor  # [n_layers, n_heads, n_pcs]  S²/(n−1)
    n_fit: int  # images the basis was fitted on

    def project(self, heads: Tensor) -> Tensor:
        """heads [n, L, H, d_embed] -> scores [n, L, H, n_pcs] = (c − μ)·Φᵀ."""
        return torch.einsum("nlhe,lhke->nlhk", heads - self.mean, self.components)

    def reconstruct(self, scores: Tensor) -> Tensor:
        """scores [n, L, H, n_pcs] -> heads [n, L, H, d_embed]."""
        return self.mean + torch.einsum("nlhk,lhke->nlhe", scores, self.components)


def fit_head_pca(stats: MomentStats, maps: HeadMaps) -> HeadPCA:
    """Exact PCA of head contributions from the merged moments of y (no pass over images)."""
    if stats.count < 2:
        raise ValueError(f"PCA needs at least 2 images, got {stats.count}")
    matrix, const = head_affine(maps)
    matrix = matrix.double()
    cov_y = stats.scatter / (stats.count - 1)  # [L, H, p, p]
    evals, evecs = torch.linalg.eigh(cov_y)
    root = evecs * evals.clamp_min(0).sqrt()[..., None, :]  # cov_y = root·rootᵀ
    factor = root.transpose(-1, -2) @ matrix  # [L, H, p, d_embed]; cov_c = factorᵀ·factor
    _, sing, vt = torch.linalg.svd(factor, full_matrices=False)
    n_pcs = min(factor.shape[-2], factor.shape[-1])
    comps = vt[..., :n_pcs, :]
    # Signs are arbitrary; fix them so the largest-magnitude coordinate is positive (reproducible runs).
    pivot = comps.abs().argmax(-1, keepdim=True)
    comps = comps * torch.gather(comps, -1, pivot).sign()
    mean = torch.einsum("lhp,lhpe->lhe", stats.mean, matrix) + const.double()
    return HeadPCA(mean.float(), comps.float(), (sing[..., :n_pcs] ** 2).float(), stats.count)


def score_map(pca: HeadPCA, maps: HeadMaps) -> tuple[Tensor, Tensor]:
    """G [L, H, p, n_pcs] and offset [L, H, n_pcs] with scores = y·G + offset (exact, cheap)."""
    matrix, const = head_affine(maps)
    gmat = torch.einsum("lhpe,lhke->lhpk", matrix.double(), pca.components.double())
    offset = torch.einsum("lhe,lhke->lhk", const.double() - pca.mean.double(), pca.components.double())
    return gmat, offset


def participation_ratio(eigenvalues: Tensor) -> Tensor:
    """(Σλ)² / Σλ² over the last axis."""
    return eigenvalues.sum(-1) ** 2 / (eigenvalues**2).sum(-1).clamp_min(1e-30)


def n_components_for(eigenvalues: Tensor, tau: float) -> Tensor:
    """k_τ = 1 + first index where cumulative EVR > τ (strict), per head."""
    cumulative = (eigenvalues / eigenvalues.sum(-1, keepdim=True).clamp_min(1e-30)).cumsum(-1)
    return (cumulative <= tau).sum(-1) + 1
