"""Probe new images against a cache: the same exact decomposition, placed in the dataset's PCA coordinates."""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from residual_core.read.ablation import AblationMask, ablate_embeddings
from residual_core.read.cache import Cache
from residual_core.build.store import copy_f32
from residual_core.engine.decompose import ResidualDecomposition, decompose_images
from residual_core.engine.models import LoadedClip
from residual_core.engine.tokens import TokenParts, attention_map, heads_map, patch_map, token_parts
from residual_core.read.typicality import ALARM, thumbnail, typicality_model


@dataclass(frozen=True)
class ProbeResult:
    decomposition: ResidualDecomposition  # of the probed images (exact; Σ units == encode_image)
    scores: np.ndarray  # [n_probe, n_heads_total, n_pcs] coefficients in the cache's basis
    percentiles: np.ndarray  # [n_probe, n_heads_total, n_pcs] share of dataset images with a lower coefficient
    probs: np.ndarray  # [n_probe, n_classes] softmax(logit_scale · cos)
    logit_scale: float
    inputs: np.ndarray  # [n_probe, H, W, 3] uint8: what the model received (preprocessed, normalisation undone)
    typicality: np.ndarray  # [n_probe] share of held-out cached images further from the cache's own (typicality.py)
    tokens: TokenParts  # every head's per-token parts of these images (tokens.py): maps are arithmetic on them

    def where(self, image: int, cache: Cache, heads: list[tuple[int, int]], kind: str,
              target: int) -> tuple[np.ndarray, float]:
        """(patch map [grid, grid], the share no patch holds: CLS's term and the constant) of one image, summed over
        ``heads``: kind "class" (the push toward class ``target``, in logits: the map, summed over every unit, adds up
        to the class's logit), "pc" (PC ``target`` of the one head
        in ``heads``: the map adds up, with that share, to its coefficient) or "attention" (raw CLS attention)."""
        if kind == "attention":
            weights = attention_map(self.tokens, heads)[image]  # [T]
            return patch_map(weights, self.tokens.grid), float(weights[0])
        if kind == "class":
            # c·w is the logit's numerator: logit = logit_scale · (Σ units)·w / ‖encode_image‖
            direction = torch.from_numpy(np.array(cache.classifier[:, target], np.float32) * self.logit_factor(image))
            offset = 0.0
        elif kind == "pc" and len(heads) == 1:
            unit = cache.head_index(*heads[0])
            direction = torch.from_numpy(np.array(cache.head_components[unit, target], np.float32))
            offset = float(np.asarray(cache.head_mean[unit], np.float64) @ direction.double().numpy())
        else:
            raise ValueError(f"a map is of kind class, pc (one head) or attention, not {kind!r} over {len(heads)} heads")
        per_token, constant = heads_map(self.tokens, heads, direction)
        return patch_map(per_token[image], self.tokens.grid), float(per_token[image, 0] + constant[image] - offset)

    def is_unusual(self, image: int, threshold: float = ALARM) -> bool:
        """Further from the cached images than all but ``threshold`` of held-out ones: the explanation and the
        prediction are read in coordinates fitted on other images, and may not transfer."""
        return bool(self.typicality[image] < threshold)

    def driving_heads(self, image: int, cls: int, cache: Cache, top: int = 5) -> list[tuple[int, int]]:
        """(layer, head) of the heads that push hardest toward ``cls`` (direct logit attribution), strongest first."""
        order = np.argsort(-self.head_logit_attribution(image, cls, cache), axis=None, kind="stable")[:top]
        return [cache.units.head_at(int(u)) for u in order]

    def top_classes(self, image: int, k: int = 5) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs[image])[:k]
        return [(int(c), float(self.probs[image, c])) for c in order]

    def logit_factor(self, image: int) -> float:
        """What turns a contribution's dot product with a class direction into logits: logit_scale / ‖encode_image‖
        (the logit is logit_scale times the cosine of the image embedding and the unit-norm class direction)."""
        return self.logit_scale / float(np.linalg.norm(self.decomposition.output[image].numpy()))

    def head_logit_attribution(self, image: int, cls: int, cache: Cache) -> np.ndarray:
        """Direct contribution of each head to the class logit, in logits: [n_layers, n_heads]. With the emb's and
        the MLPs' it adds up to the logit."""
        heads = self.decomposition.heads[image].numpy()  # [L, H, d_embed]
        return (heads @ cache.classifier[:, cls]) * self.logit_factor(image)

    def pc_push(self, image: int, cls: int, cache: Cache, top: int = 10) -> list[tuple[int, int, int, float]]:
        """(layer, head, pc, push) of the PCs whose centred coefficient pushes most toward ``cls``: the change in the
        class's logit from the dataset's mean coefficient to this image's."""
        push = (self.scores[image] - cache.score_mean) * cache.pc_logits[:, :, cls] * self.logit_factor(image)
        flat = np.argsort(-push, axis=None)[:top]
        units, pcs = np.unravel_index(flat, push.shape)
        return [(*cache.units.head_at(u), int(k), float(push[u, k])) for u, k in zip(units, pcs)]


PERCENTILE_SAMPLE = 10_000  # dataset images a percentile is read against (``Cache.sample`` beyond it)


def _percentiles(cache: Cache, scores: np.ndarray) -> np.ndarray:
    """scores [n_probe, U, n_pcs] -> the share of the dataset's images (``PERCENTILE_SAMPLE`` of them at most)
    with a lower coefficient, same shape."""
    cache = cache.sample(PERCENTILE_SAMPLE)
    out = np.zeros_like(scores)
    for u in range(scores.shape[1]):
        data = np.sort(copy_f32(cache.head_scores[u]), axis=1)  # [n_pcs, n]
        for k in range(scores.shape[2]):
            out[:, u, k] = np.searchsorted(data[k], scores[:, u, k]) / data.shape[1]
    return out


@torch.no_grad()
def probe_images(loaded: LoadedClip, cache: Cache, images: list[Image.Image]) -> ProbeResult:
    """Decompose new images with the cache's model and express them in the cache's coordinates."""
    if loaded.weights_id != cache.manifest["inputs"]["weights"]:
        raise ValueError("the loaded model is not the one this cache was built with")
    batch = torch.stack([loaded.preprocess(im.convert("RGB")) for im in images])
    size = cache.thumbs.shape[1]
    thumbs = np.stack([thumbnail(im, size) for im in images])  # [n, t, t, 3] as the cache's own
    decomp = decompose_images(loaded.model, batch)
    n = len(images)
    heads = decomp.heads.numpy().reshape(n, -1, decomp.heads.shape[-1])  # [n, U, d_embed]
    scores = np.einsum("nud,ukd->nuk", heads - cache.head_mean, cache.head_components)  # [n, U, n_pcs]
    emb = decomp.output.numpy()
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scale = float(cache.manifest["logit_scale"])
    logits = scale * emb @ cache.classifier
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return ProbeResult(decomp, scores.astype(np.float32), _percentiles(cache, scores), probs, scale,
                       loaded.input_pixels(batch), typicality_model(cache).typicality(emb, scores, thumbs),
                       token_parts(loaded.model, batch))


def as_cache(result: ProbeResult, cache: Cache) -> Cache:
    """The probed images as a cache in ``cache``'s basis (its classifier, components and mean coefficients),
    so that ablation runs on them through the one ablation home (ablation.py)."""
    decomp = result.decomposition
    scores = np.ascontiguousarray(result.scores.transpose(1, 2, 0))  # [n_heads_total, n_pcs, n_probe]
    return Cache.from_arrays(cache.path, cache.manifest, {
        "head_scores": scores, "head_mean": cache.head_mean, "head_components": cache.head_components,
        "output": decomp.output.numpy(), "labels": np.zeros(scores.shape[2], dtype=np.int64),
        "classifier": cache.classifier, "mlps": decomp.mlps.numpy(), "embed": decomp.embed.numpy(),
        "head_score_mean": cache.score_mean})


def counterfactual_probs(result: ProbeResult, cache: Cache, mask: AblationMask) -> np.ndarray:
    """Class probabilities [n_probe, n_classes] of the probed images with ``mask`` applied.

    Replacements use the cache's statistics (mean ablation = the dataset mean of that unit or PC).
    """
    emb = ablate_embeddings(as_cache(result, cache), mask, stats=cache).astype(np.float64)  # [n_probe, d_embed]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    logits = result.logit_scale * emb @ cache.classifier
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)
