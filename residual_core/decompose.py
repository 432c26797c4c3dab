"""Exact decomposition of an open_clip ViT image embedding into per-unit contributions.

Units (SPEC §3): ``emb`` (ln_pre output at CLS), one ``mlp`` per layer, one ``head`` per
(layer, head), in that order. ln_post is linearised with each image's own mean and std, the
constant term shared out with weights 1/(2L+1) (emb, MLP) and 1/((2L+1)H) (heads), and the
out-projection bias split equally over heads, so that Σ units == encode_image up to rounding.

Capture: forward hooks on ln_pre, every block's ln_1 (attention input) and ls_2 (MLP output after
LayerScale; an nn.Identity when there is none), and a pre-hook on ln_post. The per-head CLS row is
recomputed from the attention input because open_clip 3.3's nn.MultiheadAttention never calls
``out_proj.forward``. Only the CLS query is needed, and the keys enter the CLS scores only through
``x_j · (W_K,hᵀ q_h)``, so the recomputation costs O(n_heads·n_tokens·d_model) per image instead of
another K/V projection.
"""

import threading
from dataclasses import dataclass
from typing import Iterator

import open_clip
import torch
from open_clip.transformer import LayerScale, ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn


# Hooks live on the (shared) model: two threads tracing the same model at once would record each other's
# activations (a Streamlit server runs sessions in threads). One trace at a time per process.
_TRACE_LOCK = threading.Lock()


class UnsupportedModelError(ValueError):
    """The model cannot be decomposed exactly; we refuse rather than approximate."""


class DecompositionError(RuntimeError):
    """Σ units differs from encode_image by more than the tolerance."""


@dataclass(frozen=True)
class Unit:
    kind: str  # "emb" | "mlp" | "head"
    layer: int  # -1 for emb
    head: int  # -1 for emb and mlp

    @property
    def label(self) -> str:
        if self.kind == "emb":
            return "emb"
        if self.kind == "mlp":
            return f"L{self.layer}MLP"
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class UnitTable:
    """Labels of the unit axis: emb, then MLPs by layer, then heads layer-major."""

    n_layers: int
    n_heads: int

    @property
    def units(self) -> tuple[Unit, ...]:
        emb = (Unit("emb", -1, -1),)
        mlps = tuple(Unit("mlp", l, -1) for l in range(self.n_layers))
        heads = tuple(Unit("head", l, h) for l in range(self.n_layers) for h in range(self.n_heads))
        return emb + mlps + heads

    @property
    def labels(self) -> list[str]:
        return [u.label for u in self.units]

    def head_index(self, layer: int, head: int) -> int:
        """Flat index of a head among the heads only (layer-major)."""
        return layer * self.n_heads + head


def check_config_supported(arch: str, config: dict | None) -> None:
    """Refuse from open_clip's model config, before building: a tower the decomposition cannot represent.

    The built model is checked again by ``check_supported``; this only saves building (and allocating)
    a large model that would be refused anyway.
    """
    vision = (config or {}).get("vision_cfg") or {}
    if vision.get("timm_model_name"):
        raise UnsupportedModelError(f"{arch}: the image tower is the timm model {vision['timm_model_name']!r}, not "
                                    "open_clip's VisionTransformer; only open_clip ViT towers can be decomposed")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise UnsupportedModelError(f"{arch}: the image tower is a ResNet; only ViT towers have attention heads "
                                    "to decompose (try ViT-B-32, ViT-B-16 or ViT-L-14)")
    if vision.get("attentional_pool"):
        raise UnsupportedModelError(f"{arch}: attentional pooling (CoCa-style) mixes all tokens after the last "
                                    "block, so a CLS decomposition would not be exact; refused")
    if vision.get("pool_type", "tok") != "tok":
        raise UnsupportedModelError(f"{arch}: pool_type={vision['pool_type']!r} pools every token; only CLS-token "
                                    "pooling ('tok') decomposes exactly into per-head CLS contributions")


def check_supported(model: nn.Module) -> None:
    """Raise UnsupportedModelError naming the first feature the exact decomposition cannot represent."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(
            f"image tower is {type(visual).__name__}, not open_clip's VisionTransformer: only ViT towers "
            "(e.g. ViT-B-32, ViT-B-16, ViT-L-14) can be decomposed into heads"
        )
    if visual.attn_pool is not None:
        raise UnsupportedModelError("attentional pooling (CoCa-style) mixes all tokens after the last block; "
                                    "the CLS decomposition would not be exact, so the model is refused")
    if visual.pool_type != "tok":
        raise UnsupportedModelError(f"pool_type={visual.pool_type!r}: only CLS-token pooling ('tok') is exact")
    if not isinstance(visual.ln_post, nn.LayerNorm):
        raise UnsupportedModelError(f"final norm is {type(visual.ln_post).__name__}, expected LayerNorm")
    for index, block in enumerate(visual.transformer.resblocks):
        if type(block) is not ResidualAttentionBlock:
            raise UnsupportedModelError(
                f"block {index} is {type(block).__name__}; only open_clip's ResidualAttentionBlock is supported"
            )
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            raise UnsupportedModelError(f"block {index}: attention is not a packed nn.MultiheadAttention")
        if attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
            raise UnsupportedModelError(f"block {index}: extra key/value tokens or cross-attention")
        if not isinstance(block.ls_1, (nn.Identity, LayerScale)):
            raise UnsupportedModelError(f"block {index}: unknown layer-scale module {type(block.ls_1).__name__}")


def _layer_scale(module: nn.Module, d_model: int, like: Tensor) -> Tensor:
    if isinstance(module, LayerScale):
        return module.gamma.detach().to(like)
    return torch.ones(d_model, dtype=like.dtype, device=like.device)


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
        visual = model.visual
        blocks = visual.transformer.resblocks
        n_layers, n_heads = len(blocks), blocks[0].attn.num_heads
        d_model = visual.transformer.width
        d_head = d_model // n_heads
        ln = visual.ln_post
        gamma = ln.weight.detach().float()
        beta = ln.bias.detach().float()
        proj = visual.proj.detach().float() if visual.proj is not None else torch.eye(d_model, device=gamma.device)
        gamma_proj = gamma[:, None] * proj  # [d_model, d_embed]
        a_maps, b_maps = [], []
        for block in blocks:
            ls1 = _layer_scale(block.ls_1, d_model, gamma)
            w_o = block.attn.out_proj.weight.detach().float()  # [d_model, n_heads*d_head]
            b_o = block.attn.out_proj.bias.detach().float()
            w_o = w_o.view(d_model, n_heads, d_head).permute(1, 2, 0)  # [n_heads, d_head, d_model]
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


class _Capture:
    """Context manager that records the CLS-side quantities of one forward pass; always removes hooks."""

    def __init__(self, visual: VisionTransformer):
        self.visual = visual
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.handles: list = []
        self.attn_in: list[Tensor] = []
        self.mlp_out: list[Tensor] = []
        self.emb: Tensor | None = None
        self.pre_ln: Tensor | None = None

    def _cls(self, x: Tensor) -> Tensor:
        return x[:, 0] if self.batch_first else x[0]

    def __enter__(self) -> "_Capture":
        v = self.visual
        self.handles.append(v.ln_pre.register_forward_hook(lambda m, i, o: setattr(self, "emb", o[:, 0])))
        for block in v.transformer.resblocks:
            self.handles.append(block.ln_1.register_forward_hook(
                lambda m, i, o: self.attn_in.append(o if self.batch_first else o.transpose(0, 1))))
            self.handles.append(block.ls_2.register_forward_hook(lambda m, i, o: self.mlp_out.append(self._cls(o))))
        self.handles.append(v.ln_post.register_forward_pre_hook(
            lambda m, i: setattr(self, "pre_ln", i[0][:, 0] if i[0].dim() == 3 else i[0])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def cls_head_contexts(block: ResidualAttentionBlock, x: Tensor) -> Tensor:
    """Raw per-head attention context at the CLS query.

    x: [n, n_tokens, d_model] attention input (ln_1 output) -> z [n, n_heads, d_head].
    """
    attn = block.attn
    n_heads = attn.num_heads
    d_model = x.shape[-1]
    d_head = d_model // n_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)  # each [d_model, d_model]
    b_q, _, b_v = attn.in_proj_bias.chunk(3)
    q = (x[:, 0] @ w_q.T + b_q).view(-1, n_heads, d_head)  # [n, n_heads, d_head]
    # q·k_j = x_j·(W_K,hᵀ q_h) + q_h·b_K,h; the second term is constant over j and cancels in softmax.
    q_tilde = torch.einsum("nhd,hdm->nhm", q, w_k.view(n_heads, d_head, d_model))  # [n, n_heads, d_model]
    scores = torch.einsum("ntm,nhm->nht", x, q_tilde) / d_head**0.5  # [n, n_heads, n_tokens]
    probs = scores.softmax(-1)
    x_bar = torch.einsum("nht,ntm->nhm", probs, x)  # [n, n_heads, d_model]
    return torch.einsum("nhm,hdm->nhd", x_bar, w_v.view(n_heads, d_head, d_model)) + b_v.view(n_heads, d_head)


@torch.no_grad()
def decompose_images(model: nn.Module, images: Tensor, maps: HeadMaps | None = None, check: bool = True,
                     atol_rel: float = 1e-4) -> ResidualDecomposition:
    """Run the image tower once and return the exact per-unit decomposition.

    images: [n_images, 3, H, W], already preprocessed; the model must be fp32 and in eval mode.
    """
    check_supported(model)
    visual = model.visual
    if visual.training:
        raise ValueError("model is in training mode; call model.eval() (patch dropout must be off)")
    maps = maps if maps is not None else HeadMaps.from_model(model)
    with _TRACE_LOCK, _Capture(visual) as cap:
        output = visual(images)
        if isinstance(output, tuple):
            output = output[0]
    blocks = visual.transformer.resblocks
    z = torch.stack([cls_head_contexts(b, x) for b, x in zip(blocks, cap.attn_in)], 1)  # [n, L, H, d_head]
    s = cap.pre_ln.float()
    mean = s.mean(-1)
    std = (s.var(-1, unbiased=False) + maps.eps).sqrt()
    decomp = ResidualDecomposition(
        embed=maps.project_other(cap.emb.float(), mean, std),
        mlps=maps.project_other(torch.stack(cap.mlp_out, 1).float(), mean, std),
        heads=maps.project_heads(z.float(), mean, std),
        z=z.float(), mean=mean, std=std, output=output.float(),
        units=UnitTable(len(blocks), blocks[0].attn.num_heads),
    )
    if check:
        err, rel = decomp.errors()
        if rel > atol_rel:
            raise DecompositionError(
                f"sum of units differs from encode_image by {err:.2e} (relative {rel:.2e} > {atol_rel}); "
                f"open_clip {open_clip.__version__}, torch {torch.__version__}. Trace in fp32 with the model in "
                "eval mode; if both hold, this open_clip version changed the block layout."
            )
    return decomp


def iter_batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]
