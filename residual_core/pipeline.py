"""Build side: encode a dataset once into a verified, resumable, memory-mappable cache.

Layout of ``<cache_dir>/<model>__<dataset>__<split>__<key>/``:
  shards/00000/ …     raw per-shard arrays + moment statistics (deleted after finishing unless kept);
                      each shard folder appears by an atomic rename, so present == complete
  head_scores.npy     [n_heads_total, n_pcs, n_images] fp16  PCA coefficients, one PC contiguous
  head_mean.npy, head_components.npy, head_eigenvalues.npy   the per-head basis (fp32)
  mlps.npy [n, L, E] fp16, embed.npy [n, E] fp16, output.npy [n, E] fp32 (= encode_image), ln.npy [n, 2]
  labels.npy, positions.npy, thumbs.npy [n, t, t, 3] uint8, image_ids.json
  classifier.npy [E, C], text_embeds.npy [T, E], texts.json
  pole_top.npy / pole_bottom.npy [n_heads_total, n_pcs, n_top]   image rows at each pole of each PC
  text_pos_idx/score.npy, text_neg_idx/score.npy [n_heads_total, n_pcs, n_near]   nearest texts per pole
  manifest.json       written last: key, inputs, shapes, file sizes; verified on every read
Shards carry sums and scatter matrices, so several workers can write shards and the PCA merges exactly.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch
from PIL import ImageOps
from tqdm.auto import tqdm

from residual_core import __version__
from residual_core import store
from residual_core.ablation import head_accuracy_tables
from residual_core.cache import as_f32
from residual_core.datasets import ImageSource, load_dataset, subset
from residual_core.decompose import HeadMaps, check_supported, decompose_images
from residual_core.models import LoadedClip, load_clip, parse_model_spec
from residual_core.pca import HeadPCA, MomentStats, fit_head_pca, raw_features, score_map
from residual_core.textbank import bank_digest, load_bank
from residual_core.zeroshot import build_classifier, embed_texts, logit_scale

SHARD_SIZE = 256
DEFAULT_MODEL = "demo"
DEFAULT_DATASET = "demo-world/colour"
DEFAULT_CACHE = str(Path.home() / ".cache" / "residual" / "caches")


def default_cache_dir() -> str:
    """RESIDUAL_CACHE if set (read at call time), else ~/.cache/residual/caches."""
    return os.environ.get("RESIDUAL_CACHE", DEFAULT_CACHE)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PrecomputeSpec:
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    split: str = "test"
    limit: int | None = None
    seed: int = 0  # subset seed (and random-weight seed)
    batch_size: int = 64
    device: str = "cpu"
    cache_dir: str = field(default_factory=default_cache_dir)
    random_weights: bool = False
    text_bank: str | None = None  # None: assets/text_bank.txt
    basis_from: str | None = None  # another cache folder whose head PCA basis is reused
    thumb_size: int = 32
    n_top: int = 16
    n_near: int = 10
    keep_shards: bool = False


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:48]


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")


def prepare(spec: PrecomputeSpec) -> tuple[LoadedClip, ImageSource, np.ndarray, dict, Path]:
    """Load model and data, and compute the cache key and folder (cheap: no forward pass)."""
    _check_device(spec.device)
    loaded = load_clip(parse_model_spec(spec.model, spec.random_weights, spec.seed), device=spec.device)
    check_supported(loaded.model)
    source = load_dataset(spec.dataset, spec.split)
    positions = subset(source, spec.limit, spec.seed)
    texts = load_bank(spec.text_bank)
    basis_key = store.read_manifest(Path(spec.basis_from))["key"] if spec.basis_from else None
    inputs = {
        "schema": store.SCHEMA_VERSION, "model": loaded.spec.name, "weights": loaded.weights_id,
        "dataset": spec.dataset, "split": spec.split, "limit": spec.limit, "seed": spec.seed,
        "n_images": int(len(positions)), "labels_digest": store.cache_key({"l": source.labels[positions].tolist()}),
        "preprocess": repr(loaded.preprocess), "classnames": list(source.classnames),
        "templates": list(source.templates), "text_bank": bank_digest(texts), "basis_from": basis_key,
        "thumb_size": spec.thumb_size, "n_top": spec.n_top, "n_near": spec.n_near, "shard_size": SHARD_SIZE,
        **({"data_version": source.version} if source.version else {}),
        "versions": {"residual_core": __version__, "open_clip": open_clip.__version__,
                     "torch": torch.__version__.split("+")[0]},
    }
    key = store.cache_key(inputs)
    folder = Path(spec.cache_dir) / f"{_slug(spec.model)}__{_slug(spec.dataset)}__{spec.split}__{key}"
    return loaded, source, positions, inputs | {"key": key}, folder


def cached_path(spec: PrecomputeSpec) -> Path | None:
    """The finished cache for this spec, or None (it would need building)."""
    *_, inputs, folder = prepare(spec)
    try:
        store.read_manifest(folder, inputs["key"])
        return folder
    except store.CacheError:
        return None


def precompute(spec: PrecomputeSpec, progress: Progress | None = None) -> Path:
    """Build (or find) the cache for ``spec`` and return its folder. Resumes from finished shards."""
    loaded, source, positions, inputs, folder = prepare(spec)
    try:
        store.read_manifest(folder, inputs["key"])
        return folder  # cache hit
    except store.CacheError:
        pass
    (folder / store.MANIFEST).unlink(missing_ok=True)  # never leave a stale manifest beside new files
    maps = HeadMaps.from_model(loaded.model)
    n_shards = (len(positions) + SHARD_SIZE - 1) // SHARD_SIZE
    bar = tqdm(total=len(positions), desc=f"encoding {spec.dataset}:{spec.split}", unit="img", disable=None)
    for index in range(n_shards):
        rows = positions[index * SHARD_SIZE:(index + 1) * SHARD_SIZE]
        shard = folder / "shards" / f"{index:05d}"
        if not _shard_done(shard, inputs["key"]):
            _write_shard(shard, inputs["key"], loaded, maps, source, rows, spec)
        bar.update(len(rows))
        if progress:
            progress("encode", min((index + 1) * SHARD_SIZE, len(positions)), len(positions))
    bar.close()
    _finalize(folder, inputs, loaded, maps, source, positions, n_shards, spec, progress)
    if not spec.keep_shards:
        store.remove_tree(folder / "shards")
    return folder


def _shard_done(shard: Path, key: str) -> bool:
    info = shard / "info.json"
    if not info.is_file():
        return False
    if json.loads(info.read_text()).get("key") == key:
        return True
    store.remove_tree(shard)
    return False


def _thumb(image, size: int) -> np.ndarray:
    return np.asarray(ImageOps.fit(image, (size, size)), dtype=np.uint8)


@torch.no_grad()
def _write_shard(shard: Path, key: str, loaded: LoadedClip, maps: HeadMaps, source: ImageSource,
                 rows: np.ndarray, spec: PrecomputeSpec) -> None:
    parts: dict[str, list] = {k: [] for k in ("z", "mlps", "embed", "output", "ln", "thumbs", "metrics")}
    stats = MomentStats(0, torch.zeros(0), torch.zeros(0))
    max_rel = 0.0
    for start in range(0, len(rows), spec.batch_size):
        images = [source.image(int(i)) for i in rows[start:start + spec.batch_size]]
        batch = torch.stack([loaded.preprocess(im) for im in images]).to(spec.device)
        decomp = decompose_images(loaded.model, batch, maps)
        max_rel = max(max_rel, decomp.errors()[1])
        stats = stats.merge(MomentStats.from_batch(raw_features(decomp.z, decomp.mean, decomp.std)).to_cpu())
        parts["z"].append(decomp.z.cpu())
        parts["mlps"].append(decomp.mlps.cpu())
        parts["embed"].append(decomp.embed.cpu())
        parts["output"].append(decomp.output.cpu())
        parts["ln"].append(torch.stack([decomp.mean, decomp.std], 1).cpu())
        parts["thumbs"].append(np.stack([_thumb(im, spec.thumb_size) for im in images]))
        parts["metrics"].append(_unit_metric_sums(decomp.stacked(), decomp.output).cpu()[None])
    tmp = shard.with_name(f".tmp-{shard.name}-{os.getpid()}")
    store.remove_tree(tmp)
    tmp.mkdir(parents=True)
    for name, chunks in parts.items():
        if name == "metrics":
            array = torch.cat(chunks).sum(0).numpy()  # [n_units, 2] sums over the shard's images
        else:
            array = np.concatenate(chunks) if name == "thumbs" else torch.cat(chunks).numpy()
        store.atomic_save_npy(tmp / f"{name}.npy", array)
    store.atomic_save_npy(tmp / "stats_mean.npy", stats.mean.numpy())
    store.atomic_save_npy(tmp / "stats_scatter.npy", stats.scatter.numpy())
    store.atomic_write_text(tmp / "info.json", json.dumps({"key": key, "count": stats.count, "max_rel_err": max_rel}))
    store.remove_tree(shard)
    os.replace(tmp, shard)  # the shard appears complete or not at all


def _unit_metric_sums(stacked: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """stacked [n, n_units, d_embed], output [n, d_embed] -> [n_units, 2]: Σ‖c_u‖ and Σ cos(c_u, output)."""
    norms = stacked.double().norm(dim=-1)  # [n, n_units]
    dots = torch.einsum("nue,ne->nu", stacked.double(), output.double())
    cos = dots / (norms * output.double().norm(dim=-1, keepdim=True)).clamp_min(1e-30)
    return torch.stack([norms.sum(0), cos.sum(0)], -1)


def _merged_stats(folder: Path, n_shards: int) -> tuple[MomentStats, float]:
    stats, max_rel = MomentStats(0, torch.zeros(0), torch.zeros(0)), 0.0
    for index in range(n_shards):
        shard = folder / "shards" / f"{index:05d}"
        info = json.loads((shard / "info.json").read_text())
        part = MomentStats(info["count"], torch.from_numpy(np.load(shard / "stats_mean.npy")),
                           torch.from_numpy(np.load(shard / "stats_scatter.npy")))
        stats, max_rel = stats.merge(part), max(max_rel, info["max_rel_err"])
    return stats, max_rel


def load_basis(folder: Path) -> HeadPCA:
    manifest = store.read_manifest(folder)
    return HeadPCA(*(torch.from_numpy(np.load(folder / f"head_{n}.npy")) for n in ("mean", "components", "eigenvalues")),
                   n_fit=manifest["n_images"])


def _finalize(folder: Path, inputs: dict, loaded: LoadedClip, maps: HeadMaps, source: ImageSource,
              positions: np.ndarray, n_shards: int, spec: PrecomputeSpec, progress: Progress | None) -> None:
    started = time.perf_counter()
    stats, max_rel = _merged_stats(folder, n_shards)
    if spec.basis_from:
        basis_manifest = store.read_manifest(Path(spec.basis_from))
        if basis_manifest["inputs"]["weights"] != inputs["weights"]:
            raise ValueError(f"--basis-from {spec.basis_from} was built with other model weights")
        pca = load_basis(Path(spec.basis_from))
    else:
        pca = fit_head_pca(stats, maps)
    gmat, offset = score_map(pca, maps)
    arch = loaded.arch
    n, n_units_h, n_pcs = len(positions), arch.n_layers * arch.n_heads, pca.components.shape[2]
    scores, scores_tmp = store.open_npy_writer(folder / "head_scores.npy", "float16", (n_units_h, n_pcs, n))
    columns: dict[str, list] = {k: [] for k in ("mlps", "embed", "output", "ln", "thumbs")}
    metric_sums = 0.0
    done = 0
    for index in range(n_shards):
        shard = folder / "shards" / f"{index:05d}"
        z, ln = (torch.from_numpy(np.load(shard / f"{k}.npy")) for k in ("z", "ln"))
        y = raw_features(z, ln[:, 0], ln[:, 1]).double()
        part = torch.einsum("nlhp,lhpk->nlhk", y, gmat) + offset  # [n_s, L, H, n_pcs]
        scores[:, :, done:done + len(z)] = part.reshape(len(z), n_units_h, n_pcs).permute(1, 2, 0).numpy()
        for name in columns:
            columns[name].append(np.load(shard / f"{name}.npy"))
        metric_sums = metric_sums + np.load(shard / "metrics.npy")
        done += len(z)
        if progress:
            progress("finalize", done, n)
    store.commit_npy(scores, scores_tmp, folder / "head_scores.npy")
    arrays = {
        "mlps": np.concatenate(columns["mlps"]).astype(np.float16),
        "embed": np.concatenate(columns["embed"]).astype(np.float16),
        "output": np.concatenate(columns["output"]).astype(np.float32),
        "ln": np.concatenate(columns["ln"]).astype(np.float32),
        "thumbs": np.concatenate(columns["thumbs"]),
        "labels": source.labels[positions].astype(np.int64),
        "positions": positions.astype(np.int64),
        "head_mean": pca.mean.numpy(), "head_components": pca.components.numpy(),
        "head_eigenvalues": pca.eigenvalues.numpy(),
    }
    classifier = build_classifier(loaded, source.classnames, source.templates, spec.device)
    texts = load_bank(spec.text_bank)
    text_embeds = embed_texts(loaded, texts, device=spec.device)
    arrays["classifier"] = classifier.numpy()
    arrays["text_embeds"] = text_embeds.numpy()
    arrays["unit_norm"] = (metric_sums[:, 0] / n).astype(np.float32)
    arrays["unit_cos"] = (metric_sums[:, 1] / n).astype(np.float32)
    arrays |= head_accuracy_tables(store.load_npy(folder / "head_scores.npy"), arrays, classifier.numpy())
    arrays |= _poles(folder / "head_scores.npy", spec.n_top)
    arrays |= _nearest_texts(pca, text_embeds, spec.n_near)
    for name, array in arrays.items():
        store.atomic_save_npy(folder / f"{name}.npy", array)
    store.atomic_write_text(folder / "texts.json", json.dumps(texts))
    store.atomic_write_text(folder / "image_ids.json", json.dumps([source.ids[int(i)] for i in positions]))
    files = ["head_scores.npy", *(f"{k}.npy" for k in arrays), "texts.json", "image_ids.json"]
    output = torch.from_numpy(arrays["output"])
    model_acc = float(((output @ classifier).argmax(1).numpy() == arrays["labels"]).mean())
    store.write_manifest(folder, {
        "schema_version": store.SCHEMA_VERSION, "key": inputs["key"], "inputs": inputs,
        "spec": asdict(spec), "arch": asdict(arch), "n_images": n, "n_pcs": n_pcs,
        "classnames": list(source.classnames), "logit_scale": logit_scale(loaded),
        "max_rel_err": max_rel, "zeroshot_accuracy": model_acc, "basis_images": pca.n_fit,
        "finalize_seconds": time.perf_counter() - started, "files": store.describe_files(folder, files),
    })


def _poles(scores_path: Path, n_top: int) -> dict[str, np.ndarray]:
    """Rows of the images with the highest and lowest coefficient on every (head, PC)."""
    scores = store.load_npy(scores_path)
    n_units, n_pcs, n = scores.shape
    top = min(n_top, n)
    out_top = np.zeros((n_units, n_pcs, top), dtype=np.int32)
    out_bottom = np.zeros_like(out_top)
    for unit in range(n_units):
        block = as_f32(scores[unit])  # [n_pcs, n]
        order = np.argsort(block, axis=1, kind="stable")
        out_top[unit] = order[:, ::-1][:, :top]
        out_bottom[unit] = order[:, :top]
    return {"pole_top": out_top, "pole_bottom": out_bottom}


def _nearest_texts(pca: HeadPCA, text_embeds: torch.Tensor, n_near: int) -> dict[str, np.ndarray]:
    comps = pca.components.reshape(-1, *pca.components.shape[2:])  # [n_heads_total, n_pcs, d_embed]
    cos = torch.einsum("ukd,td->ukt", comps, text_embeds)  # components are unit-norm, texts too
    k = min(n_near, text_embeds.shape[0])
    pos, neg = cos.topk(k, -1), (-cos).topk(k, -1)
    return {"text_pos_idx": pos.indices.int().numpy(), "text_pos_score": pos.values.numpy(),
            "text_neg_idx": neg.indices.int().numpy(), "text_neg_score": (-neg.values).numpy()}
