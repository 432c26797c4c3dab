"""Exact decomposition of a CLIP ViT image embedding into per-unit contributions, for any model family.

Units (SPEC §3): ``emb`` (embedding-norm output at CLS), one ``mlp`` per layer, one ``head`` per
(layer, head), in that order. The final LayerNorm is linearised with each image's own mean and std, the
constant term shared out with weights 1/(2L+1) (emb, MLP) and 1/((2L+1)H) (heads), and the
out-projection bias split equally over heads, so that Σ units == the image embedding up to rounding.

The model is read through its family's ``Tower`` (families/): forward hooks on the embedding norm, every
block's attention input and MLP output, and a pre-hook on the final norm. The per-head CLS row is
recomputed from the attention input (open_clip 3.3's nn.MultiheadAttention never calls
``out_proj.forward``, and transformers' attention kernels hide the heads). Only the CLS query is needed,
and the keys enter the CLS scores only through ``x_j · (W_K,hᵀ q_h)``, so the recomputation costs
O(n_heads·n_tokens·d_model) per image instead of another K/V projection.
"""

import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from residual_core.engine import families
from residual_core.engine.families import Block, Tower, UnsupportedModelError
from residual_core.engine.units import UnitTable

# Hooks live on the (shared) model: two threads tracing the same model at once would record each other's
# activations (a Streamlit server runs sessions in threads). One trace at a time per process.
TRACE_LOCK = threading.Lock()

__all__ = ["DecompositionError", "HeadMaps", "ResidualDecomposition", "UnsupportedModelError", "check_supported",
           "cls_head_contexts", "decompose_images"]


class DecompositionError(RuntimeError):
    """Σ units differs from encode_image by more than the tolerance."""


def check_supported(model: nn.Module) -> None:
    """Raise UnsupportedModelError naming the first feature the exact decomposition cannot represent."""
    families.tower(model)


@dataclass(frozen=True)
class HeadMaps:
    """Affine maps that take captured raw quantities to joint-space contributions.

    head (l,h):  c = (z/σ)·A[l,h] + (1/σ)·b[l,h] − (μ/σ)·w_head·g + w_head·bp
    mlp/emb:     c = (1/σ)·(v ⊙ γ)·P − (μ/σ)·w_other·g + w_other·bp
    """

    A: Tensor  # [n_layers, n_heads, d_head, d_embed]
    b: Tensor  # [n_layers, n_heads, d_embed]
    gamma_proj: Tensor  # [d_model, d_embed]  diag(γ)·P
    g: Tensor  # [d_embed]  γ·P (direction of the mean term)
    bp: Tensor  # [d_embed]  β·P
    w_head: float
    w_other: float
    eps: float

    @classmethod
    def from_model(cls, model: nn.Module) -> "HeadMaps":
        return cls.from_tower(families.tower(model))

    @classmethod
    def from_tower(cls, tower: Tower) -> "HeadMaps":
        blocks, d_model = tower.blocks, tower.d_model
        n_layers, n_heads = len(blocks), blocks[0].n_heads
        d_head = d_model // n_heads
        ln = tower.final_norm
        gamma = ln.weight.detach().float()
        beta = ln.bias.detach().float()
        proj = tower.proj.detach().float() if tower.proj is not None else torch.eye(d_model, device=gamma.device)
        gamma_proj = gamma[:, None] * proj  # [d_model, d_embed]
        a_maps, b_maps = [], []
        for block in blocks:
            ls1 = block.ls1.detach().float() if block.ls1 is not None else torch.ones_like(gamma)  # [d_model]
            w_o = block.w_o.detach().float().view(d_model, n_heads, d_head).permute(1, 2, 0)  # [n_heads, d_head, d_model]
            b_o = block.b_o.detach().float()  # [d_model]
            a_maps.append((w_o * ls1) @ gamma_proj)  # [n_heads, d_head, d_embed]
            b_maps.append(((b_o * ls1 / n_heads) @ gamma_proj).expand(n_heads, -1))  # [n_heads, d_embed]
        denom = 2 * n_layers + 1
        return cls(
            A=torch.stack(a_maps), b=torch.stack(b_maps), gamma_proj=gamma_proj, g=gamma @ proj, bp=beta @ proj,
            w_head=1.0 / (denom * n_heads), w_other=1.0 / denom, eps=float(ln.eps),
        )

    def project_heads(self, z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """z [n, n_layers, n_heads, d_head], mean/std [n] -> heads [n, n_layers, n_heads, d_embed]."""
        inv = (1.0 / std)[:, None, None, None]
        heads = torch.einsum("nlhd,lhde->nlhe", z, self.A) * inv + self.b[None] * inv
        shared = self.w_head * (self.bp[None] - (mean / std)[:, None] * self.g[None])  # [n, d_embed]
        return heads + shared[:, None, None, :]

    def project_other(self, v: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """v [n, ..., d_model] (MLP or emb at CLS) -> [n, ..., d_embed]."""
        extra = (1,) * (v.dim() - 2)
        inv = (1.0 / std).view(-1, *extra, 1)
        shared = self.w_other * (self.bp[None] - (mean / std)[:, None] * self.g[None])  # [n, d_embed]
        return (v @ self.gamma_proj) * inv + shared.view(v.shape[0], *extra, -1)


@dataclass(frozen=True)
class ResidualDecomposition:
    """Per-unit contributions of a batch; ``total()`` equals encode_image (unnormalised)."""

    embed: Tensor  # [n_images, d_embed]
    mlps: Tensor  # [n_images, n_layers, d_embed]
    heads: Tensor  # [n_images, n_layers, n_heads, d_embed]
    z: Tensor  # [n_images, n_layers, n_heads, d_head] raw per-head context at CLS
    mean: Tensor  # [n_images] μ of the ln_post input
    std: Tensor  # [n_images] sqrt(var + eps) of the ln_post input
    output: Tensor  # [n_images, d_embed] encode_image(x), unnormalised
    units: UnitTable

    def total(self) -> Tensor:
        return self.embed + self.mlps.sum(1) + self.heads.sum((1, 2))  # [n_images, d_embed]

    def stacked(self) -> Tensor:
        """All units in table order: [n_images, n_units, d_embed]."""
        n = self.embed.shape[0]
        return torch.cat([self.embed[:, None], self.mlps, self.heads.reshape(n, -1, self.heads.shape[-1])], 1)

    def errors(self) -> tuple[float, float]:
        """(max abs error, max abs error / max |output|) of Σ units against encode_image."""
        err = (self.total().double() - self.output.double()).abs().max().item()
        return err, err / max(self.output.abs().max().item(), 1e-30)


class Capture:
    """Context manager that records the CLS-side quantities of one forward pass; always removes hooks."""

    def __init__(self, tower: Tower):
        self.tower = tower
        self.handles: list = []
        self.attn_in: list[Tensor] = []  # per block [n, n_tokens, d_model]
        self.mlp_out: list[Tensor] = []  # per block [n, d_model] at CLS
        self.emb: Tensor | None = None  # [n, d_model]
        self.pre_ln: Tensor | None = None  # [n, d_model]

    def _tokens(self, x: Tensor) -> Tensor:
        # inside the blocks only: the embedding norm and the final norm always see batch-first tensors
        return x.transpose(0, 1) if self.tower.token_first else x  # -> [n, n_tokens, d_model]

    def __enter__(self) -> "Capture":
        t = self.tower
        self.handles.append(t.embed_norm.register_forward_hook(
            lambda m, i, o: setattr(self, "emb", o[:, 0])))
        for block in t.blocks:
            self.handles.append(block.attn_in.register_forward_hook(lambda m, i, o: self.attn_in.append(self._tokens(o))))
            self.handles.append(block.mlp_out.register_forward_hook(
                lambda m, i, o: self.mlp_out.append(self._tokens(o)[:, 0])))
        self.handles.append(t.final_norm.register_forward_pre_hook(
            lambda m, i: setattr(self, "pre_ln", i[0][:, 0] if i[0].dim() == 3 else i[0])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def cls_attention(block: Block, x: Tensor) -> Tensor:
    """Each head's attention weights at the CLS query: x [n, n_tokens, d_model] attention input -> [n, n_heads,
    n_tokens]. The one home of the attention maths (the decomposition and the per-token maps both read it)."""
    n_heads = block.n_heads
    d_model = x.shape[-1]
    d_head = d_model // n_heads
    q = (x[:, 0] @ block.w_q.T + block.b_q).view(-1, n_heads, d_head)  # [n, n_heads, d_head]
    # q·k_j = x_j·(W_K,hᵀ q_h) + q_h·b_K,h; the second term is constant over j and cancels in softmax.
    q_tilde = torch.einsum("nhd,hdm->nhm", q, block.w_k.view(n_heads, d_head, d_model))  # [n, n_heads, d_model]
    scores = torch.einsum("ntm,nhm->nht", x, q_tilde) / d_head**0.5  # [n, n_heads, n_tokens]
    return scores.softmax(-1)


def cls_head_contexts(block: Block, x: Tensor) -> Tensor:
    """Raw per-head attention context at the CLS query.

    x: [n, n_tokens, d_model] attention input -> z [n, n_heads, d_head].
    """
    n_heads = block.n_heads
    d_model = x.shape[-1]
    d_head = d_model // n_heads
    probs = cls_attention(block, x)  # [n, n_heads, n_tokens]
    x_bar = torch.einsum("nht,ntm->nhm", probs, x)  # [n, n_heads, d_model]
    w_v = block.w_v.view(n_heads, d_head, d_model)
    return torch.einsum("nhm,hdm->nhd", x_bar, w_v) + block.b_v.view(n_heads, d_head)  # [n, n_heads, d_head]


@torch.no_grad()
def decompose_images(model: nn.Module, images: Tensor, maps: HeadMaps | None = None, check: bool = True,
                     atol_rel: float = 1e-4) -> ResidualDecomposition:
    """Run the image tower once and return the exact per-unit decomposition.

    images: [n_images, 3, H, W], already preprocessed; the model must be fp32 and in eval mode.
    """
    tower = families.tower(model)
    if tower.module.training:
        raise ValueError("model is in training mode; call model.eval() (patch dropout must be off)")
    maps = maps if maps is not None else HeadMaps.from_tower(tower)
    with TRACE_LOCK, Capture(tower) as cap:
        output = tower.forward(images)
    z = torch.stack([cls_head_contexts(b, x) for b, x in zip(tower.blocks, cap.attn_in)], 1)  # [n, L, H, d_head]
    s = cap.pre_ln.float()
    mean = s.mean(-1)
    std = (s.var(-1, unbiased=False) + maps.eps).sqrt()
    decomp = ResidualDecomposition(
        embed=maps.project_other(cap.emb.float(), mean, std),
        mlps=maps.project_other(torch.stack(cap.mlp_out, 1).float(), mean, std),
        heads=maps.project_heads(z.float(), mean, std),
        z=z.float(), mean=mean, std=std, output=output.float(),
        units=UnitTable(len(tower.blocks), tower.blocks[0].n_heads),
    )
    if check:
        err, rel = decomp.errors()
        if rel > atol_rel:
            family = families.for_model(model)
            raise DecompositionError(
                f"sum of units differs from the image embedding by {err:.2e} (relative {rel:.2e} > {atol_rel}); "
                f"{family.name} {family.version()}, torch {torch.__version__}. Trace in fp32 with the model in "
                "eval mode; if both hold, this library version changed the block layout."
            )
    return decomp
