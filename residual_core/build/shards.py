"""Encoding side of a build: one shard of images → its per-image arrays and its moment statistics.

Each shard folder appears by an atomic rename, so present == complete; its info.json records its files'
digests, so a damaged shard is re-encoded rather than merged. Shards are independent of one another: any
process (a torchrun rank, a second run after a crash) can write any shard, and the moments merge exactly.
Images are decoded by a torch DataLoader, with ``workers`` processes where asked (the same batches either
way), and an image that cannot be read is skipped and named, not fatal.
"""

import errno
import json
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import ImageOps
from torch.utils.data import DataLoader, Dataset

from residual_core.build import store
from residual_core.data.sources import ImageReadError, ImageSource
from residual_core.engine.decompose import HeadMaps, decompose_images
from residual_core.engine.models import LoadedClip
from residual_core.engine.pca import MomentStats, raw_features
from residual_core.build.plan import PrecomputeSpec

FILES = ("z", "mlps", "embed", "output", "ln", "thumbs", "metrics", "rows", "stats_mean", "stats_scatter")
PER_IMAGE = ("z", "mlps", "embed", "output", "ln", "thumbs")


def shard_path(folder: Path, index: int) -> Path:
    return folder / "shards" / f"{index:05d}"


def shard_done(shard: Path, key: str) -> bool:
    """A shard counts only if it is of this key and every file matches its recorded digest."""
    try:
        info = json.loads((shard / "info.json").read_text())
        if not isinstance(info, dict) or info.get("key") != key:
            raise store.CacheError("shard of other inputs")
        for name, entry in store.checked_files(shard / "info.json", info.get("files")).items():
            store.verify_file(shard / name, entry["size"], entry[store.DIGEST])
        return True
    except (OSError, ValueError, store.CacheError):
        store.remove_tree(shard)
        return False


class _Images(Dataset):
    """Rows of a split as (preprocessed image [3, H, W], thumbnail [t, t, 3], row) or (None, reason, row)."""

    def __init__(self, source: ImageSource, rows: np.ndarray, preprocess, thumb_size: int):
        self.source, self.rows, self.preprocess, self.thumb_size = source, rows, preprocess, thumb_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = int(self.rows[index])
        try:
            image = self.source.image(row)
        except ImageReadError as err:
            return None, {"id": self.source.ids[row], "reason": str(err)}, row
        thumb = np.asarray(ImageOps.fit(image, (self.thumb_size, self.thumb_size)), dtype=np.uint8)
        return self.preprocess(image), thumb, row


def _collate(items: list) -> tuple[torch.Tensor | None, np.ndarray | None, list[int], list[dict]]:
    good = [item for item in items if item[0] is not None]
    skipped = [item[1] for item in items if item[0] is None]
    if not good:
        return None, None, [], skipped
    return (torch.stack([g[0] for g in good]), np.stack([g[1] for g in good]), [g[2] for g in good], skipped)


def batches(source: ImageSource, rows: np.ndarray, loaded: LoadedClip, spec: PrecomputeSpec) -> DataLoader:
    """Batches of (images [b, 3, H, W], thumbs [b, t, t, 3], kept rows, skipped) in row order."""
    dataset = _Images(source, rows, loaded.preprocess, spec.thumb_size)
    return DataLoader(dataset, batch_size=spec.batch_size, shuffle=False, num_workers=spec.workers,
                      collate_fn=_collate, persistent_workers=False)


@torch.no_grad()
def write_shard(shard: Path, key: str, loaded: LoadedClip, maps: HeadMaps, source: ImageSource,
                rows: np.ndarray, spec: PrecomputeSpec) -> None:
    """Encode ``rows`` into ``shard``; with ``spec.basis_only`` keep only the moment statistics."""
    parts: dict[str, list] = {k: [] for k in (*PER_IMAGE, "metrics")}
    stats = MomentStats(0, torch.zeros(0), torch.zeros(0))
    max_rel, kept_rows, skipped = 0.0, [], []
    for images, thumbs, kept, bad in batches(source, rows, loaded, spec):
        kept_rows += kept
        skipped += bad
        if images is None:
            continue
        decomp = decompose_images(loaded.model, images.to(spec.device), maps)
        max_rel = max(max_rel, decomp.errors()[1])
        stats = stats.merge(MomentStats.from_batch(raw_features(decomp.z, decomp.mean, decomp.std)).to_cpu())
        if spec.basis_only:
            continue
        parts["z"].append(decomp.z.cpu())
        parts["mlps"].append(decomp.mlps.cpu())
        parts["embed"].append(decomp.embed.cpu())
        parts["output"].append(decomp.output.cpu())
        parts["ln"].append(torch.stack([decomp.mean, decomp.std], 1).cpu())
        parts["thumbs"].append(thumbs)
        parts["metrics"].append(_unit_metric_sums(decomp.stacked(), decomp.output).cpu()[None])
    _commit(shard, key, parts, stats, max_rel, kept_rows, skipped)


def _commit(shard: Path, key: str, parts: dict, stats: MomentStats, max_rel: float, kept_rows: list[int],
            skipped: list[dict]) -> None:
    tmp = shard.with_name(f".tmp-{shard.name}-{os.getpid()}-{threading.get_ident()}")
    store.remove_tree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, chunks in parts.items():
            if chunks:
                if name == "metrics":
                    array = torch.cat(chunks).sum(0).numpy()  # [n_units, 2] sums over the shard's images
                else:
                    array = np.concatenate(chunks) if name == "thumbs" else torch.cat(chunks).numpy()
                store.atomic_save_npy(tmp / f"{name}.npy", array)
        if stats.count:
            store.atomic_save_npy(tmp / "stats_mean.npy", stats.mean.numpy())
            store.atomic_save_npy(tmp / "stats_scatter.npy", stats.scatter.numpy())
        store.atomic_save_npy(tmp / "rows.npy", np.asarray(kept_rows, dtype=np.int64))
        names = [f"{n}.npy" for n in FILES if (tmp / f"{n}.npy").exists()]
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


def shard_infos(folder: Path, n_shards: int) -> list[dict]:
    return [json.loads((shard_path(folder, i) / "info.json").read_text()) for i in range(n_shards)]


def merged_stats(folder: Path, infos: list[dict]) -> MomentStats:
    """The shards' moments merged in shard order (the same order, so the same numbers, for any world size)."""
    stats = MomentStats(0, torch.zeros(0), torch.zeros(0))
    for index, info in enumerate(infos):
        if info["count"]:
            shard = shard_path(folder, index)
            stats = stats.merge(MomentStats(info["count"], torch.from_numpy(np.load(shard / "stats_mean.npy")),
                                            torch.from_numpy(np.load(shard / "stats_scatter.npy"))))
    return stats
