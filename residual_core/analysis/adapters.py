"""The alignment methods (align.py's METHODS), one small module class each, on a split's cached tensors.

Every adapter has ``embed(batch) -> z [n, E]`` (what training feeds to the logits) and
``readout(batch, W) -> z·W [n, C]`` (what validation arg-maxes; head adapters compute it without forming z).
``batch`` holds ``scores`` [n, K] (kept head coefficients, see ``columns``), ``output`` [n, E], ``embed``
[n, E], ``mlps`` [n, L, E] and ``labels`` [n]. The formulas are in align.py's docstring.
"""

import numpy as np
import torch
from torch import Tensor, nn

from residual_core.read.cache import Cache

from residual_core.build.store import as_f32
from residual_core.engine.pca import n_components_for


class _StackedBases(torch.autograd.Function):
    """a [n, K] @ B [K, E] for a fixed B. Its backward computes (B @ gᵀ)ᵀ: on 2-core CPUs this layout
    ran 1.8× faster than autograd's g @ Bᵀ (4.4 vs 7.9 ms at n = 64, K = 8,640, E = 512)."""

    @staticmethod
    def forward(ctx, a: Tensor, basis: Tensor) -> Tensor:
        ctx.save_for_backward(basis)
        return a @ basis

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (basis,) = ctx.saved_tensors
        return (basis @ grad.T).T, None


def _init(identity: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return (lambda *shape: torch.ones(*shape)) if identity else (lambda *shape: 1 + torch.randn(*shape, generator=gen))


IN_RAM_NUMBERS = 250_000_000  # 1 GB of float32: beyond it, moments (here) and splits (align.py) go a chunk at a time


def _principal_axes(train: Cache, read) -> tuple[Tensor, Tensor]:
    """Mean [G, E] and principal axes [G, E, E] (rows, by decreasing variance) of G groups of vectors, from
    ``read(cache) -> [n, G, E]`` float64. In RAM: the SVD of the centred data, as the reference does. Beyond
    ``IN_RAM_NUMBERS``: the eigenvectors of the covariance summed a chunk of images at a time (the same axes;
    an axis may come out with the opposite sign)."""
    sample = read(train.rows(0, 1))
    if train.n_images * sample[0].numel() <= IN_RAM_NUMBERS:
        data = read(train)  # [n, G, E]
        mean = data.mean(0)
        axes = torch.stack([torch.linalg.svd(data[:, g] - mean[g], full_matrices=False)[2]
                            for g in range(data.shape[1])])
        return mean.float(), axes.float()
    total = torch.zeros(sample.shape[1:], dtype=torch.float64)  # [G, E]
    scatter = torch.zeros(sample.shape[1], sample.shape[2], sample.shape[2], dtype=torch.float64)  # [G, E, E]
    for part in train.chunks():
        data = read(part)
        total += data.sum(0)
        scatter += torch.einsum("ngi,ngj->gij", data, data)
    mean = total / train.n_images
    cov = scatter / train.n_images - torch.einsum("gi,gj->gij", mean, mean)
    vectors = torch.linalg.eigh(cov).eigenvectors  # ascending eigenvalues
    return mean.float(), vectors.flip(-1).transpose(1, 2).float()


class Adapter(nn.Module):
    """Base: an adapter that reads only ``output``. ``columns`` are the head coefficients it needs (none)."""

    needs: tuple[str, ...] = ("output",)

    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__()
        self.compat, self.identity = compat, identity
        self.columns = torch.zeros(0, dtype=torch.long)  # [K] kept (head, PC) pairs, head-major

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.parameters()))

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def to_identity(self) -> None:
        """Every λ = 1: the method's own terms, untrained (with identity start, the model itself)."""
        for p in self.parameters():
            p.fill_(1.0)

    def readout(self, batch: dict[str, Tensor], weights: Tensor) -> Tensor:
        """z·W [n, C] for W [E, C]."""
        return self.embed(batch) @ weights


class ZeroShot(Adapter):
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["output"]


class Linear(Adapter):
    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__(train, compat, identity, seed)
        d = train.output.shape[1]
        self.linear = nn.Linear(d, d)
        if identity:
            nn.init.eye_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def to_identity(self) -> None:
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.linear(batch["output"])


class Spectral(Adapter):
    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__(train, compat, identity, seed)
        mean, basis = _principal_axes(train, lambda part: torch.from_numpy(np.asarray(part.output)).double()[:, None])
        self.out_mean, self.out_basis = mean[0], basis[0]  # [E], [E, E]
        self.lam = nn.Parameter(_init(identity, seed)(train.output.shape[1]))

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        centred = batch["output"] - self.out_mean
        if self.compat:  # the reference's square basis cancels: element-wise scaling
            z = centred * self.lam
        else:
            z = ((centred @ self.out_basis.T) * self.lam) @ self.out_basis
        return z + (self.out_mean if self.identity else 0)


class _Heads(Adapter):
    """Shared by the head methods: the train cache's stacked bases and which (head, PC) pairs are kept."""

    needs = ("scores",)
    prune = False  # keep only the PCs reaching 90 % of each head's variance

    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int, k_used: int | None = None):
        super().__init__(train, compat, identity, seed)
        self.comps = torch.from_numpy(train.head_components)  # [U, k, E]
        n_units, k, d = self.comps.shape
        self.head_mean = torch.from_numpy(train.head_mean)  # [U, E]
        keep = torch.ones(n_units, k, dtype=torch.bool)
        if self.prune and not identity:  # identity start must reproduce f(x): nothing pruned
            k90 = n_components_for(torch.from_numpy(np.asarray(train.head_eigenvalues, np.float64)), 0.9).clamp_max(k)
            keep = torch.arange(k)[None] < k90[:, None]  # [U, k]
        self.k_used = k if k_used is None else k_used
        if self.k_used < k:
            keep = keep & (torch.arange(k)[None] < self.k_used)
        self.keep = keep.float()  # [U, k]
        self.columns = keep.flatten().nonzero().squeeze(1)  # [K]
        self.unit_of = self.columns // k  # [K]
        self.basis = self.comps.reshape(n_units * k, d)[self.columns]  # [K, E] stacked bases
        self.init = _init(identity, seed)

    def _coef_rest(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(coefficient scale [K], the rest of z [n, E] or [E]) of z = y·(coef ⊙ B) + rest."""
        raise NotImplementedError

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        coef, rest = self._coef_rest(batch)
        return _StackedBases.apply(batch["scores"] * coef, self.basis) + rest

    def readout(self, batch: dict[str, Tensor], weights: Tensor) -> Tensor:
        coef, rest = self._coef_rest(batch)
        return batch["scores"] @ (coef[:, None] * (self.basis @ weights)) + rest @ weights  # no [n, E] for heads

    def head_lambda(self) -> np.ndarray:
        """λ per (head, PC) [U, k], NaN where pruned."""
        lam = self.lam.detach()
        grid = lam[:, None].expand(self.keep.shape) if lam.dim() == 1 else lam
        return torch.where(self.keep.bool(), grid, torch.nan).numpy().astype(np.float32)


class Coarse(_Heads):
    needs = ("scores", "output")

    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__(train, compat, identity, seed)
        self.lam = nn.Parameter(self.init(self.comps.shape[0]))

    def _coef_rest(self, batch):
        # Σ_u λ_u (μ_u + y_u Φ_u), plus, from identity, what the heads leave out of f(x)
        coef = self.lam[self.unit_of] - (1.0 if self.identity else 0.0)  # [K]
        rest = self.lam @ self.head_mean + ((batch["output"] - self.head_mean.sum(0)) if self.identity else 0)
        return coef, rest


class Fine(_Heads):
    prune = True

    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__(train, compat, identity, seed)
        self.needs = ("scores", "embed", "mlps") if identity else ("scores",)
        self.lam = nn.Parameter(self.init(*self.comps.shape[:2]))

    @property
    def n_params(self) -> int:
        return int(self.columns.numel())  # pruned PCs have no effect: count only the live λ

    def _coef_rest(self, batch):
        coef = self.lam.flatten()[self.columns]  # [K]
        rest = self.head_mean.sum(0) if self.identity else torch.zeros(self.basis.shape[1])
        if self.identity:  # the dropped emb and MLPs come back unchanged
            rest = rest + batch["embed"] + batch["mlps"].sum(1)
        return coef, rest


class Full(_Heads):
    needs = ("scores", "embed", "mlps")

    def __init__(self, train: Cache, compat: bool, identity: bool, seed: int):
        # The reference keeps d_head PCs per head; the cache keeps d_head + 2 (exact reconstruction).
        k = train.head_components.shape[1]
        super().__init__(train, compat, identity, seed, int(train.manifest["arch"].get("d_head", k)) if compat else k)
        self.lam = nn.Parameter(self.init(*self.comps.shape[:2]))
        self.mlp_mean, self.mlp_basis = _principal_axes(train, lambda part: torch.from_numpy(as_f32(part.mlps)).double())
        self.mlp_lam = nn.Parameter(self.init(*self.mlp_basis.shape[:2]))

    @property
    def n_params(self) -> int:
        if self.k_used < self.comps.shape[1]:
            return int(self.columns.numel() + self.mlp_lam.numel())
        return super().n_params

    def _mlp_term(self, batch: dict[str, Tensor]) -> Tensor:
        centred = batch["mlps"] - self.mlp_mean  # [n, L, E]
        coords = torch.einsum("nle,lje->nlj", centred, self.mlp_basis) * self.mlp_lam  # [n, L, E]
        basis = self.mlp_basis.transpose(1, 2) if self.compat else self.mlp_basis  # Φᵀ where Φ is meant
        return torch.einsum("nlj,lje->ne", coords, basis) + (self.mlp_mean.sum(0) if self.identity else 0)

    def _coef_rest(self, batch):
        coef = self.lam.flatten()[self.columns]  # [K]
        rest = self.head_mean.sum(0) if self.identity else torch.zeros(self.basis.shape[1])
        return coef, rest + self._mlp_term(batch) + batch["embed"]

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        if not self.compat:
            return super().embed(batch)
        coef, rest = self._coef_rest(batch)  # padded square basis: head outputs stay in the first k coordinates
        weights, k = batch["scores"] * coef, self.k_used  # [n, K]
        heads = torch.zeros(len(weights), self.comps.shape[-1])
        heads[:, :k] = torch.einsum("nuj,ujk->nk", weights.reshape(len(weights), -1, k),  # [n, U, k]
                                    self.comps[:, :k, :k].transpose(1, 2))
        return heads + rest

    def readout(self, batch: dict[str, Tensor], weights: Tensor) -> Tensor:
        return self.embed(batch) @ weights if self.compat else super().readout(batch, weights)


ADAPTERS: dict[str, type[Adapter]] = {"zeroshot": ZeroShot, "coarse": Coarse, "fine": Fine, "full": Full,
                                      "linear": Linear, "spectral": Spectral}


def make_adapter(method: str, train: Cache, compat: bool, identity: bool, seed: int) -> Adapter:
    if method not in ADAPTERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ADAPTERS)}")
    return ADAPTERS[method](train, compat, identity, seed)
