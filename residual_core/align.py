"""ResiDual alignment on cached coefficients (SPEC §9–§12): learn λ per (unit, PC) with cross-entropy.

Methods (z is the adapted image embedding; logits = scale · normalize(z) · W, or z · W in compat mode):
  zeroshot  z = f(x)
  coarse    z = Σ_heads λ_h c_h                                  (one λ per head; emb, MLPs dropped)
  fine      z = Σ_heads ((c_h − μ_h)Φ_hᵀ ⊙ λ_h ⊙ 1[k ≤ k_0.9]) Φ_h (ResiDual*; emb, MLPs dropped)
  full      fine over heads and MLPs with all PCs, emb added unchanged
  linear    z = A f(x) + b                                        (E² + E parameters)
  spectral  z = (f − μ)Φᵀ diag(λ) Φ over the PCA of f on train    (E parameters)
``reference_compat`` reproduces the reference code: raw logits z · W, and square bases applied as Φᵀ
where Φ is meant (spectral becomes (f − μ) ⊙ λ; in full, MLPs get (c − μ)Φᵀdiag(λ)Φᵀ and heads, padded to
square, land in the first k canonical coordinates). ``identity_start`` sets λ = 1 and adds the unit means
and the dropped units back, so training starts from the model (not in the paper; it starts at λ ~ N(1, 1)).
Heads use the train cache's basis; val/test caches must be built with ``--basis-from`` the train cache.
Optimiser: torch AdamW (the paper uses schedule-free AdamW; lr 0.8 for λ, 1e-3 for the adapters).
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from residual_core.cache import Cache, as_f32
from residual_core.pca import n_components_for

METHODS = ("zeroshot", "coarse", "fine", "full", "linear", "spectral")


@dataclass(frozen=True)
class AlignResult:
    method: str
    n_params: int
    val_acc: float
    test_acc: float
    zeroshot_test_acc: float
    seconds: float
    epochs: int
    lambdas: np.ndarray  # learned parameters, flattened


def _split_tensors(cache: Cache) -> dict[str, Tensor]:
    n_units = cache.n_layers * cache.n_heads
    return {"scores": torch.from_numpy(as_f32(np.asarray(cache.head_scores)).transpose(2, 0, 1).copy()),  # [n,U,k]
            "output": torch.from_numpy(cache.output), "embed": torch.from_numpy(as_f32(cache.embed)),
            "mlps": torch.from_numpy(as_f32(cache.mlps)), "labels": torch.from_numpy(cache.labels),
            "n_units": torch.tensor(n_units)}


class Adapter(nn.Module):
    """One of the METHODS as a module on a split's cached tensors (rows selected by ``index``)."""

    def __init__(self, method: str, train: Cache, compat: bool, identity: bool, seed: int):
        super().__init__()
        self.method, self.compat, self.identity = method, compat, identity
        gen = torch.Generator().manual_seed(seed)
        init = (lambda *shape: torch.ones(*shape)) if identity else (lambda *shape: 1 + torch.randn(*shape, generator=gen))
        self.comps = torch.from_numpy(train.head_components)  # [U, k, E]
        self.head_mean = torch.from_numpy(train.head_mean)  # [U, E]
        evals = torch.from_numpy(np.asarray(train.head_eigenvalues, dtype=np.float64))
        k90 = n_components_for(evals, 0.9).clamp_max(evals.shape[-1])
        self.keep = (torch.arange(evals.shape[-1])[None] < k90[:, None]).float()  # [U, k] fine pruning
        if method == "full" or (method == "fine" and identity):  # full prunes nothing (SPEC §9)
            self.keep = torch.ones_like(self.keep)
        d = train.output.shape[1]
        if method == "coarse":
            self.lam = nn.Parameter(init(len(self.comps)))
        elif method in ("fine", "full"):
            self.lam = nn.Parameter(init(*self.keep.shape))
        if method == "full":
            mlps = torch.from_numpy(as_f32(train.mlps)).double()  # [n, L, E]
            self.mlp_mean = mlps.mean(0).float()  # [L, E]
            self.mlp_basis = torch.stack([torch.linalg.svd(mlps[:, l] - mlps[:, l].mean(0), full_matrices=False)[2]
                                          for l in range(mlps.shape[1])]).float()  # [L, E, E]
            self.mlp_lam = nn.Parameter(init(*self.mlp_basis.shape[:2]))
        if method == "linear":
            self.linear = nn.Linear(d, d)
            if identity:
                nn.init.eye_(self.linear.weight)
                nn.init.zeros_(self.linear.bias)
        if method == "spectral":
            out = torch.from_numpy(train.output).double()
            self.out_mean = out.mean(0).float()
            self.out_basis = torch.linalg.svd(out - out.mean(0), full_matrices=False)[2].float()  # [E, E]
            self.lam = nn.Parameter(init(d))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        m = self.method
        if m == "zeroshot":
            return batch["output"]
        if m == "linear":
            return self.linear(batch["output"])
        if m == "spectral":
            centred = batch["output"] - self.out_mean
            if self.compat:  # the reference's square basis cancels: element-wise scaling
                z = centred * self.lam
            else:
                z = ((centred @ self.out_basis.T) * self.lam) @ self.out_basis
            return z + (self.out_mean if self.identity else 0)
        scores = batch["scores"]  # [n, U, k]
        if m == "coarse":
            heads = self.head_mean + torch.einsum("nuk,uke->nue", scores, self.comps)  # [n, U, E]
            z = torch.einsum("nue,u->ne", heads, self.lam)
            return z + (batch["output"] - heads.sum(1) if self.identity else 0)
        weights = scores * self.lam * self.keep  # [n, U, k]
        if m == "full" and self.compat:  # padded square basis: head outputs stay in the first k coordinates
            k = weights.shape[-1]
            z = torch.zeros(len(scores), self.comps.shape[-1])
            z[:, :k] = torch.einsum("nuj,ujk->nk", weights, self.comps[:, :, :k].transpose(1, 2))
        else:  # Σ_u (y_u ⊙ λ_u) Φ_u as one [n, U·k] × [U·k, E] product (faster than the batched einsum)
            z = weights.reshape(len(weights), -1) @ self.comps.reshape(-1, self.comps.shape[-1])
        if self.identity:
            z = z + self.head_mean.sum(0)
        if m == "full":
            centred = batch["mlps"] - self.mlp_mean  # [n, L, E]
            coords = torch.einsum("nle,lje->nlj", centred, self.mlp_basis) * self.mlp_lam  # [n, L, E]
            basis = self.mlp_basis.transpose(1, 2) if self.compat else self.mlp_basis  # Φᵀ where Φ is meant
            z = z + torch.einsum("nlj,lje->ne", coords, basis) + batch["embed"]
            if self.identity:
                z = z + self.mlp_mean.sum(0)
        elif self.identity:  # fine: the dropped emb and MLPs come back unchanged
            z = z + batch["embed"] + batch["mlps"].sum(1)
        return z


def _logits(z: Tensor, weights: Tensor, scale: float, compat: bool) -> Tensor:
    if compat:
        return z @ weights
    return scale * nn.functional.normalize(z, dim=-1) @ weights


def _accuracy(model: Adapter, data: dict[str, Tensor], weights: Tensor, scale: float, compat: bool) -> float:
    with torch.no_grad():
        batch = {k: v for k, v in data.items() if k != "n_units"}
        pred = _logits(model(batch), weights, scale, compat).argmax(1)
    return float((pred == data["labels"]).float().mean())


def align(train: Cache, val: Cache, test: Cache, method: str, epochs: int = 30, patience: int = 5,
          batch_size: int = 64, lr: float | None = None, seed: int = 42, reference_compat: bool = False,
          identity_start: bool = False) -> AlignResult:
    """Train ``method`` on train, early-stop on val accuracy, report test accuracy of the best epoch."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for other in (val, test):
        if not np.array_equal(other.head_components, train.head_components):
            raise ValueError("val/test caches must share the train cache's PCA basis: build them with "
                             "--basis-from the train cache")
    started = time.perf_counter()
    torch.manual_seed(seed)
    weights = torch.from_numpy(train.classifier)
    scale = float(train.manifest["logit_scale"])
    data = {name: _split_tensors(c) for name, c in (("train", train), ("val", val), ("test", test))}
    model = Adapter(method, train, reference_compat, identity_start, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    zeroshot = Adapter("zeroshot", train, reference_compat, identity_start, seed)
    zs_test = _accuracy(zeroshot, data["test"], weights, scale, reference_compat)
    best = (_accuracy(model, data["val"], weights, scale, reference_compat), 0,
            [p.detach().clone() for p in params])
    epochs_run = 0
    if params:
        lr = lr if lr is not None else (1e-3 if method in ("linear", "spectral") else 0.8)
        optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        n = len(data["train"]["labels"])
        for epoch in range(1, epochs + 1):
            epochs_run = epoch
            for rows in torch.randperm(n, generator=gen).split(batch_size):
                batch = {k: v[rows] for k, v in data["train"].items() if k != "n_units"}
                loss = nn.functional.cross_entropy(_logits(model(batch), weights, scale, reference_compat),
                                                   batch["labels"])
                optim.zero_grad()
                loss.backward()
                optim.step()
            val_acc = _accuracy(model, data["val"], weights, scale, reference_compat)
            if val_acc > best[0]:
                best = (val_acc, epoch, [p.detach().clone() for p in params])
            elif epoch - best[1] >= patience:
                break
        with torch.no_grad():
            for p, saved in zip(params, best[2]):
                p.copy_(saved)
    test_acc = _accuracy(model, data["test"], weights, scale, reference_compat)
    n_params = int(sum(p.numel() for p in params))
    if method == "fine":  # pruned PCs have no effect: count only the live λ
        n_params = int(model.keep.sum())
    flat = torch.cat([p.detach().flatten() for p in params]).numpy() if params else np.zeros(0)
    return AlignResult(method, n_params, best[0], test_acc, zs_test, time.perf_counter() - started, epochs_run, flat)
