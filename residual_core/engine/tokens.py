"""Where a head looks: each token's exact share of a head's contribution at CLS.

At the CLS query, head h of layer l writes z = Σ_t p_t v_t with v_t = W_V,h x_t + b_V,h (x_t: token t's attention
input, p: the CLS row of the head's attention), and the decomposition carries z to the joint space as
c_h = (z/σ)·A_h + b_h/σ − w(μ/σ)·g + w·bp (decompose.HeadMaps; σ, μ: the image's final LayerNorm statistics). So
  term_t = p_t (v_t · A_h) / σ          what token t sends (its value bias included, in proportion to attention)
  constant = b_h/σ − w(μ/σ)·g + w·bp     what no token sends (the out-projection bias and LayerNorm shares)
and Σ_t term_t + constant = c_h exactly. A map is the inner product of the terms with one direction: a text, a
head's PC (then the map and the constant's share add up to the PC coefficient), or a class's classifier column.
Only p, v and σ are kept per image, so a new map for another head, PC or text is arithmetic (no model call).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

REGIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")


@dataclass(frozen=True)
class TokenParts:
    """What a map needs of a batch of images: attention, values, the write maps and the LayerNorm statistics."""

    probs: Tensor  # [n, L, H, T] the CLS query's attention over the tokens (token 0 is CLS)
    values: Tensor  # [n, L, H, T, d_head] v_t = W_V,h x_t + b_V,h
    write: Tensor  # [L, H, d_head, d_embed] A_h (decompose.HeadMaps.A)
    constant: Tensor  # [n, L, H, d_embed] the part no token sends
    inv_std: Tensor  # [n] 1/σ of the final LayerNorm at CLS

    @property
    def grid(self) -> int:
        """Patches per side (the tokens after CLS form a square grid)."""
        side = int(round((self.probs.shape[-1] - 1) ** 0.5))
        if side * side != self.probs.shape[-1] - 1:
            raise ValueError(f"{self.probs.shape[-1] - 1} patch tokens do not form a square grid")
        return side

    def terms(self, layer: int, head: int) -> Tensor:
        """[n, T, d_embed] every token's term of one head."""
        sent = self.values[:, layer, head] @ self.write[layer, head]  # [n, T, d_embed]
        return self.probs[:, layer, head, :, None] * sent * self.inv_std[:, None, None]

    def contributions(self) -> Tensor:
        """[n, L, H, d_embed] Σ_t term_t + constant: the heads' contributions, to compare with the decomposition."""
        sent = torch.einsum("nlht,nlhtd,lhde->nlhe", self.probs, self.values, self.write)
        return sent * self.inv_std[:, None, None, None] + self.constant

    def along(self, direction: Tensor) -> Tensor:
        """direction [d_embed] or [L, H, d_embed] -> [n, L, H, T] each token's term · direction, and nothing else."""
        per_head = direction.expand(*self.write.shape[:2], -1) if direction.dim() == 1 else direction
        read = torch.einsum("lhde,lhe->lhd", self.write, per_head.to(self.write.dtype))  # [L, H, d_head]
        return torch.einsum("nlhtd,lhd->nlht", self.values, read) * self.probs * self.inv_std[:, None, None, None]

    def constant_along(self, direction: Tensor) -> Tensor:
        """[n, L, H] the constant's share of a map (direction as in ``along``)."""
        per_head = direction.expand(*self.write.shape[:2], -1) if direction.dim() == 1 else direction
        return (self.constant * per_head.to(self.constant.dtype)).sum(-1)


def _cls_attention(block, x: Tensor) -> tuple[Tensor, Tensor]:
    """x [n, T, d_model] a block's attention input -> (probs [n, H, T], values [n, H, T, d_head]) at the CLS query,
    computed as decompose.cls_head_contexts does (whose z is Σ_t probs·values)."""
    from residual_core.engine.decompose import cls_attention

    n_heads, d_model = block.n_heads, x.shape[-1]
    d_head = d_model // n_heads
    probs = cls_attention(block, x)  # [n, H, T]
    values = torch.einsum("ntm,hdm->nhtd", x, block.w_v.view(n_heads, d_head, d_model)) + block.b_v.view(
        n_heads, 1, d_head)  # [n, H, T, d_head]
    return probs, values


@torch.no_grad()
def token_parts(model, images: Tensor) -> TokenParts:
    """One forward pass of preprocessed images [n, 3, H, W] -> what every map of every head needs."""
    from residual_core.engine import families
    from residual_core.engine.decompose import TRACE_LOCK, Capture, HeadMaps

    tower = families.tower(model)
    if tower.module.training:
        raise ValueError("model is in training mode; call model.eval() (patch dropout must be off)")
    maps = HeadMaps.from_tower(tower)
    with TRACE_LOCK, Capture(tower) as cap:
        tower.forward(images)
    parts = [_cls_attention(block, x.float()) for block, x in zip(tower.blocks, cap.attn_in)]
    probs = torch.stack([p for p, _ in parts], 1)  # [n, L, H, T]
    values = torch.stack([v for _, v in parts], 1)  # [n, L, H, T, d_head]
    s = cap.pre_ln.float()
    mean, std = s.mean(-1), (s.var(-1, unbiased=False) + maps.eps).sqrt()  # [n]
    inv = 1.0 / std
    shared = maps.w_head * (maps.bp[None] - (mean * inv)[:, None] * maps.g[None])  # [n, d_embed]
    constant = maps.b[None] * inv[:, None, None, None] + shared[:, None, None, :]  # [n, L, H, d_embed]
    return TokenParts(probs, values, maps.A.float(), constant, inv)


def patch_map(per_token: Tensor | np.ndarray, grid: int) -> np.ndarray:
    """[..., T] per-token values -> [..., grid, grid] the patches' (token 0, CLS, left out), row-major as ViTs lay
    patches out (top-left first)."""
    values = np.asarray(per_token, np.float64)
    return values[..., 1:].reshape(*values.shape[:-1], grid, grid)


@dataclass(frozen=True)
class Where:
    """Where a map's dominant push lies: its sign, the 3 × 3 region of its peak and that region's share of it."""

    sign: int  # +1: the map pushes toward its direction on the whole, −1: away, 0: no push at all
    region: str
    share: float  # of the dominant sign's mass, in ``region``
    positive: float  # the map's positive and negative sums
    negative: float


def where_in_words(patches: np.ndarray) -> Where:
    """[g, g] a map -> where its dominant part (toward or away, whichever has more mass) concentrates."""
    values = np.asarray(patches, np.float64)
    positive, negative = float(values.clip(0, None).sum()), float(values.clip(None, 0).sum())
    sign = 1 if positive >= -negative else -1
    push = np.clip(sign * values, 0, None)
    total = push.sum()
    if total <= 0:
        return Where(0, "nowhere in particular", 0.0, positive, negative)
    g = push.shape[0]
    edges = np.linspace(0, g, 4).round().astype(int)
    shares = [push[edges[r]:edges[r + 1], edges[c]:edges[c + 1]].sum() / total for r in range(3) for c in range(3)]
    best = int(np.argmax(shares))
    return Where(sign, REGIONS[best], float(shares[best]), positive, negative)


def rest_in_words(patches: np.ndarray, rest: float) -> str:
    """The part of a map no patch holds (the CLS token's own term, biases, LayerNorm shares), in its units and as a
    share of the map's whole mass, and whether it outweighs the patches."""
    mass = float(np.abs(patches).sum()) + abs(rest)
    share = abs(rest) / mass if mass else 0.0
    outweighs = abs(rest) > abs(float(np.sum(patches)))
    return (f"what no patch holds (the CLS token's own term and the constant): {rest:+.3g}, {share:.0%} of the map's "
            "mass" + ("; it outweighs the patches' sum" if outweighs else ""))


def mask_to_patches(mask: np.ndarray, grid: int) -> np.ndarray:
    """[H, W] per-pixel coverage (0..1) of the image as the model sees it (square, resized whole) -> [grid, grid] the
    share of each patch it covers. Where the side is no multiple of the grid (a 48 px scene under a 7 × 7 ViT-B/32
    grid), every pixel is split ``grid`` × ``grid`` first, so each patch averages exactly the area it spans."""
    values = np.asarray(mask, np.float64)
    h, w = values.shape
    if h % grid or w % grid:
        values = np.repeat(np.repeat(values, grid, axis=0), grid, axis=1)  # [H·grid, W·grid]
        h, w = values.shape
    return values.reshape(grid, h // grid, grid, w // grid).mean((1, 3))


def pointing_and_mass(patches: np.ndarray, covered: np.ndarray, threshold: float = 0.25) -> tuple[bool, float]:
    """(is the map's top patch inside the mask, the share of the map's positive mass inside it): the pointing game
    and mass-in-mask scores of a map against a [grid, grid] coverage (inside = at least ``threshold`` covered)."""
    inside = np.asarray(covered) >= threshold
    values = np.asarray(patches, np.float64)
    top = np.unravel_index(np.argmax(values), values.shape)
    push = np.clip(values, 0, None)
    return bool(inside[top]), float(push[inside].sum() / push.sum()) if push.sum() > 0 else 0.0


def heads_map(parts: TokenParts, heads: list[tuple[int, int]], direction: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(per-token map [n, T], the constant's share [n]) of ``direction`` summed over ``heads`` ((layer, head) pairs);
    the two add up to the heads' joint contribution · direction."""
    along, constant = parts.along(direction), parts.constant_along(direction)  # [n, L, H, T], [n, L, H]
    rows = [along[:, layer, head] for layer, head in heads]
    fixed = [constant[:, layer, head] for layer, head in heads]
    return torch.stack(rows).sum(0).double().numpy(), torch.stack(fixed).sum(0).double().numpy()


def attention_map(parts: TokenParts, heads: list[tuple[int, int]]) -> np.ndarray:
    """[n, T] the CLS query's raw attention, averaged over ``heads``: the baseline a map is scored against."""
    return torch.stack([parts.probs[:, layer, head] for layer, head in heads]).mean(0).double().numpy()


def text_direction(texts: np.ndarray, index: int, against_mean: bool = False) -> Tensor:
    """[d_embed] text ``index`` of texts [m, d_embed] (unit rows), or that text minus the mean of all of them, as
    TextSpan's demo draws a class's map against the other classes."""
    rows = np.asarray(texts, np.float32)
    direction = rows[index] - rows.mean(0) if against_mean else rows[index]
    return torch.from_numpy(np.ascontiguousarray(direction))


def overlay(image: np.ndarray, patches: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """[H, W, 3] uint8: the image with the map [g, g] over it, red toward and blue away, each patch a block of the
    image's own pixels (centred at 0; the strongest patch at full ``alpha``)."""
    height, width = image.shape[:2]
    g = patches.shape[0]
    scaled = np.clip(np.asarray(patches, np.float64) / (float(np.abs(patches).max()) or 1.0), -1, 1)  # [g, g]
    colour = np.where(scaled[..., None] >= 0, np.array([214.0, 39, 40]), np.array([31.0, 119, 180]))  # [g, g, 3]
    block = np.ones((height // g, width // g, 1))
    colour_px, strength_px = np.kron(colour, block), np.kron(np.abs(scaled)[..., None] * alpha, block)
    blended = image.astype(np.float64) * (1 - strength_px) + colour_px * strength_px
    return blended.clip(0, 255).astype(np.uint8)
