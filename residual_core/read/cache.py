"""Read side: open a finished cache memory-mapped and answer the dashboard's questions."""

import functools
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from residual_core.build import store
from residual_core.build.store import as_f32, copy_f32
from residual_core.engine.units import UnitTable
from residual_core.data.untrusted import json_value
from residual_core.engine.pca import n_components_for, participation_ratio


IN_RAM_LOGITS = 64_000_000  # 256 MB of float32 logits: 64 k images × 1,000 classes, 6.4 M images × 10
LIVE_IMAGES = 50_000  # a live view's sample (``sample``): one-PC toggle ≈ 45 ms at 1,000 classes (bench --scale)
CHUNK_IMAGES = 16_384  # rows per chunk of a streamed pass: 64 MB of logits at 1,000 classes
CHUNK_SPAN = 1 << 28  # bytes of a per-image file one chunk may span: what a chunk's reads can map before release


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float32 through torch: it keeps to the server's thread setting, where NumPy's BLAS takes every
    core (measured: the same product at half the CPU time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only inputs: only read
        left, right = (torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in (a, b))
        return (left @ right).numpy()


def sample_stride(n_images: int, limit: int) -> int:
    """k of ``Cache.sample``: the smallest stride that leaves at most ``limit`` of ``n_images``."""
    return max(1, -(-n_images // max(limit, 1)))


@dataclass(frozen=True)
class Cache:
    """Everything precompute stored, opened read-only. Arrays are shared: never write into them."""

    path: Path
    manifest: dict
    head_scores: np.ndarray  # [n_heads_total, n_pcs, n_images] fp16, memory-mapped
    head_mean: np.ndarray  # [n_heads_total, d_embed]
    head_components: np.ndarray  # [n_heads_total, n_pcs, d_embed]
    head_eigenvalues: np.ndarray  # [n_heads_total, n_pcs]
    mlps: np.ndarray  # [n_images, n_layers, d_embed] fp16
    embed: np.ndarray  # [n_images, d_embed] fp16
    output: np.ndarray  # [n_images, d_embed] fp32 (encode_image)
    labels: np.ndarray  # [n_images]
    positions: np.ndarray  # [n_images] row in the dataset split
    thumbs: np.ndarray  # [n_images, t, t, 3] uint8
    classifier: np.ndarray  # [d_embed, n_classes]
    text_embeds: np.ndarray  # [n_texts, d_embed]
    texts: tuple[str, ...]
    image_ids: tuple[str, ...]
    pole_top: np.ndarray  # [n_heads_total, n_pcs, n_top] image rows
    pole_bottom: np.ndarray
    text_pos_idx: np.ndarray  # [n_heads_total, n_pcs, n_near]
    text_pos_score: np.ndarray
    text_neg_idx: np.ndarray
    text_neg_score: np.ndarray
    unit_norm: np.ndarray  # [n_units] mean ‖c_u‖ over images (table order)
    unit_cos: np.ndarray  # [n_units] mean cos(c_u, output)
    head_alone_acc: np.ndarray  # [n_heads_total] accuracy of argmax(c_u · W)
    head_ablated_acc: np.ndarray  # [n_heads_total] accuracy with the head mean-ablated
    pc_logits: np.ndarray  # [n_heads_total, n_pcs, n_classes] components · W
    mean_logits: np.ndarray  # [n_heads_total, n_classes] head mean · W
    score_mean: np.ndarray  # [n_heads_total, n_pcs] mean coefficient over the dataset (≈0 for an own basis)
    mean_proj: np.ndarray  # [n_heads_total, n_pcs] head mean · component
    population: "Cache | None" = None  # the whole cache, when this one is a sample of its images (``sample``)
    mapped: tuple = ()  # ((file name, identity), …) of the files load_cache verified and mapped

    def is_current(self) -> bool:
        """Are the files on disk still the ones this cache mapped? (A stat each; False once any was replaced,
        even by a good copy: the caller opens the cache again instead of reading a file that is gone.)"""
        return all(store.identity_of(self.path / name) == identity for name, identity in self.mapped)

    @property
    def n_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.manifest["arch"]["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.manifest["arch"]["n_heads"])

    @property
    def n_pcs(self) -> int:
        return int(self.head_components.shape[1])

    @property
    def classnames(self) -> tuple[str, ...]:
        return tuple(self.manifest["classnames"])

    @property
    def units(self) -> UnitTable:
        return UnitTable(self.n_layers, self.n_heads)

    def head_index(self, layer: int, head: int) -> int:
        return self.units.head_index(layer, head)

    def scores(self, layer: int, head: int) -> np.ndarray:
        """[n_pcs, n_images] fp32 coefficients of one head."""
        return copy_f32(self.head_scores[self.head_index(layer, head)])

    def head_contributions(self, layer: int, head: int) -> np.ndarray:
        """[n_images, d_embed] reconstructed from the PCA (exact up to fp16 storage of the scores)."""
        u = self.head_index(layer, head)
        return self.head_mean[u] + self.scores(layer, head).T @ self.head_components[u]

    @classmethod
    def from_arrays(cls, path: Path, manifest: dict, arrays: dict[str, np.ndarray], texts: tuple[str, ...] = ("",),
                    image_ids: tuple[str, ...] | None = None) -> "Cache":
        """The one place a Cache is assembled: from arrays named as precompute stores them (load_cache, the
        bench's synthetic caches and the tests' planted ones all come through here).

        Derived readouts (PC logits, mean logits, baseline logits) are computed here. Display-only arrays
        (thumbs, poles, nearest texts, unit tables) may be left out: they are then empty placeholders.
        ``manifest`` needs at least ``arch`` (n_layers, n_heads), ``classnames`` and ``logit_scale``.
        """
        classifier = np.asarray(arrays["classifier"], dtype=np.float32)  # [d_embed, n_classes]
        comps = np.asarray(arrays["head_components"], dtype=np.float32)
        n_total = int(np.prod(comps.shape[:-2]))
        comps = comps.reshape(n_total, *comps.shape[-2:])  # [n_heads_total, n_pcs, d_embed]
        mean = np.asarray(arrays["head_mean"], dtype=np.float32).reshape(n_total, -1)  # [n_heads_total, d_embed]
        output = np.asarray(arrays["output"], dtype=np.float32)  # [n_images, d_embed]
        n, n_pcs, n_layers = output.shape[0], comps.shape[1], int(manifest["arch"]["n_layers"])
        n_units = 1 + n_layers + n_total
        poles = np.zeros((n_total, n_pcs, 1), np.int32)
        zeros = np.zeros((1, 1, output.shape[1]), np.float16)  # broadcast: a missing MLP/emb part takes no memory
        default = {  # built only for what ``arrays`` lacks
            "head_eigenvalues": lambda: np.ones((n_total, n_pcs), np.float32),
            "mlps": lambda: np.broadcast_to(zeros, (n, n_layers, output.shape[1])),
            "embed": lambda: np.broadcast_to(zeros[0], output.shape), "positions": lambda: np.arange(n),
            "thumbs": lambda: np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (n, 1, 1, 3)),
            "text_embeds": lambda: np.zeros((len(texts), output.shape[1]), np.float32), "pole_top": lambda: poles,
            "pole_bottom": lambda: poles, "text_pos_idx": lambda: poles,
            "text_pos_score": lambda: poles.astype(np.float32), "text_neg_idx": lambda: poles,
            "text_neg_score": lambda: poles.astype(np.float32), "unit_norm": lambda: np.zeros(n_units),
            "unit_cos": lambda: np.zeros(n_units), "head_alone_acc": lambda: np.zeros(n_total),
            "head_ablated_acc": lambda: np.zeros(n_total),
        }

        def get(name: str) -> np.ndarray:
            return arrays[name] if name in arrays else default[name]()

        score_mean = arrays.get("head_score_mean")
        if score_mean is None:  # mean coefficient over these images, one PC row at a time
            score_mean = np.stack([copy_f32(arrays["head_scores"][u]).mean(1) for u in range(n_total)])
        return cls(
            path=Path(path), manifest=manifest, head_scores=arrays["head_scores"], head_mean=mean, head_components=comps,
            head_eigenvalues=np.asarray(get("head_eigenvalues")).reshape(n_total, -1), mlps=get("mlps"),
            embed=get("embed"), output=output, labels=np.asarray(arrays["labels"]), positions=get("positions"),
            thumbs=get("thumbs"), classifier=classifier, text_embeds=get("text_embeds"), texts=tuple(texts),
            image_ids=tuple(image_ids) if image_ids is not None else tuple(str(i) for i in range(n)),
            pole_top=get("pole_top"), pole_bottom=get("pole_bottom"), text_pos_idx=get("text_pos_idx"),
            text_pos_score=get("text_pos_score"), text_neg_idx=get("text_neg_idx"),
            text_neg_score=get("text_neg_score"), unit_norm=get("unit_norm"), unit_cos=get("unit_cos"),
            head_alone_acc=get("head_alone_acc"), head_ablated_acc=get("head_ablated_acc"),
            pc_logits=np.einsum("ukd,dc->ukc", comps, classifier),  # [n_heads_total, n_pcs, n_classes]
            mean_logits=mean @ classifier,
            score_mean=np.asarray(score_mean, dtype=np.float32),
            mean_proj=np.einsum("ud,ukd->uk", mean, comps),  # [n_heads_total, n_pcs]
        )

    @functools.cached_property
    def base_logits(self) -> np.ndarray:
        """[n_images, n_classes] float32 output · W, held in RAM: for caches up to ``IN_RAM_LOGITS`` numbers;
        larger ones are read in chunks (``chunks``, ``ablation.evaluate_streamed``) or through ``sample``."""
        out = np.empty((self.n_images, self.classifier.shape[1]), np.float32)
        start = 0
        for part in self.chunks():  # a sample's rows span the file: a block at a time, its pages released after
            out[start:start + part.n_images] = _matmul(part.output, self.classifier)
            start += part.n_images
        return out

    @property
    def logits_fit_in_ram(self) -> bool:
        return self.n_images * self.classifier.shape[1] <= IN_RAM_LOGITS

    def baseline_accuracy(self) -> float:
        return float((self.baseline_predictions() == self.labels).mean())

    def baseline_predictions(self) -> np.ndarray:
        """[n_images] the unablated model's predicted class of every cached image."""
        return self._baseline_predictions

    @functools.cached_property
    def _baseline_predictions(self) -> np.ndarray:
        # once per cache: an arg-max over every image's logits, a chunk of images at a time beyond RAM's budget
        if self.logits_fit_in_ram:
            return np.asarray(self.base_logits).argmax(1)
        return np.concatenate([_matmul(part.output, self.classifier).argmax(1) for part in self.chunks()])

    def rows(self, start: int, stop: int, step: int = 1) -> "Cache":
        """The images ``start:stop:step`` as a Cache of views (no copy). Means (mean-mode ablation) stay the
        whole cache's, so an ablation on the rows answers for them what the whole cache answers for each."""
        take = slice(start, stop, step)
        return replace(self, head_scores=self.head_scores[:, :, take], mlps=self.mlps[take], embed=self.embed[take],
                       output=self.output[take], labels=self.labels[take], positions=self.positions[take],
                       thumbs=self.thumbs[take], image_ids=self.image_ids[take], population=self.whole)

    @property
    def whole(self) -> "Cache":
        """The cache whose images define the dataset (itself unless this is ``rows`` of another)."""
        return self.population if self.population is not None else self

    def chunks(self, size: int | None = None):
        """Consecutive ``rows`` of at most ``size`` images, covering each image once. The default is
        ``CHUNK_IMAGES``, fewer where a chunk would span more than ``CHUNK_SPAN`` bytes of a per-image file (a
        sample's rows lie k images apart: the kernel maps pages around each row read, so a chunk of a
        one-in-20 sample of a 1 M-image cache would map most of its MLP file)."""
        if size is None:
            row_bytes = max(abs(a.strides[0]) for a in (self.mlps, self.embed, self.output, self.thumbs))
            size = max(1, min(CHUNK_IMAGES, CHUNK_SPAN // max(row_bytes, 1)))
        for start in range(0, self.n_images, size):
            part = self.rows(start, min(start + size, self.n_images))
            yield part
            part.release_pages()

    def release_pages(self) -> None:
        """Unmap the per-image arrays' pages from this process (``store.release_pages``): after a chunk of a
        streamed pass, so that a pass over every image does not leave the whole cache mapped in."""
        for array in (self.head_scores, self.mlps, self.embed, self.output, self.thumbs):
            store.release_pages(array)

    def sample(self, limit: int) -> "Cache":
        """Every k-th image, the smallest k that leaves at most ``limit`` (itself when it already fits).

        A stride rather than a random draw keeps memory-mapped arrays as views, and spreads the sample over a
        dataset stored class by class (an ImageFolder) as evenly as over a shuffled one."""
        step = sample_stride(self.n_images, limit)
        if step == 1:
            return self
        if step not in self._samples:  # memoised: a sample's baseline logits are worth keeping across reruns
            self._samples[step] = self.rows(0, self.n_images, step)
        return self._samples[step]

    def unit_mean(self, layer: int | None) -> np.ndarray:
        """[d_embed] float32 mean over the dataset's images of MLP ``layer``'s contribution (None: emb).
        Read in chunks and memoised on the whole cache."""
        whole = self.whole
        memo = whole._unit_means
        if layer not in memo:
            total = np.zeros(self.output.shape[1], np.float64)
            for part in whole.chunks():
                values = part.embed if layer is None else part.mlps[:, layer]
                total += as_f32(values).sum(0, dtype=np.float64)
            memo[layer] = (total / max(whole.n_images, 1)).astype(np.float32)
        return memo[layer]

    @functools.cached_property
    def _unit_means(self) -> dict:
        return {}

    @functools.cached_property
    def _samples(self) -> dict:
        return {}


def _string_list(handle, path: Path) -> tuple[str, ...]:
    try:
        values = json_value(handle.read(), f"cache file {path}", 1 << 28)
    except (OSError, ValueError) as err:
        raise store.CacheError(f"cache file {path} is unreadable ({err})") from err
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise store.CacheError(f"cache file {path} is not a list of strings; delete the folder and precompute again")
    return tuple(values)


def folder_key(folder: Path) -> str | None:
    """The key a cache folder's name ends with (``<model>__<dataset>__<split>__<key>``), None for another name."""
    tail = folder.name.rsplit("__", 1)
    return tail[1] if len(tail) == 2 and re.fullmatch(r"[0-9a-f]{20}", tail[1]) else None


def load_cache(path: str | Path) -> Cache:
    """Open a cache folder built by precompute; raises store.CacheError if it is stale or damaged.

    Each file is opened once: its size and digest are checked on that open file (digests once per process per
    file identity) and the array is mapped from it, so what is read is what was verified. The manifest must
    list every file read, and its key must be the one the folder is named by.
    """
    folder = Path(path)
    manifest = store.read_manifest(folder, key=folder_key(folder), verify=False)
    if manifest.get("kind") == "basis":
        raise store.CacheError(f"{folder} is a basis-only folder (precompute --basis-only): it holds a PCA basis, "
                               "no images; pass it to precompute as --basis-from")
    files = manifest["files"]
    missing = sorted(({f"{name}.npy" for name in REQUIRED} | set(TEXT_FILES)) - set(files))
    if missing:
        raise store.CacheError(f"cache {folder}'s manifest does not list {', '.join(missing)}; it will be rebuilt "
                               "by precompute")
    arrays, texts, mapped = {}, {}, []
    for name, entry in files.items():
        handle, identity = store.open_verified(folder / name, entry["size"], entry[store.DIGEST])
        with handle:
            if name.endswith(".npy"):
                arrays[name[:-4]] = store.npy_from_handle(handle, folder / name)
            elif name in TEXT_FILES:
                texts[name] = _string_list(handle, folder / name)
        mapped.append((name, identity))
    cache = Cache.from_arrays(folder, manifest, arrays, texts=texts["texts.json"], image_ids=texts["image_ids.json"])
    return replace(cache, mapped=tuple(mapped))


TEXT_FILES = ("texts.json", "image_ids.json")


def reconstruction_error(cache: Cache) -> float:
    """max |Σ stored units − encode_image| / max |encode_image| over the cached images (storage precision)."""
    total = as_f32(cache.embed) + as_f32(cache.mlps).sum(1)  # [n, d_embed]
    for u in range(cache.n_layers * cache.n_heads):
        total += cache.head_mean[u] + copy_f32(cache.head_scores[u]).T @ cache.head_components[u]
    return float(np.abs(total - cache.output).max() / max(np.abs(cache.output).max(), 1e-30))


REQUIRED = frozenset({
    "head_scores", "head_mean", "head_components", "head_eigenvalues", "mlps", "embed", "output", "labels",
    "positions", "thumbs", "classifier", "text_embeds", "pole_top", "pole_bottom", "text_pos_idx", "text_pos_score",
    "text_neg_idx", "text_neg_score", "unit_norm", "unit_cos", "head_alone_acc", "head_ablated_acc", "head_score_mean"})

HEAD_METRICS = {
    "evr1": "explained variance of PC1 (share of the head's variance)",
    "participation_ratio": "participation ratio (Σλ)²/Σλ² (effective number of PCs)",
    "k90": "PCs to reach 90 % of the variance",
    "contribution_norm": "mean ‖contribution‖ in the joint space",
    "cosine_to_output": "mean cosine between the head's contribution and the image embedding",
    "accuracy_alone": "zero-shot accuracy of the head's contribution alone",
    "delta_acc_mean_ablated": "accuracy change when the head is mean-ablated (negative = head matters)",
}


def accuracy_noise(cache: Cache) -> float:
    """The standard error of the cache's zero-shot accuracy, √(p(1−p)/n): a change in accuracy smaller than this
    is within what another sample of as many images would move it, so the heads map leaves it blank."""
    p = cache.baseline_accuracy()
    return float(np.sqrt(p * (1 - p) / max(cache.n_images, 1)))


def head_metrics(cache: Cache) -> dict[str, np.ndarray]:
    """Per-head metrics, each [n_layers, n_heads]."""
    shape = (cache.n_layers, cache.n_heads)
    evals = torch.from_numpy(np.asarray(cache.head_eigenvalues, dtype=np.float64))
    n_other = 1 + cache.n_layers
    return {
        "evr1": (evals[:, 0] / evals.sum(-1).clamp_min(1e-30)).numpy().reshape(shape),
        "participation_ratio": participation_ratio(evals).numpy().reshape(shape),
        "k90": n_components_for(evals, 0.9).clamp_max(evals.shape[-1]).numpy().reshape(shape),
        "contribution_norm": np.asarray(cache.unit_norm[n_other:]).reshape(shape),
        "cosine_to_output": np.asarray(cache.unit_cos[n_other:]).reshape(shape),
        "accuracy_alone": np.asarray(cache.head_alone_acc).reshape(shape),
        "delta_acc_mean_ablated": (np.asarray(cache.head_ablated_acc) - cache.baseline_accuracy()).reshape(shape),
    }


def most_important_head(cache: Cache) -> tuple[int, int]:
    """(layer, head) whose mean ablation lowers accuracy most (ties: the first in head order)."""
    return cache.units.head_at(int(np.argmin(np.asarray(cache.head_ablated_acc), axis=None)))


def other_metrics(cache: Cache) -> dict[str, np.ndarray]:
    """Metrics of the emb and MLP units, each [1 + n_layers] in table order (emb first)."""
    n_other = 1 + cache.n_layers
    return {"contribution_norm": np.asarray(cache.unit_norm[:n_other]),
            "cosine_to_output": np.asarray(cache.unit_cos[:n_other])}
