"""Zero-shot classifiers and text embeddings, through each family's own text encoder."""

import numpy as np
import torch
from torch import Tensor

from residual_core.engine.models import LoadedClip
from residual_core.engine.progress import steps


@torch.no_grad()
def build_classifier(loaded: LoadedClip, classnames: tuple[str, ...], templates: tuple[str, ...],
                     device: str = "cpu") -> Tensor:
    """Class text directions W [d_embed, n_classes]: normalize(mean(normalize(template embeddings))).

    The formula of open_clip's ``build_zero_shot_classifier``, over any family's text encoder.
    """
    _require_text(loaded)
    if not classnames:
        raise ValueError("a classifier needs at least one class name")
    columns = []
    for start in range(0, len(classnames), 10):
        names = classnames[start:start + 10]
        texts = [template.format(name) for name in names for template in templates]
        emb = loaded.encode_texts(texts).float().reshape(len(names), len(templates), -1).mean(1)  # [c, d_embed]
        columns.append(emb / emb.norm(dim=1, keepdim=True))
    return torch.cat(columns).T.cpu()  # [d_embed, n_classes]


def _require_text(loaded: LoadedClip) -> None:
    if not loaded.has_text:
        raise ValueError(f"{loaded.spec.name} was loaded without its text side (text=False); load it with text=True")


@torch.no_grad()
def embed_texts(loaded: LoadedClip, texts: list[str], batch_size: int = 256, device: str = "cpu") -> Tensor:
    """L2-normalised text embeddings [n_texts, d_embed]."""
    _require_text(loaded)
    starts = range(0, len(texts), batch_size)
    bar = steps(len(starts), "embedding texts", "batch") if len(starts) > 1 else None
    parts = []  # [batch, d_embed] each
    for i in starts:
        parts.append(loaded.encode_texts(texts[i:i + batch_size]).float().cpu())
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return torch.cat(parts)


def logit_scale(loaded: LoadedClip) -> float:
    return loaded.logit_scale()


def accuracy(embeddings: np.ndarray | Tensor, weights: np.ndarray | Tensor, labels: np.ndarray) -> float:
    """Top-1 accuracy of argmax(embeddings · W); argmax ignores each image's norm."""
    logits = np.asarray(embeddings, dtype=np.float32) @ np.asarray(weights, dtype=np.float32)
    return float((logits.argmax(1) == labels).mean())
