"""Zero-shot classifiers and text embeddings, through open_clip's own helpers."""

import numpy as np
import torch
from open_clip import build_zero_shot_classifier
from torch import Tensor

from residual_core.models import LoadedClip


@torch.no_grad()
def build_classifier(loaded: LoadedClip, classnames: tuple[str, ...], templates: tuple[str, ...],
                     device: str = "cpu") -> Tensor:
    """Class text directions W [d_embed, n_classes]: normalize(mean(normalize(template embeddings)))."""
    _require_text(loaded)
    if not classnames:
        raise ValueError("a classifier needs at least one class name")
    return build_zero_shot_classifier(
        loaded.model, loaded.tokenizer, list(classnames), list(templates), num_classes_per_batch=10, device=device
    ).float().cpu()


def _require_text(loaded: LoadedClip) -> None:
    if loaded.tokenizer is None:
        raise ValueError(f"{loaded.spec.name} was loaded without its text side (text=False); load it with text=True")


@torch.no_grad()
def embed_texts(loaded: LoadedClip, texts: list[str], batch_size: int = 256, device: str = "cpu") -> Tensor:
    """L2-normalised text embeddings [n_texts, d_embed]."""
    _require_text(loaded)
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = loaded.tokenizer(texts[start:start + batch_size]).to(device)
        out.append(loaded.model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(out)


def logit_scale(loaded: LoadedClip) -> float:
    return float(loaded.model.logit_scale.exp().item())


def accuracy(embeddings: np.ndarray | Tensor, weights: np.ndarray | Tensor, labels: np.ndarray) -> float:
    """Top-1 accuracy of argmax(embeddings · W); argmax ignores each image's norm."""
    logits = np.asarray(embeddings, dtype=np.float32) @ np.asarray(weights, dtype=np.float32)
    return float((logits.argmax(1) == labels).mean())
