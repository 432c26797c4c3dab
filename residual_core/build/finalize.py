"""Finishing a build: merge the shards into the cache's arrays (streamed), derive the tables, write the manifest.

Also the two other ends of a build: ``finalize_basis`` (a basis-only pass keeps the fitted per-head basis and
nothing per image) and ``text_arrays``, the class-prompt classifier and text-bank embeddings, computed once
per (weights, prompts, bank) and shared by every cache of that model in a ``text/`` folder beside the caches.
"""

import contextlib
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from stat import S_ISREG

import numpy as np
import torch

from residual_core.build import shards

from residual_core.build import store
from residual_core.engine.progress import steps
from residual_core.build.store import copy_f32
from residual_core.engine.decompose import HeadMaps
from residual_core.engine.pca import HeadPCA, MomentStats, fit_head_pca, raw_features, score_map
from residual_core.build.plan import BuildPlan, PrecomputeSpec, Progress, bank_of, class_prompts
from residual_core.engine.textbank import bank_digest, load_bank
from residual_core.data.untrusted import json_value
from residual_core.engine.zeroshot import build_classifier, embed_texts, logit_scale

BASIS_FILES = ("head_mean.npy", "head_components.npy", "head_eigenvalues.npy")


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
    infos = shards.shard_infos(folder, n_shards)
    n = sum(info["count"] for info in infos)
    skipped = list(plan.source.scan_skipped) + [item for info in infos for item in info["skipped"]]
    if n == 0:
        raise store.CacheError(f"none of the {len(plan.positions)} images could be read ({skipped[0]['reason']})")
    pca = _basis(plan, spec, shards.merged_stats(folder, infos), maps)
    gmat, offset = score_map(pca, maps)
    n_heads_total, n_pcs, d_embed = arch.n_layers * arch.n_heads, pca.components.shape[2], arch.d_embed
    first = shards.shard_path(folder, next(i for i, info in enumerate(infos) if info["count"]))
    thumb_shape = np.load(first / "thumbs.npy", mmap_mode="r").shape[1:]
    layout = {"head_scores": (spec.dtype, (n_heads_total, n_pcs, n)), "mlps": (spec.dtype, (n, arch.n_layers, d_embed)),
              "embed": (spec.dtype, (n, d_embed)), "output": ("float32", (n, d_embed)), "ln": ("float32", (n, 2)),
              "thumbs": ("uint8", (n, *thumb_shape)), "positions": ("int64", (n,)), "labels": ("int64", (n,))}
    writers = {}  # filled inside the try: a writer that cannot be made (disk full) leaves none of the others behind
    bar = steps(n, "merging shards into the cache", "img")
    try:
        for name, (dtype, shape) in layout.items():
            writers[name] = store.open_npy_writer(folder / f"{name}.npy", dtype, shape)
        metric_sums, done = 0.0, 0
        for index, info in enumerate(infos):
            if not info["count"]:
                continue
            shard = shards.shard_path(folder, index)
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
            bar.update(len(z))
            if progress:
                progress("finalize", done, n)
        for name, (array, tmp) in writers.items():
            store.commit_npy(array, tmp, folder / f"{name}.npy")
    finally:
        bar.close()
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
    bank = load_bank(bank_of(spec))
    prompts = class_prompts(spec.dataset, source.classnames, source.templates, bank)
    texts = bank + prompts
    classifier, text_embeds = text_arrays(plan, spec, bank, prompts)
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
    weights, step = classifier.numpy(), 16_384  # a chunk of images at a time: no [n, C] logits in RAM
    hits = sum(int(((np.asarray(output[i:i + step]) @ weights).argmax(1) == labels[i:i + step]).sum())
               for i in range(0, n, step))
    model_acc = hits / max(n, 1)
    store.write_manifest(folder, {
        "schema_version": store.SCHEMA_VERSION, "key": plan.key, "inputs": plan.inputs,
        "spec": asdict(spec), "arch": asdict(loaded.arch), "n_images": n, "n_pcs": int(pca.components.shape[2]),
        "classnames": list(source.classnames), "logit_scale": logit_scale(loaded), "dtype": spec.dtype,
        "max_rel_err": max_rel, "zeroshot_accuracy": model_acc, "basis_images": pca.n_fit,
        "skipped": {"count": len(skipped), "first": skipped[:50]},
        "finalize_seconds": time.perf_counter() - started, "files": store.describe_files(folder, files),
    })


def head_accuracy_tables(scores: np.ndarray, arrays: dict[str, np.ndarray], classifier: np.ndarray,
                         chunk: int = 16_384) -> dict[str, np.ndarray]:
    """Per head: accuracy of the head alone and of the model with it mean-ablated; mean score per PC.

    ``scores`` [U, n_pcs, n] (memory-mapped); a chunk of images at a time, so memory does not grow with n."""
    labels = np.asarray(arrays["labels"])
    n_total, n = scores.shape[0], scores.shape[2]
    comps = arrays["head_components"].reshape(n_total, scores.shape[1], -1)  # [U, n_pcs, d_embed]
    means = arrays["head_mean"].reshape(n_total, -1)  # [U, d_embed]
    weights = _tensor(np.asarray(classifier, dtype=np.float32))  # [d_embed, C]
    score_mean = np.stack([copy_f32(scores[u]).mean(1, dtype=np.float64) for u in range(n_total)]).astype(np.float32)
    pcw = [_tensor(comps[u] @ classifier) for u in range(n_total)]  # [n_pcs, C] each
    mean_logits = [_tensor(means[u] @ classifier) for u in range(n_total)]  # [C] each
    alone, ablated = np.zeros(n_total), np.zeros(n_total)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        base = _tensor(copy_f32(arrays["output"][rows])) @ weights  # [n_chunk, C]
        truth = _tensor(labels[rows])
        for u in range(n_total):
            s = _tensor(copy_f32(scores[u][:, rows]))  # [n_pcs, n_chunk]
            alone[u] += (torch.addmm(mean_logits[u], s.T, pcw[u]).argmax(1) == truth).sum().item()
            centred = s - _tensor(score_mean[u])[:, None]
            ablated[u] += (torch.addmm(base, centred.T, pcw[u], alpha=-1).argmax(1) == truth).sum().item()
    return {"head_alone_acc": (alone / max(n, 1)).astype(np.float32),
            "head_ablated_acc": (ablated / max(n, 1)).astype(np.float32), "head_score_mean": score_mean}


def _tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memory-mapped inputs: only read
        return torch.from_numpy(np.ascontiguousarray(array))


def _poles(scores_path: Path, n_top: int) -> dict[str, np.ndarray]:
    """Rows of the images with the highest and lowest coefficient on every (head, PC)."""
    scores = store.load_npy(scores_path)
    n_units, n_pcs, n = scores.shape
    top = min(n_top, n)
    out_top = np.zeros((n_units, n_pcs, top), dtype=np.int32)
    out_bottom = np.zeros_like(out_top)
    for unit in range(n_units):
        block = copy_f32(scores[unit])  # [n_pcs, n]
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


def finalize_basis(plan: BuildPlan, maps: HeadMaps, n_shards: int, spec: PrecomputeSpec) -> None:
    """A basis-only build: the merged moments' per-head PCA, and a manifest of kind "basis"."""
    started = time.perf_counter()
    infos = shards.shard_infos(plan.folder, n_shards)
    stats = shards.merged_stats(plan.folder, infos)
    if stats.count == 0:
        raise store.CacheError(f"none of the {len(plan.positions)} images could be read")
    pca = fit_head_pca(stats, maps)
    for name in BASIS_FILES:
        store.atomic_save_npy(plan.folder / name, getattr(pca, name[len("head_"):-len(".npy")]).numpy())
    skipped = list(plan.source.scan_skipped) + [item for info in infos for item in info["skipped"]]
    store.write_manifest(plan.folder, {
        "schema_version": store.SCHEMA_VERSION, "kind": "basis", "key": plan.key, "inputs": plan.inputs,
        "spec": asdict(spec), "arch": asdict(plan.loaded.arch), "n_images": stats.count,
        "n_pcs": int(pca.components.shape[2]), "max_rel_err": max(i["max_rel_err"] for i in infos),
        "skipped": {"count": len(skipped), "first": skipped[:50]}, "finalize_seconds": time.perf_counter() - started,
        "files": store.describe_files(plan.folder, list(BASIS_FILES)),
    })


def text_arrays(plan: BuildPlan, spec: PrecomputeSpec, texts: list[str],
                prompts: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier W [d_embed, n_classes] and text embeddings [n_texts + n_prompts, d_embed]: the bank's, shared per
    model, then the dataset's class prompts (few: embedded here)."""
    loaded, source = plan.loaded, plan.source
    common = {"model": loaded.spec.name, "weights": loaded.weights_id, "versions": plan.inputs["versions"]}
    classifier = shared_array(Path(spec.cache_dir), "classifier", common | {"classnames": list(source.classnames),
                                                                        "templates": list(source.templates)},
                         lambda: build_classifier(loaded, source.classnames, source.templates, spec.device))
    bank = shared_array(Path(spec.cache_dir), "bank", common | {"bank": bank_digest(texts)},
                   lambda: embed_texts(loaded, texts, device=spec.device))
    if prompts:  # shared too: every split and size of a dataset has the same class prompts
        extra = shared_array(Path(spec.cache_dir), "prompts", common | {"prompts": bank_digest(list(prompts))},
                             lambda: embed_texts(loaded, list(prompts), device=spec.device))
        bank = torch.cat([bank, extra.to(bank.dtype)])
    return classifier, bank


def model_bank(loaded, cache_dir: Path, texts: list[str], device: str = "cpu") -> torch.Tensor:
    """The text bank's embeddings [n_texts, d_embed] for a loaded model without any cache of it (the data-free
    reading): the same shared file a build would write, under the same key, so a later build finds it."""
    from residual_core import __version__
    from residual_core.engine.models import library_version

    versions = {"residual_core": __version__, loaded.spec.family: library_version(loaded.spec),
                "torch": torch.__version__.split("+")[0]}
    common = {"model": loaded.spec.name, "weights": loaded.weights_id, "versions": versions}
    return shared_array(Path(cache_dir), "bank", common | {"bank": bank_digest(texts)},
                   lambda: embed_texts(loaded, texts, device=device))


MAX_TEXT_META_BYTES = 1 << 16  # a real one is a few hundred bytes plus the classnames and templates


def shared_array(cache_dir: Path, kind: str, inputs: dict, compute) -> torch.Tensor:
    """An array keyed by ``inputs`` in cache_dir/text/, verified like a cache's arrays: its JSON read bounded through
    the one parser, its recorded inputs compared with the requested ones (a file swapped in from another bank is
    refused), and the array read from the very handle whose size and digest were checked. Computed and saved
    (atomically, with a one-line error on a read-only or full disk) when absent or refused."""
    folder = cache_dir / "text"
    key = store.cache_key({"kind": kind, **inputs})
    path, meta = folder / f"{kind}-{key}.npy", folder / f"{kind}-{key}.json"
    with contextlib.suppress(store.CacheError):
        return torch.from_numpy(_read_shared(path, meta, inputs))
    array = compute().float().cpu()
    with store.writing(folder):
        store.atomic_save_npy(path, array.numpy())
        store.atomic_write_text(meta, json.dumps(store.describe_files(folder, [path.name])[path.name] | inputs))
    return array


def _read_shared(path: Path, meta: Path, inputs: dict) -> np.ndarray:
    """The verified array at ``path`` (its 2-D float32 values) or CacheError: bounded, regular files only."""
    try:
        with open(meta, "rb") as handle:
            if not S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise store.CacheError(f"{meta} is not a regular file")
            text = handle.read(MAX_TEXT_META_BYTES + 1)
        entry = json_value(text, f"text file {meta}", MAX_TEXT_META_BYTES)
    except (OSError, ValueError) as err:
        raise store.CacheError(f"{meta} is unreadable ({err})") from None
    if not isinstance(entry, dict) or any(entry.get(name) != value for name, value in inputs.items()):
        raise store.CacheError(f"{meta} was written for other inputs")
    files = store.checked_files(meta, {path.name: {k: entry.get(k) for k in ("size", store.DIGEST)}})
    handle, _ = store.open_verified(path, files[path.name]["size"], files[path.name][store.DIGEST])
    with handle:
        array = store.npy_from_handle(handle, path)
        if array.ndim != 2 or array.dtype != np.float32:
            raise store.CacheError(f"{path} holds a {array.dtype} array of shape {array.shape}")
        return np.array(array)
