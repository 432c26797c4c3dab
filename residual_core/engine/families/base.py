"""The seam between the engine and a model library: what a family must say about its vision tower.

The decomposition (decompose.py) needs, per model, only this: where the residual stream can be read
(the embedding norm's output, each block's attention input and MLP output, the final norm's input), the
attention weights of each block, the final norm and projection, and a forward that returns the image
embedding. A family turns its own model class into a ``Tower`` and refuses, with a one-line
``UnsupportedModelError``, anything the exact decomposition cannot represent.
"""

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn


class UnsupportedModelError(ValueError):
    """The model cannot be decomposed exactly; we refuse rather than approximate."""


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into a loaded model; the message says what to do."""


@dataclass(frozen=True)
class Block:
    """One pre-norm residual block: x += ls1 ⊙ attn(attn_in(x)); x += mlp_out(...)."""

    attn_in: nn.Module  # its output is the attention input, all tokens: [n, n_tokens, d_model] (or token-first)
    mlp_out: nn.Module  # its output is what the MLP adds to the stream (after any layer scale)
    w_q: Tensor  # [d_model, d_model]  (out, in), as nn.Linear stores it
    b_q: Tensor  # [d_model]
    w_k: Tensor  # [d_model, d_model]
    w_v: Tensor  # [d_model, d_model]
    b_v: Tensor  # [d_model]
    w_o: Tensor  # [d_model, n_heads * d_head]
    b_o: Tensor  # [d_model]
    ls1: Tensor | None  # [d_model] layer scale of the attention branch, None when there is none
    n_heads: int


@dataclass(frozen=True)
class Tower:
    """A CLS-pooled ViT image tower, read from a loaded model (never typed in)."""

    embed_norm: nn.Module  # its output at CLS is the ``emb`` unit
    blocks: tuple[Block, ...]
    final_norm: nn.LayerNorm  # its input at CLS is the whole residual stream
    proj: Tensor | None  # [d_model, d_embed]; None: the embedding is the normed stream itself
    forward: Callable[[Tensor], Tensor]  # images [n, 3, H, W] -> unnormalised embeddings [n, d_embed]
    module: nn.Module  # the tower's root module (training flag, device)
    image_size: int
    n_tokens: int
    token_first: bool = False  # True when the blocks (not the two norms) see [n_tokens, n, d_model]

    @property
    def d_model(self) -> int:
        return int(self.final_norm.weight.shape[0])

    @property
    def d_embed(self) -> int:
        return int(self.proj.shape[1]) if self.proj is not None else self.d_model


class Family:
    """One model library. Subclasses say which spec strings they own and how to load and read them.

    ``load`` returns the pieces ``models.LoadedClip`` holds; ``weights_id`` must be cheap (no model
    build): it keys caches, so a lookup never loads a model.
    """

    name: str = ""
    prefixes: tuple[str, ...] = ()  # spec prefixes this family owns ("hf:", …); "" = the default family

    def owns(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def parse(self, text: str, random_weights: bool, seed: int) -> Any:
        raise NotImplementedError

    def weights_id(self, spec: Any) -> str:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def load(self, spec: Any, device: str, text: bool) -> tuple[nn.Module, Callable, Callable | None]:
        """(model in eval mode, fp32; preprocess PIL -> [3, H, W]; texts -> [n, d_embed] L2-normalised or None)."""
        raise NotImplementedError

    def tower(self, model: nn.Module) -> Tower:
        raise NotImplementedError

    def logit_scale(self, model: nn.Module) -> float:
        return float(model.logit_scale.exp().item())

    def normalisation(self, preprocess: Callable) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel that ``preprocess`` normalises with (to show what the model receives)."""
        raise NotImplementedError
