"""ResiDual alignment on cached coefficients (SPEC §9–§12): learn λ per (unit, PC) with cross-entropy.

Methods (z is the adapted image embedding; logits = scale · normalize(z) · W, or z · W in compat mode):
  zeroshot  z = f(x)
  coarse    z = Σ_heads λ_h c_h                                  (one λ per head; emb, MLPs dropped)
  fine      z = Σ_heads ((c_h − μ_h)Φ_hᵀ ⊙ λ_h ⊙ 1[k ≤ k_0.9]) Φ_h (ResiDual*; emb, MLPs dropped)
  full      fine over heads and MLPs with all PCs, emb added unchanged
  linear    z = A f(x) + b                                        (E² + E parameters)
  spectral  z = (f − μ)Φᵀ diag(λ) Φ over the PCA of f on train    (E parameters)
``reference_compat`` reproduces the reference code: raw logits z · W, d_head PCs per head in full (the
cache keeps d_head + 2), and square bases applied as Φᵀ where Φ is meant (spectral becomes (f − μ) ⊙ λ;
in full, MLPs get (c − μ)Φᵀdiag(λ)Φᵀ and heads, padded to square, land in the first k canonical
coordinates). ``identity_start`` sets λ = 1 and adds the unit means and the dropped units back, so
training starts from the model (not in the paper; it starts at λ ~ N(1, 1)).
Heads use the train cache's basis; val/test caches must be built with ``--basis-from`` the train cache.
Optimiser: schedule-free AdamW (package ``schedulefree``, library defaults) with the paper's lr, 0.8 for λ
and 1e-3 for the adapters; validation, test and checkpoints use its averaged (``.eval()``) weights.

Speed: every head term is one product (Y ⊙ λ) B with Y = [n, K] coefficients and B = [K, E] stacked bases
(K = Σ kept PCs: fine drops the pruned ones before multiplying). Accuracy needs only the arg-max of the
logits, which normalisation does not change, so validation multiplies by B·W ([K, n_classes]) instead.
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import schedulefree
from torch import Tensor, nn

from residual_core.analysis.adapters import ADAPTERS, IN_RAM_NUMBERS, Adapter, make_adapter  # one budget for both
from residual_core.read.cache import Cache
from residual_core.build.store import copy_f32

METHODS = tuple(ADAPTERS)  # zeroshot, coarse, fine, full, linear, spectral (adapters.py: one class each)


@dataclass(frozen=True)
class AlignResult:
    method: str
    n_params: int
    val_acc: float
    test_acc: float
    zeroshot_test_acc: float
    identity_test_acc: float  # the method's own terms at λ = 1 (A = I), untrained: where its training starts from
    seconds: float
    epochs: int  # epochs run (early stopping included)
    best_epoch: int  # the epoch whose weights were kept (0 = the initial λ)
    lambdas: np.ndarray  # learned parameters, flattened
    head_lambda: np.ndarray | None  # [n_units, n_pcs] λ per head PC (see head_lambdas); None for adapters
    history: tuple  # per epoch: {"epoch", "loss", "val_acc"}


def _split_tensors(cache: Cache, columns: Tensor, needs: tuple[str, ...]) -> dict[str, Tensor]:
    """A split's cached arrays named in ``needs`` (and its labels) as tensors; head coefficients flattened to
    [n, K] and cut to ``columns``."""
    out = {"labels": torch.from_numpy(np.asarray(cache.labels))}
    if "scores" in needs:
        n_pcs = cache.head_scores.shape[1]
        scores = torch.empty(cache.n_images, len(columns))  # [n, K] fp32
        heads = columns // n_pcs  # [K]
        for unit in torch.unique(heads).tolist():  # a head at a time, its pages released after (copy_f32)
            at = (heads == unit).nonzero().squeeze(1)  # [m] positions in columns
            rows = copy_f32(cache.head_scores[unit], (columns[at] % n_pcs).numpy())  # [m, n]
            scores[:, at] = torch.from_numpy(rows).T
        out["scores"] = scores
    arrays = {"output": cache.output, "embed": cache.embed, "mlps": cache.mlps}
    # copies: a tensor over the mapping itself would map the pages back in after release_pages
    return out | {name: torch.from_numpy(copy_f32(arrays[name]))
                  for name in needs if name in arrays}


CHUNK_IMAGES = 8_192


class _Split:
    """A split's tensors: in RAM when they fit ``IN_RAM_NUMBERS``, else read a chunk of images at a time."""

    def __init__(self, cache: Cache, model: Adapter, budget: int | None = None):
        self.cache, self.columns, self.needs = cache, model.columns, tuple(model.needs)
        widths = {"scores": len(model.columns), "output": cache.output.shape[1], "embed": cache.output.shape[1],
                  "mlps": int(np.prod(cache.mlps.shape[1:]))}
        per_image = 1 + sum(widths[name] for name in self.needs)
        self.n = cache.n_images
        budget = IN_RAM_NUMBERS if budget is None else budget
        self.chunk = max(1, self.n if self.n * per_image <= budget else CHUNK_IMAGES)
        self.whole = _split_tensors(cache, self.columns, self.needs) if self.chunk >= self.n else None

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.n // self.chunk))

    def part(self, i: int) -> dict[str, Tensor]:
        if self.whole is not None:
            return self.whole
        start = i * self.chunk
        view = self.cache.rows(start, min(start + self.chunk, self.n))
        tensors = _split_tensors(view, self.columns, self.needs)  # copies: the mapped pages can go
        view.release_pages()
        return tensors


TINY_GRAD = 1e-30  # logit gradients below this are set to zero (see _no_subnormals)


@contextlib.contextmanager
def flushing_denormals(enabled: bool = True):
    """Keep subnormal floats (|x| < 1.2e-38) out of λ training, then restore the default.

    Once the softmax saturates, (p − onehot) holds subnormals, and every product behind it (the [K, E]
    backward product above all) runs tens of times slower on x86: on the bench's task 30 epochs took 143 s
    with them and 27 s without. Two guards: this thread flushes subnormals to zero
    (torch.set_flush_denormal, which reaches only the calling thread), and the logits' gradient is cut at
    TINY_GRAD (``_no_subnormals``), so the matrix products in torch's worker threads never see one. A
    gradient of 1e-30 is far below float32's resolution of any real gradient: the method is unchanged.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _no_subnormals(grad: Tensor) -> Tensor:
    return grad.masked_fill(grad.abs() < TINY_GRAD, 0.0)


def _logits(z: Tensor, weights: Tensor, scale: float, compat: bool) -> Tensor:
    if compat:
        return z @ weights
    return scale * nn.functional.normalize(z, dim=-1) @ weights


def _accuracy(model: Adapter, split: _Split, weights: Tensor) -> float:
    # arg-max of scale · normalize(z) · W equals that of z · W: no need to form z [n, E]
    hits = 0
    with torch.no_grad():
        for i in range(split.n_chunks):
            data = split.part(i)
            hits += int((model.readout(data, weights).argmax(1) == data["labels"]).sum())
            del data  # else the next chunk is read while this one is still held
    return hits / max(split.n, 1)


def _identity_accuracy(model: Adapter, split: _Split, weights: Tensor) -> float:
    """Accuracy with every λ = 1, leaving the model's parameters as they were (training is unchanged)."""
    saved = [p.detach().clone() for p in model.parameters()]
    model.to_identity()
    accuracy = _accuracy(model, split, weights)
    with torch.no_grad():
        for p, value in zip(model.parameters(), saved):
            p.copy_(value)
    return accuracy


def head_lambdas(model: Adapter) -> np.ndarray | None:
    """λ per (head, PC) [U, k]: coarse λ repeated over a head's PCs, NaN where fine pruned; None otherwise."""
    return model.head_lambda() if hasattr(model, "head_lambda") else None


def align(train: Cache, val: Cache, test: Cache, method: str, epochs: int = 30, patience: int = 5,
          batch_size: int = 64, lr: float | None = None, seed: int = 42, reference_compat: bool = False,
          identity_start: bool = False, progress: Callable[[int, int, float], None] | None = None,
          flush_denormals: bool = True) -> AlignResult:
    """Train ``method`` on train, early-stop on val accuracy, report test accuracy of the best epoch.

    ``progress(epoch, max_epochs, val_acc)`` is called after every epoch (a UI's progress bar).
    ``flush_denormals=False`` keeps subnormal arithmetic (slow; for the bench's before/after figure).
    """
    with flushing_denormals(flush_denormals):
        return _align(train, val, test, method, epochs, patience, batch_size, lr, seed, reference_compat,
                      identity_start, progress, flush_denormals)


def _step(model: Adapter, batch: dict[str, Tensor], weights: Tensor, scale: float, compat: bool, flush: bool,
          optim) -> float:
    """One optimiser step on a minibatch; its loss."""
    logits = _logits(model.embed(batch), weights, scale, compat)  # [batch, n_classes]
    if flush:
        logits.register_hook(_no_subnormals)
    loss = nn.functional.cross_entropy(logits, batch["labels"])
    optim.zero_grad()
    loss.backward()
    optim.step()
    return loss.item()


def _epoch(model: Adapter, split: _Split, gen: torch.Generator, batch_size: int, weights: Tensor, scale: float,
           compat: bool, flush: bool, optim) -> list[float]:
    """One pass over the train split; the minibatch losses. Beyond RAM: chunks in a random order, images in a
    random order within each; in RAM (one chunk) a permutation of every image, drawn as before chunks existed.
    A function of its own so that the last chunk is freed before validation reads its own."""
    losses = []
    chunks = torch.randperm(split.n_chunks, generator=gen).tolist() if split.n_chunks > 1 else [0]
    for chunk in chunks:
        part = split.part(chunk)
        for rows in torch.randperm(len(part["labels"]), generator=gen).split(batch_size):
            batch = {k: part[k][rows] for k in model.needs + ("labels",)}
            losses.append(_step(model, batch, weights, scale, compat, flush, optim))
    return losses


def _align(train: Cache, val: Cache, test: Cache, method: str, epochs: int, patience: int, batch_size: int,
           lr: float | None, seed: int, reference_compat: bool, identity_start: bool,
           progress: Callable[[int, int, float], None] | None, flush: bool) -> AlignResult:
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
    model = make_adapter(method, train, reference_compat, identity_start, seed)
    # val and test are only evaluated: a quarter of the budget each, so the three splits stay within 1.5 GB
    data = {"train": _Split(train, model), "val": _Split(val, model, IN_RAM_NUMBERS // 4),
            "test": _Split(test, model, IN_RAM_NUMBERS // 4)}
    params = [p for p in model.parameters() if p.requires_grad]
    zero_shot = make_adapter("zeroshot", train, reference_compat, identity_start, seed)
    zs_test = _accuracy(zero_shot, _Split(test, zero_shot), weights)
    identity_test = _identity_accuracy(model, data["test"], weights)
    start = _accuracy(model, data["val"], weights)
    history = [{"epoch": 0, "val_acc": start}]
    # Lightning checkpoints trained epochs only: under compat the untrained start is never the best
    best = (-1.0 if reference_compat and params else start, 0, [p.detach().clone() for p in params])
    epochs_run = 0
    if params:
        lr = lr if lr is not None else (1e-3 if method in ("linear", "spectral") else 0.8)
        optim = schedulefree.AdamWScheduleFree(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(1, epochs + 1):
            epochs_run = epoch
            optim.train()
            losses = _epoch(model, data["train"], gen, batch_size, weights, scale, reference_compat, flush, optim)
            optim.eval()  # schedule-free: evaluate and checkpoint the averaged weights
            val_acc = _accuracy(model, data["val"], weights)
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_acc": val_acc})
            if progress:
                progress(epoch, epochs, val_acc)
            if val_acc > best[0]:
                best = (val_acc, epoch, [p.detach().clone() for p in params])
            elif epoch - best[1] >= patience:
                break
        with torch.no_grad():
            for p, saved in zip(params, best[2]):
                p.copy_(saved)
    test_acc = _accuracy(model, data["test"], weights)
    flat = torch.cat([p.detach().flatten() for p in params]).numpy() if params else np.zeros(0, np.float32)
    return AlignResult(method, model.n_params, best[0], test_acc, zs_test, identity_test,
                       time.perf_counter() - started, epochs_run, best[1], flat, head_lambdas(model), tuple(history))
