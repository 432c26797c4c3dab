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
Shards carry sums and scatter matrices, so several processes can write shards and the PCA merges exactly
(shards.py); finalize.py merges them, streaming, under the folder's build lock.

Distributed (``torchrun --nproc-per-node N -m residual_core precompute …``): rank r encodes the shards
whose index ≡ r (mod N), all ranks meet at a barrier, rank 0 finalizes, and every rank returns the folder.
The key and the arrays do not depend on N: shards are the same images whatever the split, and their moments
are merged in shard order. A rank that dies leaves its finished shards usable by the next run.
"""

import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from residual_core import __version__

from residual_core.build import finalize

from residual_core.build import shards

from residual_core.build import store
from residual_core.engine.progress import steps
from residual_core.data.datasets import load_dataset, subset
from residual_core.engine.decompose import HeadMaps
from residual_core.engine.models import library_version, parse_model_spec, weights_id
from residual_core.build.plan import (DEFAULT_CACHE, DEFAULT_DATASET, DEFAULT_MODEL, DTYPES, BuildPlan, CacheLookup,
                                PrecomputeSpec, Progress, Ranks, bank_of, class_prompts,
                                default_cache_dir)
from residual_core.engine.textbank import bank_digest, load_bank

__all__ = ["DEFAULT_CACHE", "DEFAULT_DATASET", "DEFAULT_MODEL", "DTYPES", "SHARD_SIZE", "BuildPlan", "CacheLookup",
           "PrecomputeSpec", "Progress", "Ranks", "default_cache_dir", "distributed_ranks", "load_basis", "lookup",
           "precompute", "prepare"]  # the build side's public names (the types live in plan.py)

SHARD_SIZE = 256
load_basis = finalize.load_basis  # the basis of a cache folder (public, used by --basis-from callers)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:48]


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")


def prepare(spec: PrecomputeSpec) -> BuildPlan:
    """The cache key and folder of ``spec``, without building the model or decoding an image.

    The key covers the architecture, the weights' identity (sha256 of a checkpoint, memoised per file
    identity; a tag; a seed), the model library's version (which fixes preprocessing for a given
    architecture and weights), the dataset's labels and prompts, and every build setting.
    """
    _check_device(spec.device)
    model = parse_model_spec(spec.model, spec.random_weights, spec.seed)
    source = load_dataset(spec.dataset, spec.split)
    positions = subset(source, spec.limit, spec.seed)
    texts = load_bank(bank_of(spec))
    texts += class_prompts(spec.dataset, source.classnames, source.templates, texts)
    basis_key = store.read_manifest(Path(spec.basis_from))["key"] if spec.basis_from else None
    inputs = {
        # the architecture and the weights' identity (sha256, tag or seed), not a checkpoint's path: the same
        # weights in another checkout or folder make the same cache
        "schema": store.SCHEMA_VERSION, "family": model.family, "model": model.arch, "weights": weights_id(model),
        # a limit at or above the split's size takes it whole: the same cache as no limit
        "dataset": spec.dataset, "split": spec.split,
        "limit": spec.limit if spec.limit is not None and spec.limit < len(source) else None, "seed": spec.seed,
        "n_images": int(len(positions)), "labels_digest": store.cache_key({"l": source.labels[positions].tolist()}),
        "classnames": list(source.classnames),
        "templates": list(source.templates), "text_bank": bank_digest(texts), "basis_from": basis_key,
        "thumb_size": spec.thumb_size, "n_top": spec.n_top, "n_near": spec.n_near, "shard_size": SHARD_SIZE,
        "dtype": spec.dtype, **({"basis_only": True} if spec.basis_only else {}),
        **({"data_version": source.version} if source.version else {}),
        "versions": {"residual_core": __version__, model.family: library_version(model),
                     "torch": torch.__version__.split("+")[0]},
    }
    key = store.cache_key(inputs)
    folder = Path(spec.cache_dir) / f"{_slug(spec.model)}__{_slug(spec.dataset)}__{spec.split}__{key}"
    return BuildPlan(model, spec.device, source, positions, inputs | {"key": key}, folder)


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


def precompute(spec: PrecomputeSpec, progress: Progress | None = None, ranks: Ranks | None = None) -> Path:
    """Build (or find) the cache for ``spec`` and return its folder. Resumes from finished shards.

    One builder per folder at a time (a file lock): a second process waits, then finds the cache built.
    Disk-full and read-only folders raise store.CacheWriteError; no temporary file is left behind.
    ``ranks`` (from ``distributed_ranks``) makes this process one of a torchrun job's.
    """
    plan = prepare(spec)
    store.refuse_link(plan.folder)  # never write through a link into another cache
    if _is_built(plan):
        return plan.folder
    ranks = ranks or Ranks()
    _ = plan.loaded  # a checkpoint that cannot be loaded is refused before its cache folder is made
    with store.writing(plan.folder):
        if ranks.world == 1:
            with store.build_lock(plan.folder):
                if not _is_built(plan):  # else another process finished it while we waited
                    _start(plan)
                    _build(plan, spec, progress, ranks)
        else:
            _encode(plan, spec, progress, ranks)  # my shards only
            dist.barrier()
            if ranks.rank == 0:
                with store.build_lock(plan.folder):
                    if not _is_built(plan):
                        (plan.folder / store.MANIFEST).unlink(missing_ok=True)
                        _finish(plan, spec, progress)
            dist.barrier()
    return plan.folder


def distributed_ranks(device: str) -> tuple[Ranks, str]:
    """Join torchrun's process group if this process was launched by it; the device this rank uses."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=timedelta(hours=12))  # rank 0 finalizes while others wait
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def _is_built(plan: BuildPlan) -> bool:
    try:
        store.read_manifest(plan.folder, plan.key)
        return True
    except store.CacheError:
        return False


def _start(plan: BuildPlan) -> None:
    (plan.folder / store.MANIFEST).unlink(missing_ok=True)  # never a stale manifest beside new files
    store.remove_orphans(plan.folder)  # we hold the lock: any temporary file is a dead builder's


def _n_shards(plan: BuildPlan) -> int:
    return (len(plan.positions) + SHARD_SIZE - 1) // SHARD_SIZE


def _encode(plan: BuildPlan, spec: PrecomputeSpec, progress: Progress | None, ranks: Ranks) -> None:
    maps = HeadMaps.from_model(plan.loaded.model)
    positions, n_shards = plan.positions, _n_shards(plan)
    mine = [i for i in range(n_shards) if ranks.owns(i)]
    total = sum(len(positions[i * SHARD_SIZE:(i + 1) * SHARD_SIZE]) for i in mine)
    label = f"encoding {spec.dataset}:{spec.split}" + (f" (rank {ranks.rank}/{ranks.world})" if ranks.world > 1 else "")
    bar = steps(total, label, "img")
    done = 0
    for index in mine:
        rows = positions[index * SHARD_SIZE:(index + 1) * SHARD_SIZE]
        shard = shards.shard_path(plan.folder, index)
        if not shards.shard_done(shard, plan.key):
            shards.write_shard(shard, plan.key, plan.loaded, maps, plan.source, rows, spec)
        bar.update(len(rows))
        done += len(rows)
        if progress:
            progress("encode", done, total)
    bar.close()


def _finish(plan: BuildPlan, spec: PrecomputeSpec, progress: Progress | None) -> None:
    maps = HeadMaps.from_model(plan.loaded.model)
    if spec.basis_only:
        finalize.finalize_basis(plan, maps, _n_shards(plan), spec)
    else:
        finalize.finalize(plan, maps, _n_shards(plan), spec, progress)
    if not spec.keep_shards:
        store.remove_tree(plan.folder / "shards")


def _build(plan: BuildPlan, spec: PrecomputeSpec, progress: Progress | None, ranks: Ranks) -> None:
    _encode(plan, spec, progress, ranks)
    _finish(plan, spec, progress)
