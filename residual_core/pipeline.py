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
  manifest.json       written last: key, inputs, shapes, each file's size and xxh3-128 digest (verified on read),
                      and the images that could not be decoded (skipped, counted, named)
Shards carry sums and scatter matrices, so several workers can write shards and the PCA merges exactly; each
shard's info.json records its files' digests, so a damaged shard is re-encoded rather than merged.
"""

import errno
import json
import os
import threading
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
from residual_core.datasets import ImageReadError, ImageSource, load_dataset, subset
from residual_core.decompose import HeadMaps, check_supported, decompose_images
from residual_core.models import LoadedClip, load_clip, parse_model_spec
from residual_core.pca import HeadPCA, MomentStats, fit_head_pca, raw_features, score_map
from residual_core.textbank import bank_digest, load_bank
from residual_core.zeroshot import build_classifier, embed_texts, logit_scale

SHARD_SIZE = 256
DEFAULT_MODEL = "demo"
DEFAULT_DATASET = "demo-world/colour"
DTYPES = ("float16", "float32")
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
    dtype: str = "float16"  # storage of head coefficients, emb and MLPs: float16 or float32

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:48]


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")


@dataclass(frozen=True)
class BuildPlan:
    """What a cache for one spec is made of, and where it lives (computed without a forward pass)."""

    loaded: LoadedClip
    source: ImageSource
    positions: np.ndarray  # [n_images] rows of the split to encode
    inputs: dict  # every input that determines the content; ``inputs["key"]`` is its hash
    folder: Path

    @property
    def key(self) -> str:
        return self.inputs["key"]


@dataclass(frozen=True)
class CacheLookup:
    """Whether the cache of a spec is built; ``problem`` says why a folder there was not usable."""

    folder: Path
    ready: bool
    problem: str | None = None


def prepare(spec: PrecomputeSpec) -> BuildPlan:
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
        "dtype": spec.dtype,
        **({"data_version": source.version} if source.version else {}),
        "versions": {"residual_core": __version__, "open_clip": open_clip.__version__,
                     "torch": torch.__version__.split("+")[0]},
    }
    key = store.cache_key(inputs)
    folder = Path(spec.cache_dir) / f"{_slug(spec.model)}__{_slug(spec.dataset)}__{spec.split}__{key}"
    return BuildPlan(loaded, source, positions, inputs | {"key": key}, folder)


def lookup(spec: PrecomputeSpec) -> CacheLookup:
    """Is the cache for this spec built and intact? (Verifies sizes and digests, once per file identity.)"""
    plan = prepare(spec)
    if not (plan.folder / store.MANIFEST).exists():
        return CacheLookup(plan.folder, False)
    try:
        store.read_manifest(plan.folder, plan.key)
        return CacheLookup(plan.folder, True)
    except store.CacheError as err:
        return CacheLookup(plan.folder, False, str(err))


def precompute(spec: PrecomputeSpec, progress: Progress | None = None) -> Path:
    """Build (or find) the cache for ``spec`` and return its folder. Resumes from finished shards.

    One builder per folder at a time (a file lock): a second process waits, then finds the cache built.
    Disk-full and read-only folders raise store.CacheWriteError; no temporary file is left behind.
    """
    plan = prepare(spec)
    if _is_built(plan):
        return plan.folder
    with store.writing(plan.folder):
        with store.build_lock(plan.folder):
            if _is_built(plan):  # another process finished it while we waited
                return plan.folder
            (plan.folder / store.MANIFEST).unlink(missing_ok=True)  # never a stale manifest beside new files
            store.remove_orphans(plan.folder)  # we hold the lock: any temporary file is a dead builder's
            _build(plan, spec, progress)
    return plan.folder


def _is_built(plan: BuildPlan) -> bool:
    try:
        store.read_manifest(plan.folder, plan.key)
        return True
    except store.CacheError:
        return False


def _build(plan: BuildPlan, spec: PrecomputeSpec, progress: Progress | None) -> None:
    maps = HeadMaps.from_model(plan.loaded.model)
    positions = plan.positions
    n_shards = (len(positions) + SHARD_SIZE - 1) // SHARD_SIZE
    bar = tqdm(total=len(positions), desc=f"encoding {spec.dataset}:{spec.split}", unit="img", disable=None)
    for index in range(n_shards):
        rows = positions[index * SHARD_SIZE:(index + 1) * SHARD_SIZE]
        shard = plan.folder / "shards" / f"{index:05d}"
        if not _shard_done(shard, plan.key):
            _write_shard(shard, plan.key, plan.loaded, maps, plan.source, rows, spec)
        bar.update(len(rows))
        if progress:
            progress("encode", min((index + 1) * SHARD_SIZE, len(positions)), len(positions))
    bar.close()
    finalize(plan, maps, n_shards, spec, progress)
    if not spec.keep_shards:
        store.remove_tree(plan.folder / "shards")


SHARD_FILES = ("z", "mlps", "embed", "output", "ln", "thumbs", "metrics", "rows", "stats_mean", "stats_scatter")


def _shard_done(shard: Path, key: str) -> bool:
    """A shard counts only if it is of this key and every file matches its recorded digest."""
    try:
        info = json.loads((shard / "info.json").read_text())
        if not isinstance(info, dict) or info.get("key") != key:
            raise store.CacheError("shard of other inputs")
        for name, entry in store._checked_files(shard / "info.json", info.get("files")).items():
            store.verify_file(shard / name, entry["size"], entry[store.DIGEST])
        return True
    except (OSError, ValueError, store.CacheError):
        store.remove_tree(shard)
        return False


def _thumb(image, size: int) -> np.ndarray:
    return np.asarray(ImageOps.fit(image, (size, size)), dtype=np.uint8)


def _read_images(source: ImageSource, rows: np.ndarray) -> tuple[list, list[int], list[dict]]:
    """Decode the rows' images; an unreadable or undecodable one is skipped and reported, not fatal."""
    images, kept, skipped = [], [], []
    for row in rows:
        try:
            images.append(source.image(int(row)))
            kept.append(int(row))
        except ImageReadError as err:
            skipped.append({"id": source.ids[int(row)], "reason": str(err)})
    return images, kept, skipped


@torch.no_grad()
def _write_shard(shard: Path, key: str, loaded: LoadedClip, maps: HeadMaps, source: ImageSource,
                 rows: np.ndarray, spec: PrecomputeSpec) -> None:
    parts: dict[str, list] = {k: [] for k in ("z", "mlps", "embed", "output", "ln", "thumbs", "metrics")}
    stats = MomentStats(0, torch.zeros(0), torch.zeros(0))
    max_rel, kept_rows, skipped = 0.0, [], []
    for start in range(0, len(rows), spec.batch_size):
        images, kept, bad = _read_images(source, rows[start:start + spec.batch_size])
        kept_rows += kept
        skipped += bad
        if not images:
            continue
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
    tmp = shard.with_name(f".tmp-{shard.name}-{os.getpid()}-{threading.get_ident()}")
    store.remove_tree(tmp)
    tmp.mkdir(parents=True)
    try:
        if kept_rows:
            for name, chunks in parts.items():
                if name == "metrics":
                    array = torch.cat(chunks).sum(0).numpy()  # [n_units, 2] sums over the shard's images
                else:
                    array = np.concatenate(chunks) if name == "thumbs" else torch.cat(chunks).numpy()
                store.atomic_save_npy(tmp / f"{name}.npy", array)
            store.atomic_save_npy(tmp / "stats_mean.npy", stats.mean.numpy())
            store.atomic_save_npy(tmp / "stats_scatter.npy", stats.scatter.numpy())
        store.atomic_save_npy(tmp / "rows.npy", np.asarray(kept_rows, dtype=np.int64))
        names = [f"{n}.npy" for n in SHARD_FILES if (tmp / f"{n}.npy").exists()]
        info = {"key": key, "count": stats.count, "max_rel_err": max_rel, "skipped": skipped,
                "files": store.describe_files(tmp, names)}
        store.atomic_write_text(tmp / "info.json", json.dumps(info))
        store.remove_tree(shard)
        try:
            os.replace(tmp, shard)  # the shard appears complete or not at all
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise  # else another writer put the same shard in place first: keep theirs
    finally:
        store.remove_tree(tmp)


def _unit_metric_sums(stacked: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """stacked [n, n_units, d_embed], output [n, d_embed] -> [n_units, 2]: Σ‖c_u‖ and Σ cos(c_u, output)."""
    norms = stacked.double().norm(dim=-1)  # [n, n_units]
    dots = torch.einsum("nue,ne->nu", stacked.double(), output.double())
    cos = dots / (norms * output.double().norm(dim=-1, keepdim=True)).clamp_min(1e-30)
    return torch.stack([norms.sum(0), cos.sum(0)], -1)


def _shard_infos(folder: Path, n_shards: int) -> list[dict]:
    return [json.loads((folder / "shards" / f"{i:05d}" / "info.json").read_text()) for i in range(n_shards)]


def _merged_stats(folder: Path, infos: list[dict]) -> MomentStats:
    stats = MomentStats(0, torch.zeros(0), torch.zeros(0))
    for index, info in enumerate(infos):
        if info["count"]:
            shard = folder / "shards" / f"{index:05d}"
            stats = stats.merge(MomentStats(info["count"], torch.from_numpy(np.load(shard / "stats_mean.npy")),
                                            torch.from_numpy(np.load(shard / "stats_scatter.npy"))))
    return stats


def load_basis(folder: Path) -> HeadPCA:
    manifest = store.read_manifest(folder)
    return HeadPCA(*(torch.from_numpy(store.load_npy(folder / f"head_{n}.npy", mmap=False))
                     for n in ("mean", "components", "eigenvalues")), n_fit=manifest["n_images"])


def _basis(plan: BuildPlan, spec: PrecomputeSpec, stats: MomentStats, maps: HeadMaps) -> HeadPCA:
    if not spec.basis_from:
        return fit_head_pca(stats, maps)
    if store.read_manifest(Path(spec.basis_from))["inputs"].get("weights") != plan.inputs["weights"]:
        raise ValueError(f"--basis-from {spec.basis_from} was built with other model weights")
    return load_basis(Path(spec.basis_from))


def finalize(plan: BuildPlan, maps: HeadMaps, n_shards: int, spec: PrecomputeSpec,
             progress: Progress | None = None) -> None:
    """Merge the shards into the cache's arrays, streaming one shard at a time (RAM independent of n)."""
    started, folder, arch = time.perf_counter(), plan.folder, plan.loaded.arch
    infos = _shard_infos(folder, n_shards)
    n = sum(info["count"] for info in infos)
    skipped = list(plan.source.scan_skipped) + [item for info in infos for item in info["skipped"]]
    if n == 0:
        raise store.CacheError(f"none of the {len(plan.positions)} images could be read ({skipped[0]['reason']})")
    pca = _basis(plan, spec, _merged_stats(folder, infos), maps)
    gmat, offset = score_map(pca, maps)
    n_heads_total, n_pcs, d_embed = arch.n_layers * arch.n_heads, pca.components.shape[2], arch.d_embed
    first = folder / "shards" / f"{next(i for i, info in enumerate(infos) if info['count']):05d}"
    thumb_shape = np.load(first / "thumbs.npy", mmap_mode="r").shape[1:]
    layout = {"head_scores": (spec.dtype, (n_heads_total, n_pcs, n)), "mlps": (spec.dtype, (n, arch.n_layers, d_embed)),
              "embed": (spec.dtype, (n, d_embed)), "output": ("float32", (n, d_embed)), "ln": ("float32", (n, 2)),
              "thumbs": ("uint8", (n, *thumb_shape)), "positions": ("int64", (n,)), "labels": ("int64", (n,))}
    writers = {name: store.open_npy_writer(folder / f"{name}.npy", dtype, shape) for name, (dtype, shape) in layout.items()}
    try:
        metric_sums, done = 0.0, 0
        for index, info in enumerate(infos):
            if not info["count"]:
                continue
            shard = folder / "shards" / f"{index:05d}"
            z, ln = (torch.from_numpy(np.load(shard / f"{k}.npy")) for k in ("z", "ln"))
            y = raw_features(z, ln[:, 0], ln[:, 1]).double()
            part = torch.einsum("nlhp,lhpk->nlhk", y, gmat) + offset  # [n_s, L, H, n_pcs]
            rows = slice(done, done + len(z))
            writers["head_scores"][0][:, :, rows] = part.reshape(len(z), n_heads_total, n_pcs).permute(1, 2, 0).numpy()
            for name in ("mlps", "embed", "output", "ln", "thumbs"):
                writers[name][0][rows] = np.load(shard / f"{name}.npy")
            kept = np.load(shard / "rows.npy")
            writers["positions"][0][rows] = kept
            writers["labels"][0][rows] = plan.source.labels[kept]
            metric_sums = metric_sums + np.load(shard / "metrics.npy")
            done += len(z)
            if progress:
                progress("finalize", done, n)
        for name, (array, tmp) in writers.items():
            store.commit_npy(array, tmp, folder / f"{name}.npy")
    finally:
        for _, tmp in writers.values():
            store.discard(tmp)
    _write_derived(plan, spec, pca, folder, n, metric_sums, skipped, max(i["max_rel_err"] for i in infos), started)


def _write_derived(plan: BuildPlan, spec: PrecomputeSpec, pca: HeadPCA, folder: Path, n: int, metric_sums,
                   skipped: list[dict], max_rel: float, started: float) -> None:
    """Basis, classifier, texts, per-head tables, poles and nearest texts; then the manifest, last."""
    loaded, source = plan.loaded, plan.source
    output, labels = store.load_npy(folder / "output.npy"), store.load_npy(folder / "labels.npy")
    arrays = {"head_mean": pca.mean.numpy(), "head_components": pca.components.numpy(),
              "head_eigenvalues": pca.eigenvalues.numpy()}
    classifier = build_classifier(loaded, source.classnames, source.templates, spec.device)
    texts = load_bank(spec.text_bank)
    text_embeds = embed_texts(loaded, texts, device=spec.device)
    arrays["classifier"] = classifier.numpy()
    arrays["text_embeds"] = text_embeds.numpy()
    arrays["unit_norm"] = (metric_sums[:, 0] / n).astype(np.float32)
    arrays["unit_cos"] = (metric_sums[:, 1] / n).astype(np.float32)
    arrays |= head_accuracy_tables(store.load_npy(folder / "head_scores.npy"),
                                   arrays | {"labels": labels, "output": output}, classifier.numpy())
    arrays |= _poles(folder / "head_scores.npy", spec.n_top)
    arrays |= _nearest_texts(pca, text_embeds, spec.n_near)
    for name, array in arrays.items():
        store.atomic_save_npy(folder / f"{name}.npy", array)
    positions = store.load_npy(folder / "positions.npy")
    store.atomic_write_text(folder / "texts.json", json.dumps(texts))
    store.atomic_write_text(folder / "image_ids.json", json.dumps([source.ids[int(i)] for i in positions]))
    streamed = ["head_scores", "mlps", "embed", "output", "ln", "thumbs", "positions", "labels"]
    files = [*(f"{k}.npy" for k in streamed), *(f"{k}.npy" for k in arrays), "texts.json", "image_ids.json"]
    predictions = (np.asarray(output) @ classifier.numpy()).argmax(1)
    model_acc = float((predictions == labels).mean())
    store.write_manifest(folder, {
        "schema_version": store.SCHEMA_VERSION, "key": plan.key, "inputs": plan.inputs,
        "spec": asdict(spec), "arch": asdict(loaded.arch), "n_images": n, "n_pcs": int(pca.components.shape[2]),
        "classnames": list(source.classnames), "logit_scale": logit_scale(loaded), "dtype": spec.dtype,
        "max_rel_err": max_rel, "zeroshot_accuracy": model_acc, "basis_images": pca.n_fit,
        "skipped": {"count": len(skipped), "first": skipped[:50]},
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
