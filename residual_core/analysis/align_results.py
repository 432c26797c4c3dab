"""Trained alignments beside their train cache, and the three split caches they are trained on.

A result is ``<tag>.json`` (the report, written last), ``<tag>.npy`` (λ) and ``<tag>_heads.npy`` (λ as a heads × PCs
grid) in the train cache's folder, keyed by that cache's key, so a rebuilt cache never shows a stale result.
``train_and_save`` is the one path that builds the splits, trains and saves: the CLI's ``align``, the Alignment page
and a tour's "Before the talk" all call it.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from residual_core.build import store
from residual_core.analysis.align import METHODS, AlignResult, align
from residual_core.read.cache import Cache
from residual_core.data.untrusted import json_value

def result_tag(method: str, reference_compat: bool = False, identity_start: bool = False) -> str:
    return f"align_{method}{'_compat' if reference_compat else ''}{'_identity' if identity_start else ''}"


def save_result(train_dir: Path, result: AlignResult, tag: str, settings: dict) -> dict:
    """Write λ (``<tag>.npy``, ``<tag>_heads.npy``) and the report (``<tag>.json``, last) beside the train cache."""
    store.atomic_save_npy(train_dir / f"{tag}.npy", result.lambdas)
    if result.head_lambda is not None:
        store.atomic_save_npy(head_lambda_path(train_dir, tag), result.head_lambda)
    report = {"method": result.method, "n_params": result.n_params, "val_acc": result.val_acc,
              "test_acc": result.test_acc, "zeroshot_test_acc": result.zeroshot_test_acc,
              "identity_test_acc": result.identity_test_acc,
              "seconds": result.seconds, "epochs": result.epochs, "best_epoch": result.best_epoch,
              "lambdas": str(train_dir / f"{tag}.npy"), "tag": tag, "settings": settings,
              "cache_key": store.read_manifest(train_dir)["key"], "history": list(result.history)}
    store.atomic_write_text(train_dir / f"{tag}.json", json.dumps(report))
    return report


def saved_results(train_dir: Path) -> list[dict]:
    """Reports of the methods trained on this cache (current cache key only), zero-shot first."""
    key = store.read_manifest(train_dir)["key"]
    out = []
    for path in sorted(Path(train_dir).glob("align_*.json")):
        try:
            report = json_value(path.read_bytes(), str(path), 1 << 24)
        except (OSError, ValueError):
            continue  # a damaged report is not shown; training again rewrites it
        if isinstance(report, dict) and report.get("cache_key") == key and report.get("method") in METHODS:
            out.append(report)
    return sorted(out, key=lambda r: (METHODS.index(r["method"]), r["tag"]))


def head_lambda_path(train_dir: Path, tag: str) -> Path:
    return Path(train_dir) / f"{tag}_heads.npy"


def saved_head_lambdas(train_dir: Path, tag: str) -> np.ndarray | None:
    path = head_lambda_path(train_dir, tag)
    return np.load(path) if path.is_file() else None


def lambda_scales(head_lambda: np.ndarray, n_heads: int, decimals: int = 3) -> tuple:
    """Learned λ as the ablation lab's per-PC scales ((layer, head, pc, λ), …); pruned PCs are switched off."""
    rows = []
    for u, pc in np.ndindex(*head_lambda.shape):
        value = head_lambda[u, pc]
        value = 0.0 if np.isnan(value) else round(float(value), decimals)
        if value != 1.0:
            rows.append((*divmod(int(u), n_heads), int(pc), value))  # head index -> (layer, head), units.py
    return tuple(sorted(rows))


def split_caches(basis_from: str | None = None, progress=None, **common) -> tuple[Path, Cache, Cache, Cache]:
    """Train, val and test caches of one model and dataset; val/test in the train cache's PCA basis.

    ``common`` are PrecomputeSpec fields shared by the splits (model, dataset, limit, cache_dir, …);
    ``basis_from`` puts the train cache, and so all three, in another folder's basis (e.g. ImageNet train's).
    ``progress(stage, done, total)`` as precompute's, its stage prefixed with the split.
    """
    from residual_core.read.cache import load_cache
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    def split_progress(split: str):
        return (lambda stage, done, total: progress(f"{split} · {stage}", done, total)) if progress else None

    train_dir = precompute(PrecomputeSpec(split="train", basis_from=basis_from, **common), split_progress("train"))
    # val and test are expressed in the train cache's basis, so one λ per PC means the same thing everywhere
    val, test = (load_cache(precompute(PrecomputeSpec(split=split, basis_from=str(train_dir), **common),
                                       split_progress(split))) for split in ("val", "test"))
    return train_dir, load_cache(train_dir), val, test


def trained(train_dir: Path | None, method: str) -> dict | None:
    """The saved report of ``method`` (plain settings) on this train cache, or None."""
    if train_dir is None:
        return None
    return next((r for r in saved_results(train_dir) if r["tag"] == result_tag(method)), None)


def train_and_save(method: str, *, epochs: int = 30, align_seed: int = 42, reference_compat: bool = False,
                   identity_start: bool = False, basis_from: str | None = None,
                   build_progress: Callable[[str, int, int], None] | None = None,
                   progress: Callable[[int, int, float], None] | None = None, **common) -> dict:
    """Build (or find) the three splits, train ``method``, save it beside the train cache; the saved report, with
    the images each split holds. ``common``: PrecomputeSpec fields (model, dataset, limit, cache_dir, …)."""
    train_dir, train, val, test = split_caches(basis_from, build_progress, **common)
    result = align(train, val, test, method, epochs=epochs, seed=align_seed, reference_compat=reference_compat,
                   identity_start=identity_start, progress=progress)
    settings = {"model": common.get("model"), "dataset": common.get("dataset"), "limit": common.get("limit"),
                "epochs": epochs, "seed": align_seed, "reference_compat": reference_compat,
                "identity_start": identity_start,
                "n_images": {"train": train.n_images, "val": val.n_images, "test": test.n_images}}
    return save_result(train_dir, result, result_tag(method, reference_compat, identity_start), settings)
