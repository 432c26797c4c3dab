"""Running logits of one session's ablation, updated in place a block of images at a time: each block's
arg-max is taken while the block is still in the core's cache from its update, rather than re-reading
200 MB of logits after the update (50 k images × 1,000 classes). Measured against update-then-arg-max
in one run: one-PC toggle 41–43 ms against 45–48, one head 116–118 ms against 131–134. Smaller blocks lost
it again to torch's per-call overhead (64 KB: 55–60 ms per PC), larger ones to cache misses (4 MB: 48 ms).
"""

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from residual_core.read.ablation import (AblationMask, AblationResult, apply_mask, as_tensor, pc_coefficients, readout,
                                    result_from_logits)
from residual_core.read.cache import Cache
from residual_core.build.store import copy_f32

BLOCK_BYTES = 1 << 19  # logits per block: 128 images at 1,000 classes, within a core's 2 MB L2

# beyond this many heads and PCs changed at once, recomputing from the mask is cheaper than toggling each
MAX_TOGGLES = 8


@dataclass
class LogitState:
    """Per-session running logits, updated in place: a PC toggle is one rank-one update of [n, C] (addr_),
    a head toggle one [n, k] × [k, C] product added in place (addmm_), with no [n, C] temporaries.

    ``logits`` is float32 and shared with the running tensor: a result's logits are a view that the next
    toggle changes (copy them to keep them). Predictions are numpy's arg-max of them (ties to the first class).
    """

    cache: Cache
    mask: AblationMask = field(default_factory=AblationMask)
    logits: np.ndarray | None = None

    def __post_init__(self):
        start = self.logits if self.logits is not None else apply_mask(self.cache, self.mask, readout(self.cache, True))
        self._reset(start)

    def _reset(self, logits: np.ndarray) -> None:
        self.logits = np.ascontiguousarray(logits, dtype=np.float32)  # [n_images, n_classes]
        self._live = torch.from_numpy(self.logits)  # the same memory
        self._predictions = self.logits.argmax(1)  # [n_images]

    def _update(self, terms: list) -> None:
        """logits += Σ alpha · left ⊗ right over ``terms`` (left: None for right [C] added to every image,
        [n] for a rank-one term, [n, k] against right [k, C]); then each block's arg-max."""
        step = max(1, BLOCK_BYTES // (4 * max(self.logits.shape[1], 1)))
        for start in range(0, len(self.logits), step):
            rows = slice(start, start + step)
            block = self._live[rows]  # [b, C] a view
            for left, right, alpha in terms:
                if left is None:
                    block.add_(right, alpha=alpha)
                elif left.dim() == 1:
                    block.addr_(left[rows], right, alpha=alpha)
                else:
                    block.addmm_(left[rows], right, alpha=alpha)
            self._predictions[rows] = self.logits[rows].argmax(1)

    def _pc_factor(self, layer: int, head: int, pc: int) -> float:
        return 0.0 if (layer, head, pc) in self.mask.pcs else self.mask.scale_of(layer, head, pc)

    def _pc_vector(self, unit: int, pc: int, factor: float) -> torch.Tensor | None:
        """v [n] such that PC ``pc`` of head ``unit`` changes the logits by outer(v, φ_pc W) at this factor."""
        if factor == 1.0:
            return None
        if factor == 0.0 and self.mask.mode == "zero":
            return -pc_coefficients(self.cache, unit, "zero", np.array([pc]))[0]
        return pc_coefficients(self.cache, unit, "mean", np.array([pc]))[0] * (factor - 1.0)

    def _pc_terms(self, unit: int, pc: int, vector: torch.Tensor | None, sign: float = 1.0) -> list:
        return [] if vector is None else [(vector, as_tensor(self.cache.pc_logits[unit, pc]).float(), sign)]  # [n] ⊗ [C]

    def toggle_pc(self, layer: int, head: int, pc: int) -> None:
        key = (layer, head, pc)
        before = self._pc_factor(*key)
        pcs = self.mask.pcs - {key} if key in self.mask.pcs else self.mask.pcs | {key}
        self.mask = replace(self.mask, pcs=pcs)
        if (layer, head) in self.mask.heads:
            return  # the whole head is off: its PCs do not reach the logits
        u = self.cache.head_index(layer, head)
        old, new = self._pc_vector(u, pc, before), self._pc_vector(u, pc, self._pc_factor(*key))
        if old is None or new is None:
            self._update(self._pc_terms(u, pc, new) + self._pc_terms(u, pc, old, -1.0))
        else:
            self._update(self._pc_terms(u, pc, new - old))

    def _head_terms(self, unit: int, sign: float) -> list:
        """Terms adding sign × (the change of ablating an otherwise untouched head)."""
        cache = self.cache
        rows = as_tensor(cache.pc_logits[unit]).float()  # [k, C]
        if self.mask.mode == "zero":
            coef = as_tensor(copy_f32(cache.head_scores[unit]))  # [n_pcs, n]
            return [(None, as_tensor(cache.mean_logits[unit]).float(), -sign), (coef.T, rows, -sign)]
        return [(pc_coefficients(cache, unit, "mean").T, rows, -sign)]  # [n, k] @ [k, C]

    def toggle_head(self, layer: int, head: int) -> None:
        # Ablating replaces whatever the head's PCs and λ currently contribute by the head's ablated value.
        key = (layer, head)
        u = self.cache.head_index(layer, head)
        ablating = key not in self.mask.heads
        sign = 1.0 if ablating else -1.0
        touched = {p[2] for p in self.mask.pcs if p[:2] == key} | {s[2] for s in self.mask.scales if s[:2] == key}
        terms = self._head_terms(u, sign)
        for pc in sorted(touched):
            terms += self._pc_terms(u, pc, self._pc_vector(u, pc, self._pc_factor(layer, head, pc)), -sign)
        self._update(terms)
        heads = self.mask.heads | {key} if ablating else self.mask.heads - {key}
        self.mask = replace(self.mask, heads=heads)

    def set_mask(self, mask: AblationMask) -> None:
        """Move to ``mask``: toggles for the heads/PCs that differ, a full recompute for anything else."""
        old = self.mask
        if (mask.mode, mask.scales, mask.mlps, mask.embed) != (old.mode, old.scales, old.mlps, old.embed) or \
                len(mask.heads ^ old.heads) + len(mask.pcs ^ old.pcs) > MAX_TOGGLES:
            self.mask = mask
            self._reset(apply_mask(self.cache, mask, readout(self.cache, logits=True)))
            return
        for key in sorted(old.heads - mask.heads):
            self.toggle_head(*key)
        for key in sorted(mask.pcs ^ old.pcs):
            self.toggle_pc(*key)
        for key in sorted(mask.heads - old.heads):
            self.toggle_head(*key)

    def result(self) -> AblationResult:
        return result_from_logits(self.cache, self.logits, self._predictions.copy())
